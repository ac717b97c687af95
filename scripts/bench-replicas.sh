#!/usr/bin/env bash
# testbot on PostgreSQL with one and two servers, and on SQLite, in one
# run (benches/replicas.rs): starts a private PostgreSQL cluster, runs the
# benchmark, stops the cluster. REPLICAS_QUICK=1 makes it smaller.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
trap postgres_stop EXIT
# Durable, as a real database would be.
PG_FSYNC=on postgres_start
cargo bench --bench replicas
