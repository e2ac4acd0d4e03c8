#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what is missing, then the suites
# (fmt, clippy, unit/parity/integration tests, the Playwright browser suite).
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is required (rustup stable, edition 2024)" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

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
# The browser suite runs Debian's Chromium (Playwright never downloads a browser here).
# The cluster tests start their own nats-server (JetStream) on free loopback ports.
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
have_nats() { [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null; }
if ! command -v cmake >/dev/null || ! command -v nasm >/dev/null || ! command -v ffprobe >/dev/null \
  || [ ! -x "$CHROMIUM_PATH" ] || ! have_nats; then
  echo "== installing cmake, nasm, ffmpeg, chromium, nats-server (Debian)"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq cmake nasm ffmpeg chromium nats-server
fi
export CHROMIUM_PATH

# wasm target, cargo-leptos, wasm-bindgen-cli, npm build tools; PATH.
source scripts/setup-web.sh
if [ ! -d end2end/node_modules/@playwright/test ]; then
  echo "== npm ci (end2end: Playwright, no browser download)"
  (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (model, app, server; all targets) and the browser build (wasm32)"
cargo clippy -p model -p app -p server --all-targets -- -D warnings
cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings

echo "== cargo leptos build (server + site for the browser suite) and the fake Hub"
cargo leptos build
cargo build -p server --bin fake_hub

echo "== cargo test (workspace; frontend is the wasm entry point, built by cargo leptos)"
cargo test --workspace --exclude frontend

echo "== Playwright (end2end, Chromium headless)"
(cd end2end && npx playwright test)
