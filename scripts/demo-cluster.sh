#!/usr/bin/env bash
# netshim across three nodes with the flannel (or calico) driver, on one machine: a
# "fabric" namespace with an underlay bridge (192.0.2.0/24), etcd in a
# namespace of its own, three node namespaces each with its own state
# directory and node agent (`netshim daemon`), a container on each node,
# and an outside host. The containers ping each other across nodes and the
# outside host; then everything is removed again. Run as root. Its
# networking stays inside the namespaces it makes (it also installs what
# it needs, builds netshim, and keeps its files under /tmp).
#
#   bash scripts/demo-cluster.sh [vxlan|host-gw|udp]     (flannel; default vxlan)
#   bash scripts/demo-cluster.sh --driver calico [vxlan|bgp]
#                                   (Calico: VXLAN mode, or BGP with a BIRD per node)
set -euo pipefail
cd "$(dirname "$0")/.."
DRIVER=flannel
if [ "${1:-}" = --driver ]; then DRIVER="${2:-}"; shift 2; fi
BACKEND="${1:-vxlan}"
case "$DRIVER/$BACKEND" in
  flannel/vxlan|flannel/host-gw|flannel/udp|calico/vxlan|calico/bgp) ;;
  *) echo "usage: $0 [vxlan|host-gw|udp] | --driver calico [vxlan|bgp]" >&2; exit 2 ;;
esac
bash scripts/deps.sh cluster
cargo build --release -p netshim
N="$PWD/target/release/netshim"

