#!/usr/bin/env bash
# A throw-away PostgreSQL cluster on 127.0.0.1, for tests and benchmarks.
#
#   scripts/pg-cluster.sh start        # prints the cluster's directory (its handle)
#   scripts/pg-cluster.sh url DIR      # postgres://idemflow@127.0.0.1:PORT/postgres
#   scripts/pg-cluster.sh restart DIR  # fast restart (the fault tests use it)
#   scripts/pg-cluster.sh stop DIR     # stops it and deletes DIR
#
# `start` finds PostgreSQL 15+ server binaries (installing Debian's
# `postgresql` package when there are none), creates a cluster in a new
# temp directory with trust authentication for the superuser `idemflow`,
# and starts it on a free port of 127.0.0.1 only. initdb refuses to run as
# root: as root, the cluster runs as the unprivileged user `postgres` (or
# `idemflow-pg`, created if needed). Settings are PostgreSQL's defaults
# (fsync on, synchronous_commit on) except max_connections. Callers stop it
# with `stop` from a trap, so it never outlives them.
set -euo pipefail

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

run_as_args() {
  # The user the cluster runs as, when we are root.
  if [ "$(id -u)" -eq 0 ]; then
    local user=postgres
    if ! id "$user" >/dev/null 2>&1; then
      user=idemflow-pg
      id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    fi
    echo "runuser -u $user --"
  fi
}

start() {
  local pgbin
  pgbin=$(find_pg_bin || true)
  if [ -z "$pgbin" ]; then
    echo "installing PostgreSQL (Debian package postgresql)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >/dev/null
    pgbin=$(find_pg_bin)
  fi
  local major
  major=$("$pgbin/postgres" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
  if [ "$major" -lt 15 ]; then
    echo "PostgreSQL $major found in $pgbin; 15 or later is needed" >&2
    exit 1
  fi
  local run_as work port
  run_as=$(run_as_args)
  work=$(mktemp -d /tmp/idemflow-pg.XXXXXX)
  chmod 755 "$work"
  if [ -n "$run_as" ]; then
    chown "$(echo "$run_as" | awk '{print $3}')" "$work"
  fi
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  {
    echo "PGBIN=$pgbin"
    echo "PORT=$port"
    echo "RUN_AS='$run_as'"
  } >"$work/cluster.env"
  $run_as "$pgbin/initdb" -D "$work/data" -U idemflow --auth=trust -E UTF8 --no-locale >/dev/null
  $run_as "$pgbin/pg_ctl" -D "$work/data" -l "$work/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$work -c max_connections=300" \
    start >/dev/null
  echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $work/data" >&2
  echo "$work"
}

load() {
  local work=${1:?usage: pg-cluster.sh COMMAND DIR}
  [ -f "$work/cluster.env" ] || { echo "$work is not a cluster started by pg-cluster.sh" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$work/cluster.env"
  WORK=$work
}

case "${1:-}" in
  start) start ;;
  url)
    load "${2:-}"
    echo "postgres://idemflow@127.0.0.1:$PORT/postgres"
    ;;
  restart)
    load "${2:-}"
    $RUN_AS "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -m "${3:-fast}" -w -t 60 restart >/dev/null
    ;;
  stop)
    load "${2:-}"
    $RUN_AS "$PGBIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
    ;;
  *)
    echo "usage: $0 start | url DIR | restart DIR [fast|immediate] | stop DIR" >&2
    exit 2
    ;;
esac
