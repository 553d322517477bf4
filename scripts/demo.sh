#!/usr/bin/env bash
# netshim end to end on the embedded default store: a bridge network on a
# throwaway "node" namespace, two containers (namespaces) attached, pinging
# each other and an outside host (203.0.113.1) through NAT, the topology,
# then everything removed again. Run as root. Touches nothing outside the
# namespaces it makes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release -p netshim
N="$PWD/target/release/netshim"

P="demo$$"
NODE="$P-node"; C1="$P-c1"; C2="$P-c2"; OUT="$P-outside"
STATE="$(mktemp -d /tmp/netshim-demo.XXXXXX)"
cleanup() {
  set +e
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null
  for ns in "$C1" "$C2"; do "$N" detach --network demo --netns "/run/netns/$ns" >/dev/null 2>&1; done
  "$N" network rm demo >/dev/null 2>&1
  for ns in "$C1" "$C2" "$OUT" "$NODE"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$STATE"
}
trap cleanup EXIT
export NETSHIM_STATE_DIR="$STATE" NETSHIM_NODE_NETNS="/run/netns/$NODE"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a node with an uplink to an outside host (203.0.113.0/24), two empty containers"
for ns in "$NODE" "$C1" "$C2" "$OUT"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$NODE" link add uplink type veth peer name eth0 netns "$OUT"
ip -n "$NODE" addr add 203.0.113.2/24 dev uplink && ip -n "$NODE" link set uplink up
ip -n "$OUT" addr add 203.0.113.1/24 dev eth0 && ip -n "$OUT" link set eth0 up
ip -n "$NODE" route add default via 203.0.113.1

step "netshim network create demo --subnet 10.88.0.0/24   (the bridge driver is a wasm guest)"
"$N" guest ls
"$N" network create demo --subnet 10.88.0.0/24
step "netshim attach: two containers"
"$N" attach --network demo --netns "/run/netns/$C1"
"$N" attach --network demo --netns "/run/netns/$C2"

step "container 1 pings container 2"
ip netns exec "$C1" ping -c 2 -W 2 10.88.0.3
step "container 1 pings the outside host"
ip netns exec "$C1" ping -c 2 -W 2 203.0.113.1
step "the outside host sees the node's address, not the container's (masquerade)"
ip netns exec "$OUT" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("203.0.113.1", 8080)); s.listen(1)
c, peer = s.accept(); c.sendall(("outside host: connection from %s\n" % peer[0]).encode()); c.close()' &
SERVER=$!
sleep 0.3
ip netns exec "$C1" python3 -c '
import socket
s = socket.create_connection(("203.0.113.1", 8080), timeout=3); print(s.recv(100).decode(), end="")'
wait "$SERVER"; SERVER=

step "topology"
"$N" network ls
"$N" network inspect demo
echo; echo "netshim topology (Graphviz DOT; --format svg draws it without graphviz):"
"$N" topology
"$N" topology --format svg > "$STATE/../netshim-demo-topology.svg"
echo "(SVG: $(wc -c < "$STATE/../netshim-demo-topology.svg") bytes written to $(realpath "$STATE/..")/netshim-demo-topology.svg)"
echo; echo "node links:"; ip -n "$NODE" -br link
echo; echo "container 1:"; ip -n "$C1" -br addr; ip -n "$C1" route
echo; echo "node nftables (the driver's own table):"; ip netns exec "$NODE" nft list ruleset

step "detach and remove: nothing is left"
"$N" detach --network demo --netns "/run/netns/$C1"
"$N" detach --network demo --netns "/run/netns/$C2"
"$N" network rm demo
echo "node links now:"; ip -n "$NODE" -br link
echo "node nftables now: '$(ip netns exec "$NODE" nft list ruleset)'"
