#!/usr/bin/env bash
# All of netshim's tests. Run as root: the integration tests make their own
# network namespaces (and remove them); nothing touches the machine's own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The drivers' pure logic, natively (their own workspaces).
cargo test --release --manifest-path guests/Cargo.toml --target x86_64-unknown-linux-gnu 2>&1 | tee -a "$log"
# Unit tests (no root, recording fake), CLI tests, and the real-kernel suite.
cargo test --release --workspace 2>&1 | tee -a "$log"
# One line for the whole run (cargo's last one is its doc-test summary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "all: %d passed, %d failed\n", p, f }' "$log"
