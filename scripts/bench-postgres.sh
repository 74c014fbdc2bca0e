#!/usr/bin/env bash
# idemflow vs PostgreSQL (docs/BENCHMARKS.md): starts a throw-away PostgreSQL
# 15+ cluster on 127.0.0.1 with scripts/pg-cluster.sh, runs benches/postgres
# (the same transition on sled, on idemflow's PostgreSQL backend in 1 and 2
# engine processes, and as the textbook PostgreSQL recipe; durable and
# relaxed; 1 and 8 clients) and tears the cluster down, whatever happens.
#
#   scripts/bench-postgres.sh
#
# Environment (all optional): IDEMFLOW_PG_SECS (measured seconds per run,
# default 5), IDEMFLOW_PG_RUNS (default 3), IDEMFLOW_PG_CLIENTS (default
# "1,8"), IDEMFLOW_PG_SYSTEMS / IDEMFLOW_PG_MODES (subsets, see
# benches/postgres/src/main.rs), IDEMFLOW_BENCH_OUT (JSON lines, default
# target/bench-results/postgres.jsonl). Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CLUSTER=$(scripts/pg-cluster.sh start)
trap 'scripts/pg-cluster.sh stop "$CLUSTER"' EXIT
# shellcheck disable=SC1091
PORT=$(. "$CLUSTER/cluster.env"; echo "$PORT")

# The bench package shares the workspace's target directory (and so its
# already-built dependencies); its own lock file pins the rest.
cargo build --release --manifest-path benches/postgres/Cargo.toml --target-dir "$ROOT/target" >&2
# The idemflow (sled) databases go to the same disk as the PostgreSQL cluster.
IDEMFLOW_PG="host=127.0.0.1 port=$PORT user=idemflow dbname=postgres" \
IDEMFLOW_BENCH_DIR="${IDEMFLOW_BENCH_DIR:-$CLUSTER}" \
  "$ROOT/target/release/bench_postgres"
