#!/usr/bin/env bash
# Starts hallo2-studio on a fresh machine: installs what is missing (wasm target, cargo-leptos,
# wasm-bindgen-cli, wasm-opt), builds the site and the server, and serves on 127.0.0.1:8501.
# The page is up at once; the model loads in the background and every stage shows in the page.
#
#   ./scripts/run.sh                                   # tiny official-format profile (cargo leptos serve)
#   ./scripts/run.sh --release                         # optimised build of our crates and wasm-opt'd site
#   ./scripts/run.sh --watch                           # cargo leptos watch (rebuilds on edits)
#   HALLO2_CONFIG=configs/server.toml ./scripts/run.sh # the real model from the Hugging Face Hub
#   LEPTOS_SITE_ADDR=0.0.0.0:8501 ./scripts/run.sh     # bind all interfaces (explicit choice)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-web.sh
# The tiny profile runs on any CPU in seconds; the real model wants a GPU (configs/server.toml).
export HALLO2_CONFIG="${HALLO2_CONFIG:-configs/tiny.toml}"
# The dev profile already optimises every dependency (candle, gemm, OpenH264), and shares its
# build with ./scripts/test.sh; --release optimises our crates too.
case "${1:-}" in
  --watch) exec cargo leptos watch ;;
  --release) exec cargo leptos serve --release ;;
  *) exec cargo leptos serve ;;
esac
