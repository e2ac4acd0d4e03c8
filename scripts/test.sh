#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what is missing, then the suites.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is required (rustup stable, edition 2024)" >&2
  exit 1
fi

# The .pth writer test runs model/tools/make_full_size_weights.py, which needs numpy.
if [ -z "${HALLO2_PYTHON:-}" ]; then
  if python3 -c 'import numpy' 2>/dev/null; then
    export HALLO2_PYTHON=python3
  else
    if [ ! -x .venv-tools/bin/python ]; then
      echo "== creating .venv-tools with numpy (PyPI)"
      python3 -m venv .venv-tools && .venv-tools/bin/pip install --quiet numpy
    fi
    export HALLO2_PYTHON="$PWD/.venv-tools/bin/python"
  fi
fi

# MP4 export: libopus (bundled) builds with cmake, OpenH264 uses nasm for its x86 assembly when
# present; the media tests check the files with ffprobe/ffmpeg (test-only, never at runtime).
if ! command -v cmake >/dev/null || ! command -v nasm >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "== installing cmake, nasm, ffmpeg (Debian)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq cmake nasm ffmpeg
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (model, app, server; all targets)"
cargo clippy -p model -p app -p server --all-targets -- -D warnings

echo "== cargo test (workspace)"
cargo test --workspace
