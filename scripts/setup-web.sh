#!/usr/bin/env bash
# Installs what building the web app needs and is not already here (sourced by run.sh and
# test.sh; idempotent, each step skipped when its tool is present):
#   - the wasm32-unknown-unknown target (rustup),
#   - cargo-leptos 0.3.10 (0.3.11 needs rustc 1.96 with --locked; ~28 min to build on 2 cores),
#   - wasm-bindgen-cli at exactly the wasm-bindgen version of Cargo.lock,
#   - the npm build tools of package.json (binaryen's wasm-opt: Debian's binaryen 108 produces
#     broken wasm, see ../shared/LEPTOS.md),
# and puts node_modules/.bin and ~/.cargo/bin first on PATH. cargo-leptos finds every tool on
# PATH and never tries to download one.
set -euo pipefail

CARGO_LEPTOS_VERSION=0.3.10
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/node_modules/.bin:$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "== rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
  echo "== cargo install cargo-leptos $CARGO_LEPTOS_VERSION (once; about 30 min on 2 cores)"
  cargo install cargo-leptos --locked --version "$CARGO_LEPTOS_VERSION"
fi

WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3; exit}' "$ROOT/Cargo.lock")"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  echo "== cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (must equal Cargo.lock's wasm-bindgen)"
  # Not --locked: its lockfile pins a webpki-roots the registry does not serve.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

if ! command -v npm >/dev/null; then
  echo "== installing nodejs and npm (Debian)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nodejs npm
fi
if [ ! -x "$ROOT/node_modules/.bin/wasm-opt" ]; then
  echo "== npm ci (build tools: binaryen)"
  (cd "$ROOT" && npm ci --no-audit --no-fund)
fi
