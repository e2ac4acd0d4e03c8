#!/usr/bin/env bash
# Starts hallo2-studio on a fresh machine: builds the server and runs it on 127.0.0.1:8501.
# The port is bound at once and the model loads in the background; every load stage streams on
# /api/events (SSE) and /health/ready says when it is ready. The Leptos pages arrive with the
# next issues; today the server answers the API (see README "Studio server").
#
#   ./scripts/run.sh                                   # tiny official-format profile (CPU, seconds)
#   ./scripts/run.sh --config configs/server.toml      # the real model from the Hugging Face Hub
#   LEPTOS_SITE_ADDR=0.0.0.0:8501 ./scripts/run.sh     # bind all interfaces (explicit choice)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p server --bin server
if [ "$#" -eq 0 ] && [ -z "${HALLO2_CONFIG:-}" ]; then
  set -- --config configs/tiny.toml
fi
exec target/release/server "$@"