P="dc$$"
FAB="$P-fab"; ETCD="$P-etcd"; OUT="$P-out"
NODES=(1 2 3)
WORK="$(mktemp -d /tmp/netshim-cluster-demo.XXXXXX)"
STORE="etcd://192.0.2.10:2379"
PIDS=()
cleanup() {
  set +e
  for i in "${NODES[@]}"; do stop_agent "$i"; done
  for i in "${NODES[@]}"; do
    ns "$i" detach --network pods --netns "/run/netns/$P-c$i" >/dev/null 2>&1
    ns "$i" network rm pods >/dev/null 2>&1
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  # Whatever still runs in a node's namespace (a BIRD whose agent died)
  # would keep it alive unnamed: stopped by PID first.
  for n in "${NODES[@]}"; do
    for p in $(ip netns pids "$P-n$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$P-n$n" 2>/dev/null; ip netns del "$P-c$n" 2>/dev/null
  done
  for n in "$ETCD" "$OUT" "$FAB"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Node $1's agent. Started directly (not through a shell function, which
# would run in a subshell of its own): `ip netns exec` and `env` exec, so
# the PID recorded is netshim's, and stopping it stops the daemon.
start_agent() {
  local i=$1
  ip netns exec "$P-n$i" env NETSHIM_STATE_DIR="$WORK/n$i" NETSHIM_STORE="$STORE" \
    NETSHIM_NODE_NAME="node$i" "$N" daemon --plugin-dir "$WORK/n$i/plugins" \
    > "$WORK/n$i/agent.log" 2>&1 &
  echo $! > "$WORK/n$i/agent.pid"
}
stop_agent() { # SIGTERM (it stops its BIRD too), SIGKILL after 5 s
  local f="$WORK/n$1/agent.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  wait "$pid" 2>/dev/null || true
  rm -f "$f"
}
# netshim as node $1 sees it: inside its namespace, with its own state.
ns() {
  local i=$1; shift
  ip netns exec "$P-n$i" env NETSHIM_STATE_DIR="$WORK/n$i" NETSHIM_STORE="$STORE" \
    NETSHIM_NODE_NAME="node$i" "$N" "$@"
}
plug() { # namespace, host number
  ip -n "$FAB" link add "p$2" type veth peer name eth0 netns "$1"
  ip -n "$FAB" link set "p$2" master fab0 up
  ip -n "$1" addr add "192.0.2.$2/24" dev eth0
  ip -n "$1" link set eth0 up; ip -n "$1" link set lo up
}

step "a fabric (192.0.2.0/24), etcd on it, an outside host, three nodes"
ip netns add "$FAB"; ip -n "$FAB" link add fab0 type bridge; ip -n "$FAB" link set fab0 up
ip netns add "$ETCD"; plug "$ETCD" 10
ip netns add "$OUT"; plug "$OUT" 200
for i in "${NODES[@]}"; do
  ip netns add "$P-n$i"; plug "$P-n$i" "1$i"
  ip -n "$P-n$i" route add default via 192.0.2.200
  mkdir -p "$WORK/n$i"
done
ip netns exec "$ETCD" etcd --name demo --data-dir "$WORK/etcd" \
  --listen-client-urls http://192.0.2.10:2379 --advertise-client-urls http://192.0.2.10:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster demo=http://127.0.0.1:2380 > "$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do ip netns exec "$ETCD" etcdctl --endpoints http://192.0.2.10:2379 endpoint health >/dev/null 2>&1 && break; sleep 0.1; done

if [ "$DRIVER" = flannel ]; then
  step "flannel's configuration, written as flannel users do"
  CONFIG="{\"Network\": \"10.244.0.0/16\", \"Backend\": {\"Type\": \"$BACKEND\"}}"
  echo "etcdctl put /coreos.com/network/config '$CONFIG'"
  ip netns exec "$ETCD" etcdctl --endpoints http://192.0.2.10:2379 put /coreos.com/network/config "$CONFIG"
fi

step "on each node: netshim network create pods --driver $DRIVER, then its node agent"
CREATE=()
[ "$DRIVER/$BACKEND" = calico/bgp ] && CREATE=(-o vxlan-mode=Never)
for i in "${NODES[@]}"; do
  ns "$i" network create pods --driver "$DRIVER" "${CREATE[@]}"
  start_agent "$i"
done
sleep 2

if [ "$DRIVER" = flannel ]; then
  step "the leases in etcd (flannel's keys and JSON)"
  ip netns exec "$ETCD" etcdctl --endpoints http://192.0.2.10:2379 get --prefix /coreos.com/network/subnets
else
  step "Calico's keys in etcd: the pool, the nodes, blocks with their affinity, handles"
  ip netns exec "$ETCD" etcdctl --endpoints http://192.0.2.10:2379 get --prefix --keys-only /calico | grep -v '^$'
fi

step "a container on each node"
ADDRS=()
for i in "${NODES[@]}"; do
  ip netns add "$P-c$i"
  ns "$i" attach --network pods --netns "/run/netns/$P-c$i"
  ADDRS+=("$(ip -n "$P-c$i" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)")
done

step "containers ping each other across nodes"
FAILED=0
for i in 0 1 2; do
  for j in 0 1 2; do
    [ "$i" = "$j" ] && continue
    printf 'node%s container -> node%s container %-14s ' "$((i+1))" "$((j+1))" "${ADDRS[$j]}"
    # A block claimed just now reaches the other nodes within a second or
    # so (BGP sessions, VXLAN routes): a few tries.
    ok=""
    for _ in 1 2 3 4 5; do
      if ip netns exec "$P-c$((i+1))" ping -c 1 -W 1 "${ADDRS[$j]}" >/dev/null; then ok=1; break; fi
    done
    if [ -n "$ok" ]; then echo ok; else echo FAILED; FAILED=$((FAILED+1)); fi
  done
done
step "and the outside host (192.0.2.200), masqueraded"
ip netns exec "$P-c1" ping -c 2 -W 2 192.0.2.200

step "what node 1 knows of the cluster, and its kernel objects"
ns 1 cluster status
if [ "$DRIVER/$BACKEND" = calico/bgp ]; then echo; ns 1 node status; fi
echo; ip -n "$P-n1" route
if [ "$DRIVER/$BACKEND" = flannel/vxlan ]; then echo; ip -n "$P-n1" neigh show dev flannel.1; bridge -n "$P-n1" fdb show dev flannel.1; fi
if [ "$DRIVER/$BACKEND" = calico/vxlan ]; then echo; ip -n "$P-n1" neigh show dev vxlan.calico; bridge -n "$P-n1" fdb show dev vxlan.calico; fi
echo; ns 1 topology

step "remove: containers, networks (leases given back), agents, namespaces"
for i in "${NODES[@]}"; do
  stop_agent "$i"
  ns "$i" detach --network pods --netns "/run/netns/$P-c$i"
  ns "$i" network rm pods
done
echo "leases and affinities left: '$(ip netns exec "$ETCD" etcdctl --endpoints http://192.0.2.10:2379 get --prefix --keys-only /coreos.com/network/subnets; ip netns exec "$ETCD" etcdctl --endpoints http://192.0.2.10:2379 get --prefix --keys-only /calico/ipam/v2/host)'"
echo "node 1 links now:"; ip -n "$P-n1" -br link
if [ "$FAILED" -gt 0 ]; then echo "$FAILED ping(s) failed" >&2; exit 1; fi
