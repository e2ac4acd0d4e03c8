#!/usr/bin/env bash
# Builds the `hallo2` CLI and `stage_bench` with CUDA here, on a machine without a GPU (scripts/cuda-env.sh: CUDA
# 13.0 from PyPI wheels and a stub libcuda for the link; the driver's real one is found on the GPU
# machine), kernels for sm_90 (H100/H200; CUDA_COMPUTE_CAP overrides). The stripped binary goes
# xz-compressed to .gpu/hallo2.xz, which scripts/gpu-check.sh runs on the lent GPU machine
# (`device` tool, carry [".gpu"]). The studio itself: ./scripts/run.sh --gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-env.sh
cargo build -p server --bin hallo2 -p model --bin stage_bench \
  --features "server/$CUDA_FEATURES,model/$CUDA_FEATURES"
mkdir -p .gpu
for bin in hallo2 stage_bench; do
  strip -o ".gpu/$bin" "target/debug/$bin"
  xz -T2 -6 -c ".gpu/$bin" > ".gpu/$bin.xz" && rm ".gpu/$bin"
done
ls -la .gpu/*.xz
