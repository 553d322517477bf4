#!/usr/bin/env bash
# Everything netshim needs on a fresh Debian 12 machine with rustup: the
# tools the demo drives, a C compiler (the store's SQLite is compiled in,
# statically; netshim links no system library beyond libc), protoc (the
# etcd client's gRPC code is generated at build time) and the wasm
# target the drivers are built for. `deps.sh test` adds what the
# tests drive: real OCI runtimes (runc, crun from Debian; youki from
# crates.io, kept in ~/.cargo/bin between runs), busybox for container
# images, strace, and Debian's etcd and BIRD 2 for the cluster tests
# (started by the tests themselves, never as services). `deps.sh cluster`
# adds only etcd (server and etcdctl) and BIRD 2, for the cluster demo.
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
  # Their services would also be enabled for the next boot, where they
  # would run in this machine's own namespace: the units of daemons
  # installed here are masked (only those this script installs).
  for p in "${missing[@]}"; do
    case "$p" in
      etcd-server) units=(etcd.service) ;;
      bird2) units=(bird.service) ;;
      docker.io) units=(docker.service docker.socket containerd.service) ;;
      *) units=() ;;
    esac
    for u in "${units[@]}"; do
      [ -e "/etc/systemd/system/$u" ] || ln -s /dev/null "/etc/systemd/system/$u"
    done
  done
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
if [ "${1:-}" = test ] && ! command -v youki >/dev/null && [ ! -x "$HOME/.cargo/bin/youki" ]; then
  # This machine's cgroups are v1 (hybrid): youki's default features leave v1 out.
  cargo install youki@0.7.0 --locked --no-default-features --features v1,v2
fi
