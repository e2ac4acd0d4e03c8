#!/usr/bin/env bash
# The soak test (scripts/soak.py): builds the server, then runs the tiny profile for a few
# minutes under load with three kill -9 restarts, and checks nothing was lost, duplicated or
# stuck. Loopback only. Extra arguments go to soak.py (--seconds, --sse, --max-rss-mb).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p server --bin server
exec python3 scripts/soak.py --server target/debug/server "$@"
