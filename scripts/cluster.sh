#!/usr/bin/env bash
# A local cluster on the tiny profile: the web node on 127.0.0.1:8501 and two workers
# (configs/cluster/*.toml), all on the NATS server at HALLO2_NATS (default
# nats://127.0.0.1:4222; start one with `nats-server -js`). Ctrl-C stops the three.
#
#   nats-server -js &        # Debian: apt-get install nats-server
#   ./scripts/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-web.sh
cargo leptos build
export LEPTOS_SITE_ROOT=target/site LEPTOS_OUTPUT_NAME=hallo2-studio
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
for node in worker-1 worker-2 web; do
  target/debug/server --config "configs/cluster/$node.toml" &
  pids+=($!)
done
echo "cluster: web node on http://127.0.0.1:8501, workers on :8502 and :8503 (health, metrics)"
wait -n "${pids[@]}"
