#!/usr/bin/env bash
# Installs the pinned schemathesis into a virtual environment (default
# target/schemathesis-venv, so `cargo clean` removes it) and prints the path of
# its `st` command. Reuses the environment when the pinned version is there.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}

if [ -x "$VENV/bin/st" ] && "$VENV/bin/python" -m pip show schemathesis 2>/dev/null \
  | grep -qx "Version: $VERSION"; then
  echo "$VENV/bin/st"
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq python3-venv >/dev/null
fi
rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
echo "$VENV/bin/st"
