#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what is missing, then the suites.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is required (rustup stable, edition 2024)" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (model, all targets)"
cargo clippy -p model --all-targets -- -D warnings

echo "== cargo test (workspace)"
cargo test --workspace
