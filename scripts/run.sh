#!/usr/bin/env bash
# Starts hallo2-studio on a fresh machine: installs what is missing (wasm target, cargo-leptos,
# wasm-bindgen-cli, wasm-opt), builds the site and the server, and serves on 127.0.0.1:8501.
# The page is up at once; the model loads in the background and every stage shows in the page.
#
#   ./scripts/run.sh                                   # release build, tiny official-format profile
#   ./scripts/run.sh --watch                           # cargo leptos watch (rebuilds on edits)
#   HALLO2_CONFIG=configs/server.toml ./scripts/run.sh # the real model from the Hugging Face Hub
#   LEPTOS_SITE_ADDR=0.0.0.0:8501 ./scripts/run.sh     # bind all interfaces (explicit choice)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-web.sh
# The tiny profile runs on any CPU in seconds; the real model wants a GPU (configs/server.toml).
export HALLO2_CONFIG="${HALLO2_CONFIG:-configs/tiny.toml}"
if [ "${1:-}" = "--watch" ]; then
  exec cargo leptos watch
fi
exec cargo leptos serve --release
