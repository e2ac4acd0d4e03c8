#!/usr/bin/env bash
# Cluster throughput on the tiny profile: video seconds per wall second with 1 and 2 worker
# processes behind one web process (cluster_bench). Installs nats-server (Debian) when missing.
#
#   ./scripts/bench-cluster.sh [--jobs 8 --seconds 1.0 --steps 4 --workers 1,2]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nats-server
fi
export PATH="$PATH:/usr/sbin"
# The dev profile optimises every dependency (candle, gemm, OpenH264) and shares the test build.
cargo build --quiet -p server --bin server --bin cluster_bench
target/debug/cluster_bench "$@"
