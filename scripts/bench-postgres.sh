#!/usr/bin/env bash
# idemflow vs PostgreSQL (docs/BENCHMARKS.md): starts a throw-away PostgreSQL
# 15+ cluster on 127.0.0.1 (a free port, a temp directory), runs
# benches/postgres (the same transition on both, durable and relaxed, 1 and 8
# clients) and tears the cluster down, whatever happens.
#
#   scripts/bench-postgres.sh
#
# Environment (all optional): IDEMFLOW_PG_SECS (measured seconds per run,
# default 5), IDEMFLOW_PG_RUNS (default 3), IDEMFLOW_PG_CLIENTS (default
# "1,8"), IDEMFLOW_BENCH_OUT (JSON lines, default
# target/bench-results/postgres.jsonl). Installs Debian's postgresql package
# when no PostgreSQL server binaries are found. Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

find_pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

PGBIN=$(find_pg_bin || true)
if [ -z "$PGBIN" ]; then
  echo "installing PostgreSQL (Debian package postgresql)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(find_pg_bin)
fi
MAJOR=$("$PGBIN/postgres" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
if [ "$MAJOR" -lt 15 ]; then
  echo "PostgreSQL $MAJOR found in $PGBIN; 15 or later is needed" >&2
  exit 1
fi

# initdb refuses to run as root: run the cluster as an unprivileged user.
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
  PGUSER_OS=postgres
  if ! id "$PGUSER_OS" >/dev/null 2>&1; then
    PGUSER_OS=idemflow-bench
    id "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PGUSER_OS"
  fi
  RUN_AS=(runuser -u "$PGUSER_OS" --)
fi

WORK=$(mktemp -d /tmp/idemflow-pg.XXXXXX)
chmod 755 "$WORK"
[ "${#RUN_AS[@]}" -gt 0 ] && chown "$PGUSER_OS" "$WORK"
DATA="$WORK/data"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

teardown() {
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap teardown EXIT

"${RUN_AS[@]}" "$PGBIN/initdb" -D "$DATA" -U bench --auth=trust -E UTF8 --no-locale >/dev/null
# Defaults otherwise (fsync on, synchronous_commit on, shared_buffers 128MB):
# the benchmark sets synchronous_commit per session.
"${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$WORK -c max_connections=40" \
  start >/dev/null
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT, data in $DATA" >&2

# The bench package shares the workspace's target directory (and so its
# already-built dependencies); its own lock file pins the rest.
cargo build --release --manifest-path benches/postgres/Cargo.toml --target-dir "$ROOT/target" >&2
# The idemflow databases go to the same disk as the PostgreSQL cluster.
IDEMFLOW_PG="host=127.0.0.1 port=$PORT user=bench dbname=postgres" \
IDEMFLOW_BENCH_DIR="${IDEMFLOW_BENCH_DIR:-$WORK}" \
  "$ROOT/target/release/bench_postgres"
