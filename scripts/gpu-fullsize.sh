#!/usr/bin/env bash
# Full model size on a lent GPU machine (`device` tool, carry [".gpu"]): full-size RANDOM weights
# in the official formats are written there (model/tools/make_full_size_weights.py and
# make_full_size_insightface.py: numpy and onnx, which its Python has), then the CUDA `hallo2`
# CLI (scripts/gpu-build.sh) generates at the real profile (configs/inference/long.yaml, 512²,
# 16-frame clips, CFG) in DTYPES (default f16) with STEPS steps, from the real portrait and
# .gpu/speech.wav, without vocal separation. Prints each clip's wall time and the peak GPU
# memory; the MP4s go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-8}"
source scripts/gpu-env.sh
T=$(date +%s)
python3 model/tools/make_full_size_weights.py /tmp/full > /dev/null &
python3 model/tools/make_full_size_insightface.py /tmp/full > /dev/null &
wait
echo "full-size random weights written in $(( $(date +%s) - T )) s: $(du -sh /tmp/full | cut -f1)"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > /tmp/gpu/mem.csv &
SAMPLER=$!
for dtype in ${DTYPES:-f16}; do
  echo "== generate 512² $dtype, $STEPS steps"
  /usr/bin/time -f "wall %e s, max RSS %M KB" /tmp/gpu/hallo2 generate \
    --weights /tmp/full/pretrained_models --config configs/inference/long.yaml \
    --image model/tests/fixtures/face/astronaut.png --audio .gpu/speech.wav \
    --device cuda --dtype "$dtype" --steps "$STEPS" --seed 42 --no-vocal-separation \
    --cache-dir /tmp/gpu/full-cache --out "$OUT/full-$dtype.mp4" 2>&1 \
    | tr '\r' '\n' | grep -E "^(loaded|clip [0-9]+:|wrote|wall|error|audio|thread|  )" | grep -v "^\s*$" | tail -40
done
kill "$SAMPLER" 2>/dev/null
echo "peak GPU memory used: $(sort -n /tmp/gpu/mem.csv | tail -1) MiB"
