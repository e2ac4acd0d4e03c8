#!/usr/bin/env bash
# Runs Hallo2 end to end on a fresh machine. Today this is the `hallo2` CLI of the model crate
# (the web studio arrives with issue 5): it builds the release binary, then renders the tiny
# official-format profile from its prepared tensors into out/tiny_video.safetensors.
# Pass your own arguments to run another weights folder, e.g.
#   ./scripts/run.sh --weights /path/to/pretrained_models --config configs/inference/long.yaml \
#       --inputs inputs.safetensors --audio-features audio.safetensors --out video.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p model --bin hallo2
if [ "$#" -eq 0 ]; then
  tiny=model/tests/fixtures/hallo2-tiny
  mkdir -p out
  set -- --weights "$tiny/pretrained_models" --config configs/inference/long_tiny.yaml \
    --inputs "$tiny/cases/inputs.safetensors" --audio-features "$tiny/cases/wav2vec.safetensors" \
    --out out/tiny_video.safetensors --cache-dir out/cache
fi
exec target/release/hallo2 "$@"
