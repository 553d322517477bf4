#!/usr/bin/env bash
# Random netfilter batches, many of them (not part of CI): through the host
# (binding edge, guard, journal, recording fake) and at the nf_tables
# encoder. Usage: scripts/fuzz-netfilter.sh [CASES] [SEED]. Prints the
# number of crashes (a panic, a trap, or a refused batch that changed the
# table); exits non-zero if there was one.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p netshim-tests --bin fuzz-netfilter
exec target/release/fuzz-netfilter "${1:-1000000}" "${2:-$RANDOM}"
