#!/usr/bin/env bash
# The real-time factor of vocal separation on this machine with a network of Kim_Vocal_2's
# architecture and size (random weights: the real file is not downloadable here):
#   1. a Python venv from PyPI (torch 2.2.2, audio-separator 0.17.2, onnx, onnxruntime; ~3 GB,
#      reused from target/bench-vocals/venv);
#   2. scripts/fixtures/make_mdx_full_size.py exports the package's own ConvTDFNet at Kim_Vocal_2's
#      size (66.8 MB) with its model-data entry, and times one chunk in onnxruntime;
#   3. vocals_bench separates SECONDS of speech with it (tract, this crate's processing).
#
#   ./scripts/bench-vocals.sh            AUDIO_SECONDS=30 by default
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_OF_AUDIO="${AUDIO_SECONDS:-30}"
DIR=target/bench-vocals
PY="$DIR/venv/bin/python"
mkdir -p "$DIR"
if [ ! -x "$PY" ]; then
  python3.11 -m venv "$DIR/venv" 2>/dev/null || python3 -m venv "$DIR/venv"
fi
"$PY" -c 'import torch, onnx, onnxruntime, audio_separator' 2>/dev/null ||
  "$PY" -m pip install --quiet torch==2.2.2 numpy==1.26.4 onnx onnxruntime audio-separator==0.17.2

if [ ! -s "$DIR/net/Kim_Vocal_2.onnx" ]; then
  "$PY" scripts/fixtures/make_mdx_full_size.py --out "$DIR/net" --check
fi
cargo build --release --quiet -p model --bin vocals_bench
target/release/vocals_bench --model "$DIR/net/Kim_Vocal_2.onnx" \
  --data "$DIR/net/mdx_model_data.json" --seconds "$SECONDS_OF_AUDIO"
