#!/usr/bin/env bash
# Converts ONE speech clip into the formats `model/tests/integration/audio_io.rs` decodes, and writes the
# Opus file the decoder must reject. The results are committed; rerun only to regenerate them.
#
#   apt-get update && apt-get install -y ffmpeg sox      # Debian 12: ffmpeg 5.1, sox 14.4.2
#   model/tools/make_audio_variants.sh [clip.wav] [out_dir]
#
# Defaults: clip model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav
# (16 kHz mono s16, 2.99 s), out_dir model/tests/fixtures/speech/variants.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
clip="${1:-$root/model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav}"
out="${2:-$root/model/tests/fixtures/speech/variants}"
mkdir -p "$out"

for tool in ffmpeg sox; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y ffmpeg sox" >&2; exit 1; }
done

# Reproducible output: no encoder/version tags, no timestamps.
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y -i "$clip" -map_metadata -1 -fflags +bitexact -flags:a +bitexact "$@"; }

# Lossy codecs at the rates uploads usually have; downmix and resampling are exercised too.
ff -ac 2 -ar 44100 -c:a libmp3lame -b:a 128k "$out/speech_44k1_stereo.mp3"
ff -ac 1 -ar 48000 -c:a aac -b:a 96k "$out/speech_48k_mono.m4a"
ff -ac 1 -ar 22050 -c:a libvorbis -q:a 4 "$out/speech_22k05_mono.ogg"
# Lossless: FLAC, and PCM WAV in the other sample formats (s16 → s24/f32 is exact, u8 is not).
ff -c:a flac "$out/speech_16k_mono.flac"
ff -c:a pcm_s24le "$out/speech_16k_s24.wav"
ff -c:a pcm_f32le "$out/speech_16k_f32.wav"
ff -c:a pcm_u8 "$out/speech_16k_u8.wav"
# 44.1 kHz stereo WAV with different channels: left = x, right = x/2, so the mean of the
# channels is 0.75·x (sox's very-high-quality resampler; -D: no dither, so the file is stable).
sox -D -R "$clip" -r 44100 -b 16 "$out/speech_44k1_stereo.wav" remix 1 1v0.5 rate -v

# Opus in Ogg, which symphonia cannot decode: the first 0.5 s only (a rejection case).
ff -t 0.5 -c:a libopus -b:a 24k "$out/speech_opus.ogg"

ls -l "$out"
