#!/usr/bin/env bash
# Builds the `hallo2` CLI with CUDA here, on a machine without a GPU (../shared/GPU.md's recipe):
# CUDA 13.0 from PyPI wheels into ~/.cache/cuda13-venv, unversioned .so links and a stub libcuda
# for the link (the driver's real one is found on the GPU machine), kernels for sm_90 (H100/H200;
# CUDA_COMPUTE_CAP overrides). The stripped binary goes xz-compressed to .gpu/hallo2.xz, which
# scripts/gpu-check.sh runs on the lent GPU machine (`device` tool, carry [".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$HOME/.cache/cuda13-venv"
if [ ! -x "$VENV/bin/nvcc" ] && ! ls "$VENV"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
fi
CR=$(echo "$VENV"/lib/python3*/site-packages/nvidia/cu13)
(
  cd "$CR/lib"
  for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done
  ln -sf libcurand.so.10 libcurand.so
  if [ ! -f stubs/libcuda.so ]; then
    cargo fetch --manifest-path "$OLDPWD/Cargo.toml" >/dev/null
    mkdir -p stubs
    grep -ohP 'pub unsafe fn \Kcu\w+' "$HOME"/.cargo/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs \
      | sort -u | awk '{print "int " $1 "(void){return 999;}"}' > stubs/cuda_stub.c
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o stubs/libcuda.so stubs/cuda_stub.c
  fi
)
export CUDA_ROOT="$CR" CUDA_PATH="$CR" CUDA_HOME="$CR" PATH="$CR/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export LIBRARY_PATH="$CR/lib:$CR/lib/stubs:${LIBRARY_PATH:-}"
cargo build -p server --bin hallo2 --features cuda
mkdir -p .gpu
strip -o .gpu/hallo2 target/debug/hallo2
xz -T2 -6 -c .gpu/hallo2 > .gpu/hallo2.xz && rm .gpu/hallo2
ls -la .gpu/hallo2.xz
