#!/usr/bin/env bash
# Full model size on a lent GPU machine (`device` tool, carry [".gpu"]): full-size RANDOM weights
# in the official formats are written there (model/tools/make_full_size_weights.py and
# make_full_size_insightface.py: numpy and onnx, which its Python has), then the CUDA `hallo2`
# CLI (scripts/gpu-build.sh) generates at the real profile (configs/inference/long.yaml, 512²,
# 16-frame clips, CFG) in DTYPES (default f16) with STEPS steps, from the real portrait and
# .gpu/speech.wav, without vocal separation. First `stage_bench` times one clip stage by stage
# (scripts/gpu-stages.py prints ms per denoising step beside the official 269.8 ms anchor, the
# clip at 40 steps beside 11.34 s, peak GPU memory beside 7.73 GiB); then each whole clip's wall
# time and the peak GPU memory of the generations; the MP4s go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-8}"
source scripts/gpu-env.sh
T=$(date +%s)
python3 model/tools/make_full_size_weights.py /tmp/full > /dev/null &
python3 model/tools/make_full_size_insightface.py /tmp/full > /dev/null &
wait
echo "full-size random weights written in $(( $(date +%s) - T )) s: $(du -sh /tmp/full | cut -f1)"
# Stage by stage first (one clip's reference pass, STAGE_STEPS denoising steps, decode), each
# dtype with its own peak GPU memory, then whole generations.
for dtype in ${DTYPES:-f16}; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/gpu/mem-stages.csv &
  SAMPLER=$!
  /tmp/gpu/stage_bench --weights /tmp/full/pretrained_models --size 512 --steps "${STAGE_STEPS:-6}" \
    --device cuda --dtype "$dtype" --cache-dir /tmp/gpu/full-cache > "$OUT/stages-$dtype.json"
  kill "$SAMPLER" 2>/dev/null
  python3 scripts/gpu-stages.py "$OUT/stages-$dtype.json" "$(sort -n /tmp/gpu/mem-stages.csv | tail -1)"
done
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
