#!/usr/bin/env bash
# Runs schemathesis (pinned, installed by scripts/install-schemathesis.sh)
# against the HTTP example: builds and starts it on a free port with a fresh
# temporary database, waits for `listening on`, runs a bounded number of
# generated requests per operation, and always stops the server.
#
# Checks: no 5xx, every response conforms to /openapi.json (status code,
# content type, headers, body schema), and requests that violate the document
# (bad headers, bodies, names) are refused with a 4xx.
#
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 40 per operation),
# SCHEMATHESIS_SEED (default 1, so a failure reproduces), CARGO_PROFILE_FLAG
# (e.g. --release; default: the dev profile the tests build).
set -euo pipefail
cd "$(dirname "$0")/.."

ST=$(bash scripts/install-schemathesis.sh)
cargo build --quiet --example http_service ${CARGO_PROFILE_FLAG:-}
PROFILE_DIR=${CARGO_TARGET_DIR:-target}/debug
[ "${CARGO_PROFILE_FLAG:-}" = "--release" ] && PROFILE_DIR=${CARGO_TARGET_DIR:-target}/release

mkdir -p target
WORK=$(realpath "$(mktemp -d target/schemathesis-run.XXXXXX)")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

IDEMFLOW_HTTP_TOKENS="st-token=schemathesis" \
  "$PROFILE_DIR/examples/http_service" 127.0.0.1:0 "$WORK/db" >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!

BASE=
for _ in $(seq 1 300); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "the example exited before listening:" >&2
    cat "$WORK/stderr" >&2
    exit 1
  fi
  BASE=$(sed -n 's/^listening on //p' "$WORK/stdout" | head -n 1)
  [ -n "$BASE" ] && break
  sleep 0.1
done
if [ -z "$BASE" ]; then
  echo "the example did not print 'listening on' within 30 s" >&2
  exit 1
fi
echo "schemathesis $("$ST" --version 2>/dev/null | tail -n 1) against $BASE"

# `timeout` is the watchdog: the run is bounded by --max-examples, this only
# turns a hang into a failure. It runs in $WORK, where schemathesis leaves its
# cache (.schemathesis/).
ST=$(realpath "$ST")
cd "$WORK"
timeout 300 "$ST" run "$BASE/openapi.json" \
  --header "Authorization: Bearer st-token" \
  --checks negative_data_rejection,not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --workers 2 \
  --request-timeout 30 \
  --no-color \
  --generation-database none \
  "$@"
