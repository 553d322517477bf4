#!/usr/bin/env bash
# Everything netshim needs on a fresh Debian 12 machine with rustup: the
# tools the demo drives, a C compiler (the store's SQLite is compiled in,
# statically; netshim links no system library beyond libc), protoc (the
# etcd client's gRPC code is generated at build time) and the wasm
# target the drivers are built for. `deps.sh test` adds what the
# tests drive: real OCI runtimes (runc, crun from Debian; youki from
# crates.io, kept in ~/.cargo/bin between runs), busybox for container
# images, strace, and Debian's etcd for the cluster store's tests (started
# by the tests themselves, never as a service). `deps.sh cluster` adds
# only etcd, for the cluster demo.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(nftables iproute2 iputils-ping python3 gcc libc6-dev protobuf-compiler)
if [ "${1:-}" = test ]; then
  pkgs+=(strace runc crun busybox-static util-linux docker.io etcd-server etcd-client bird2)
elif [ "${1:-}" = cluster ]; then
  pkgs+=(etcd-server etcd-client bird2)
fi
[ "${NETSHIM_BENCH_PEERS:-0}" = 1 ] && pkgs+=(containernetworking-plugins iptables)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  # Packages like docker.io start their service on install; the tests start
  # their own dockerd in a namespace and nothing may touch this machine's
  # network, so service starts are denied while installing.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
if [ "${1:-}" = test ] && ! command -v youki >/dev/null && [ ! -x "$HOME/.cargo/bin/youki" ]; then
  # This machine's cgroups are v1 (hybrid): youki's default features leave v1 out.
  cargo install youki@0.7.0 --locked --no-default-features --features v1,v2
fi
