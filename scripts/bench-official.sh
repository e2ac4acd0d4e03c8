#!/usr/bin/env bash
# Side by side on this CPU: our candle pipeline against the official PyTorch code, stage by stage,
# on the same full-size random weights (the real Hub layout), in one run:
#   reference (VAE encode + reference UNet + AudioProj), one denoising step (3-D UNet on the CFG
#   rows x 16 frames + DDIM), the VAE decode of one clip, wav2vec2 on AUDIO_SECONDS of audio.
# Prints both sides' seconds and the ratio candle / official per stage, then the same for single
# ops at model shapes (op_bench / bench_ops.py: 3×3 convolutions through our path and candle's,
# matmuls, group norm, softmax), which says which op a slower stage loses its time in.
#
#   HALLO2_SRC=/path/to/hallo2 ./scripts/bench-official.sh
#
# HALLO2_SRC: a checkout (or a bare git copy) of github.com/fudan-generative-vision/hallo2; its
# code is imported, never copied. Environment: SIZE (128, a multiple of 64), STEPS (3; the first
# step is not counted), AUDIO_SECONDS (10), WEIGHTS (a pretrained_models folder to reuse; else
# full-size random weights are written to a temp folder, ~5.6 GB, and removed), KEEP=1 keeps it.
# The official side runs in ~/.cache/hallo2-official-venv (PyPI torch 2.2.2 and the versions
# ../shared/fixtures/PRODUCING.md pins; ~5 GB, made on first use). Peak memory ~16 GB.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE="${SIZE:-128}"
STEPS="${STEPS:-3}"
AUDIO_SECONDS="${AUDIO_SECONDS:-10}"
VENV="$HOME/.cache/hallo2-official-venv"
: "${HALLO2_SRC:?set HALLO2_SRC to a checkout of github.com/fudan-generative-vision/hallo2}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hallo2-bench-official.XXXXXX")
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT

SRC="$HALLO2_SRC"
if [ -f "$SRC/HEAD" ] && [ ! -d "$SRC/hallo" ]; then
  mkdir -p "$WORK/src"
  git --git-dir="$SRC" archive HEAD | tar -x -C "$WORK/src"
  SRC="$WORK/src"
fi
[ -f "$SRC/hallo/animate/face_animate.py" ] || { echo "$HALLO2_SRC is not the hallo2 repository" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, diffusers, torchvision' 2>/dev/null; then
  echo "== official environment into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch==2.2.2 torchvision==0.17.2 diffusers==0.32.2 \
    transformers==4.39.2 einops==0.8.0 omegaconf==2.3.0 safetensors numpy==1.26.4 \
    accelerate==0.28.0 av==12.1.0
fi

WEIGHTS="${WEIGHTS:-}"
if [ -z "$WEIGHTS" ]; then
  echo "== full-size random weights into $WORK"
  "$VENV/bin/python" model/tools/make_full_size_weights.py "$WORK/w" >/dev/null
  WEIGHTS="$WORK/w/pretrained_models"
fi

echo "== building stage_bench, op_bench"
cargo build --release -q -p model --bin stage_bench --bin op_bench

echo "== official (PyTorch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'), ${SIZE}², $STEPS steps)"
"$VENV/bin/python" scripts/bench_official.py --src "$SRC" --weights "$WEIGHTS" --size "$SIZE" \
  --steps "$STEPS" --audio-seconds "$AUDIO_SECONDS" 2>"$WORK/official.log" >"$WORK/official.json" \
  || { tail -20 "$WORK/official.log" >&2; exit 1; }
echo "== candle"
target/release/stage_bench --weights "$WEIGHTS" --size "$SIZE" --steps "$STEPS" \
  --audio-seconds "$AUDIO_SECONDS" --cache-dir "$WORK/cache" >"$WORK/candle.json"

echo "== ops"
"$VENV/bin/python" scripts/bench_ops.py >"$WORK/official-ops.json"
target/release/op_bench >"$WORK/candle-ops.json"

python3 - "$WORK/official.json" "$WORK/candle.json" "$WORK/official-ops.json" "$WORK/candle-ops.json" <<'EOF'
import json, sys
official, candle = (json.load(open(p)) for p in sys.argv[1:3])
for key in ("size", "frames", "motion_frames", "cfg_rows", "audio_frames"):
    assert official[key] == candle[key], f"the two sides ran different shapes: {key} {official[key]} vs {candle[key]}"
print(f"\n{official['size']}² · {official['frames']} + {official['motion_frames']} frames · "
      f"{official['cfg_rows']} CFG rows · wav2vec2 on {official['audio_seconds']} s · "
      f"{official['threads']} threads (torch {official['torch']})\n")
print(f"{'stage':<12} {'official s':>11} {'candle s':>10} {'candle/official':>16}")
for key, name in [("reference_s", "reference"), ("unet_step_s", "unet_step"),
                  ("decode_s", "decode"), ("wav2vec2_s", "wav2vec2")]:
    print(f"{name:<12} {official[key]:>11.3f} {candle[key]:>10.3f} {candle[key] / official[key]:>15.2f}×")
official_ops, candle_ops = (json.load(open(p)) for p in sys.argv[3:5])
print(f"\n{'op (ms)':<36} {'official':>9} {'candle':>9} {'ratio':>7}")
for name, seconds in candle_ops.items():
    base = official_ops[name.removeprefix("candle_")]
    print(f"{name:<36} {1000 * base:>9.2f} {1000 * seconds:>9.2f} {seconds / base:>6.2f}×")
EOF
