# Sourced by ./scripts/run.sh --gpu and ./scripts/gpu-build.sh: a CUDA toolkit to build candle's
# `cuda` feature with, from what a Debian machine can install.
#
# - A system toolkit (CUDA_ROOT set, or nvcc on PATH) is used as it is.
# - Otherwise CUDA 13.0 from PyPI wheels into ~/.cache/cuda13-venv (../shared/GPU.md's recipe),
#   with the unversioned .so links the link needs and a stub libcuda for the link (the NVIDIA
#   driver brings the real one).
# - HALLO2_CUDNN=1 adds cuDNN (the `cudnn` feature). It is off by default: candle 0.11 plans every
#   cuDNN convolution again on each call, which measured 6× slower than its im2col + cuBLAS path
#   on the H100 for Hallo2's 3×3 convolutions (GPU.md).
#
# Exports CUDA_ROOT/CUDA_PATH/CUDA_HOME, PATH and LIBRARY_PATH (build), LD_LIBRARY_PATH (run),
# CUDA_COMPUTE_CAP (this machine's GPU, else 90 for H100/H200), CUDA_FEATURES (cargo features),
# and CUDA_STUB_RUNTIME: a folder with the stub as libcuda.so.1, for starting a CUDA build on a
# machine without the driver (every CUDA call then fails, and the load says why).

cuda_venv="$HOME/.cache/cuda13-venv"
CUDA_FEATURES=cuda
if [ -z "${CUDA_ROOT:-}" ] && command -v nvcc >/dev/null 2>&1; then
  CUDA_ROOT=$(dirname "$(dirname "$(command -v nvcc)")")
fi
if [ -z "${CUDA_ROOT:-}" ]; then
  if ! ls "$cuda_venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
    echo "Installing CUDA 13.0 from PyPI wheels into $cuda_venv (about 1.2 GB)…" >&2
    python3 -m venv "$cuda_venv"
    # nvidia-nvvm is pinned: nvcc 13.0's unbounded dependency would bring a cicc whose PTX the
    # 13.0 ptxas and the 580 driver refuse.
    "$cuda_venv/bin/pip" install --quiet nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
      nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
      nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
  fi
  CUDA_ROOT=$(echo "$cuda_venv"/lib/python3*/site-packages/nvidia/cu13)
  (
    cd "$CUDA_ROOT/lib"
    for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done
    ln -sf libcurand.so.10 libcurand.so
    if [ ! -f stubs/libcuda.so ]; then
      # Every cu* function cudarc declares, each failing: enough for the linker.
      cargo fetch --manifest-path "$OLDPWD/Cargo.toml" >/dev/null
      mkdir -p stubs runtime-stub
      grep -ohP 'pub unsafe fn \Kcu\w+' "$HOME"/.cargo/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs \
        | sort -u | awk '{print "int " $1 "(void){return 999;}"}' > stubs/cuda_stub.c
      gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o stubs/libcuda.so stubs/cuda_stub.c
    fi
    mkdir -p runtime-stub && ln -sf ../stubs/libcuda.so runtime-stub/libcuda.so.1
  )
  LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
  LD_LIBRARY_PATH="$CUDA_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  CUDA_STUB_RUNTIME="$CUDA_ROOT/lib/runtime-stub"
  if [ "${HALLO2_CUDNN:-0}" = 1 ]; then
    cudnn_lib="$CUDA_ROOT/../cudnn/lib"
    if [ ! -f "$cudnn_lib/libcudnn.so.9" ]; then
      "$cuda_venv/bin/pip" install --quiet --no-deps nvidia-cudnn-cu13==9.19.0.56
    fi
    ln -sf ../../cudnn/lib/libcudnn.so.9 "$CUDA_ROOT/lib/libcudnn.so"
    LD_LIBRARY_PATH="$(cd "$cudnn_lib" && pwd):$LD_LIBRARY_PATH"
  fi
else
  CUDA_STUB_RUNTIME=""
  for lib in lib64 lib; do
    if [ -d "$CUDA_ROOT/$lib" ]; then
      LD_LIBRARY_PATH="$CUDA_ROOT/$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
  done
fi
if [ "${HALLO2_CUDNN:-0}" = 1 ]; then
  CUDA_FEATURES=cudnn
fi
if [ -z "${CUDA_COMPUTE_CAP:-}" ] && command -v nvidia-smi >/dev/null 2>&1; then
  CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d . || true)
fi
CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
PATH="$CUDA_ROOT/bin:$PATH"
CUDA_PATH="$CUDA_ROOT"
CUDA_HOME="$CUDA_ROOT"
export CUDA_ROOT CUDA_PATH CUDA_HOME PATH LIBRARY_PATH LD_LIBRARY_PATH CUDA_COMPUTE_CAP \
  CUDA_FEATURES CUDA_STUB_RUNTIME
unset cuda_venv cudnn_lib lib
