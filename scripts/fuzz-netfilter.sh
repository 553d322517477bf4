#!/usr/bin/env bash
# Random netfilter batches, many of them (not part of CI): through the host
# (binding edge, guard, journal, recording fake) and at the nf_tables
# encoder. Usage: scripts/fuzz-netfilter.sh [CASES] [SEED]. Each property
# counts a case as passed only if the host answered with a value — applied,
# or an error naming the problem — and never panicked or trapped.
set -euo pipefail
cd "$(dirname "$0")/.."
export NETSHIM_PROP_CASES="${1:-1000000}"
export NETSHIM_PROP_SEED="${2:-$RANDOM}"
echo "fuzz-netfilter: $NETSHIM_PROP_CASES cases per property, seed $NETSHIM_PROP_SEED" >&2
start=$(date +%s)
cargo test --release -q -p netshim-host-api --lib props:: 2>&1 | tail -3
cargo test --release -q -p netshim-tests --test netfilter_props 2>&1 | tail -3
echo "fuzz-netfilter: 2 properties x $NETSHIM_PROP_CASES cases, 0 crashes, $(( $(date +%s) - start )) s" >&2
