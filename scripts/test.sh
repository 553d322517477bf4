#!/usr/bin/env bash
# All of netshim's tests. Run as root: the integration tests make their own
# network namespaces (and remove them); nothing touches the machine's own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
# The drivers' pure logic, natively (their own workspaces).
cargo test --release --manifest-path guests/Cargo.toml --target x86_64-unknown-linux-gnu
# Unit tests (no root, recording fake), CLI tests, and the real-kernel suite.
cargo test --release --workspace
