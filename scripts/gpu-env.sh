# Sourced by the scripts that run on a lent GPU machine (gpu-check.sh, gpu-fullsize.sh): unpacks
# the CUDA `hallo2` CLI and `stage_bench` from .gpu/ (scripts/gpu-build.sh) to /tmp/gpu/, points
# the loader at the CUDA libraries of the machine's PyTorch wheels (libcuda comes from its
# driver), and makes $OUT (default out/gpu).
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT" /tmp/gpu
for bin in hallo2 stage_bench; do
  if [ -f ".gpu/$bin.xz" ]; then
    xz -dc ".gpu/$bin.xz" > "/tmp/gpu/$bin" && chmod +x "/tmp/gpu/$bin"
  fi
done
NV=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
if [ -n "$NV" ]; then
  LD_LIBRARY_PATH=$(find "$NV" -name 'lib*.so*' -printf '%h\n' | sort -u | tr '\n' ':')${LD_LIBRARY_PATH:-}
  export LD_LIBRARY_PATH
fi
