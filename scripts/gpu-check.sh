#!/usr/bin/env bash
# The first GPU run, on a lent GPU machine (the `device` tool), from the repository root: the
# `hallo2` CLI built here with `--features cuda` travels xz-compressed in .gpu/ (see
# scripts/gpu-build.sh); CUDA's libraries come from the machine's PyTorch wheels, libcuda from
# its driver. Writes what it made to $OUT (default out/gpu):
#   1. `hallo2 frames` on the tiny weights and the official fixture's prepared inputs, on cuda in
#      f32, f16 and bf16 (each a second time, warm: the first run JIT-compiles the PTX) →
#      frames-<dtype>.safetensors, compared here against the official final video
#      (scripts/gpu-compare.py);
#   2. `hallo2 generate` on cuda (f32): the real portrait and speech through the face path, the
#      audio path, the pipeline and the MP4 → generate.mp4;
#   3. peak GPU memory seen by nvidia-smi while 1–2 ran;
#   4. scripts/gpu-fullsize.sh (FULLSIZE=0 skips it): full-size random weights, one 512² clip
#      stage by stage in f16 and bf16 (ms per denoising step beside the official 269.8 ms, the
#      clip beside 11.34 s, peak GPU memory beside 7.73 GiB), then 8-step generations.
# Sized for one device call: about 7 minutes on an H200 (timeout_s 600).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > /tmp/gpu/mem.csv &
SAMPLER=$!

W=model/tests/fixtures/hallo2-tiny/pretrained_models
CASES=model/tests/fixtures/hallo2-tiny/cases
run() {
  echo "== $*"
  /usr/bin/time -f "wall %e s, max RSS %M KB" /tmp/gpu/hallo2 "$@" 2>&1 | grep -v '^\s*$' | tail -6
}
for dtype in f32 f16 bf16; do
  for pass in cold warm; do
    run frames --weights "$W" --config configs/inference/long_tiny.yaml \
      --inputs "$CASES/inputs.safetensors" --audio-features "$CASES/wav2vec.safetensors" \
      --device cuda --dtype "$dtype" --cache-dir /tmp/gpu/cache \
      --out "$OUT/frames-$dtype.safetensors"
  done
done
run generate --weights "$W" --config configs/inference/long_tiny.yaml \
  --image model/tests/fixtures/face/astronaut.png \
  --audio model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav \
  --device cuda --dtype f32 --seed 42 --steps 4 --cache-dir /tmp/gpu/cache --out "$OUT/generate.mp4"
kill "$SAMPLER" 2>/dev/null
echo "peak GPU memory used (all processes): $(sort -n /tmp/gpu/mem.csv | tail -1) MiB"
if [ "${FULLSIZE:-1}" = 1 ]; then
  DTYPES="${DTYPES:-f16 bf16}" bash scripts/gpu-fullsize.sh
fi
ls -la "$OUT"
