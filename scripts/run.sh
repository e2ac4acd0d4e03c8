#!/usr/bin/env bash
# Starts hallo2-studio on a fresh machine: installs what is missing (wasm target, cargo-leptos,
# wasm-bindgen-cli, wasm-opt), builds the site and the server, and serves on 127.0.0.1:8501.
# The page is up at once; the model loads in the background and every stage shows in the page.
#
#   ./scripts/run.sh                                   # tiny official-format profile (cargo leptos serve)
#   ./scripts/run.sh --gpu                             # the real model on an NVIDIA GPU (CUDA build)
#   ./scripts/run.sh --release                         # optimised build of our crates and wasm-opt'd site
#   ./scripts/run.sh --watch                           # cargo leptos watch (rebuilds on edits)
#   HALLO2_CONFIG=configs/server.toml ./scripts/run.sh # the real model from the Hugging Face Hub
#   LEPTOS_SITE_ADDR=0.0.0.0:8501 ./scripts/run.sh     # bind all interfaces (explicit choice)
#
# --gpu (combines with --release or --watch) builds the server with CUDA (scripts/cuda-env.sh:
# the system toolkit, else CUDA 13.0 from PyPI wheels; HALLO2_CUDNN=1 adds cuDNN) and starts
# configs/server.toml (or HALLO2_CONFIG) with device = cuda (HALLO2_DEVICE overrides, e.g.
# cuda:1): a GPU that does not open fails the load with the reason, shown in the page.
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=0
mode=serve
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --release) mode=release ;;
    --watch) mode=watch ;;
    *) echo "unknown option $arg (use --gpu, --release, --watch)" >&2; exit 2 ;;
  esac
done
source scripts/setup-web.sh
features=()
if [ "$gpu" = 1 ]; then
  source scripts/cuda-env.sh
  export HALLO2_CONFIG="${HALLO2_CONFIG:-configs/server.toml}"
  export HALLO2_DEVICE="${HALLO2_DEVICE:-cuda}"
  features=(--bin-features "$CUDA_FEATURES")
  driver=0
  if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1' \
    || ls /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib64/libcuda.so.1 >/dev/null 2>&1; then
    driver=1
  fi
  if [ "$driver" = 0 ] && [ -n "$CUDA_STUB_RUNTIME" ]; then
    echo "No NVIDIA driver here (no libcuda.so.1): the CUDA build starts with a stub driver," \
      "and the model load fails saying so. ./scripts/run.sh runs on the CPU." >&2
    export LD_LIBRARY_PATH="$CUDA_STUB_RUNTIME:$LD_LIBRARY_PATH"
  fi
fi
# The tiny profile runs on any CPU in seconds; the real model wants a GPU (configs/server.toml).
export HALLO2_CONFIG="${HALLO2_CONFIG:-configs/tiny.toml}"
# The dev profile already optimises every dependency (candle, gemm, OpenH264), and shares its
# build with ./scripts/test.sh; --release optimises our crates too.
case "$mode" in
  watch) exec cargo leptos watch "${features[@]}" ;;
  release) exec cargo leptos serve --release "${features[@]}" ;;
  *) exec cargo leptos serve "${features[@]}" ;;
esac
