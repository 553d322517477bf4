#!/usr/bin/env bash
# Everything netshim needs on a fresh Debian 12 machine with rustup: the C
# libraries of the nftables netlink client, the tools the tests and the demo
# drive, and the wasm target the drivers are built for.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(libnftnl-dev libmnl-dev pkg-config nftables iproute2 iputils-ping python3 strace)
[ "${NETSHIM_BENCH_PEERS:-0}" = 1 ] && pkgs+=(containernetworking-plugins iptables)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
