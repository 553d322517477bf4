#!/usr/bin/env bash
# Generated clients through the daemon's HTTP and JSON layers, many of them
# (not part of CI): in memory, against a core on the recording fake. Usage:
# scripts/fuzz-http.sh [CASES] [SEED]. Prints the number of crashes (a
# panic, an answer that is not HTTP, a daemon that stopped serving); exits
# non-zero if there was one.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p netshim-tests --bin fuzz-http
exec target/release/fuzz-http "${1:-1000000}" "${2:-$RANDOM}"
