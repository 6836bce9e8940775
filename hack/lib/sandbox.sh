# Sourced by hack/ scripts: the throw-away topology the demo and the benchmarks share (the tests build
# the same one in Swift: Tests/CapstanTestSupport/Sandbox.swift).
#
#   pod  eth0 192.0.2.1/24, 2001:db8::1/64  <-veth->  peer eth0 192.0.2.2/24, 2001:db8::2/64
#        route 198.51.100.0/24 via the peer              lo: 198.51.100.10 (a "remote" service)
#
# Documentation addresses only, no default route, nothing in the host namespace: the veth pair is
# created inside the namespaces. The caller deletes both namespaces (trap) when it is done.
make_sandbox() {
  local pod=$1 peer=$2
  ip netns add "$pod"
  ip netns add "$peer"
  ip -n "$pod" link set lo up
  ip -n "$peer" link set lo up
  ip -n "$pod" link add eth0 type veth peer name eth0 netns "$peer"
  ip -n "$pod" addr add 192.0.2.1/24 dev eth0
  ip -n "$pod" addr add 2001:db8::1/64 dev eth0 nodad
  ip -n "$peer" addr add 192.0.2.2/24 dev eth0
  ip -n "$peer" addr add 2001:db8::2/64 dev eth0 nodad
  ip -n "$peer" addr add 198.51.100.10/32 dev lo
  ip -n "$pod" link set eth0 up
  ip -n "$peer" link set eth0 up
  ip -n "$pod" route add 198.51.100.0/24 via 192.0.2.2
}

# The benchmarks' three namespaces in a row, joined by two veth pairs created inside them, documentation
# addresses, no route out: CLIENT 192.0.2.1 <-> 192.0.2.2 PROXY 198.51.100.1 <-> 198.51.100.10 UPSTREAM.
# The client reaches the upstream's network through the proxy namespace, and back.
make_proxy_row() {
  local client=$1 proxy=$2 upstream=$3 namespace
  for namespace in "$client" "$proxy" "$upstream"; do
    ip netns add "$namespace"
    ip -n "$namespace" link set lo up
  done
  ip -n "$client" link add eth0 type veth peer name eth0 netns "$proxy"
  ip -n "$proxy" link add eth1 type veth peer name eth0 netns "$upstream"
  ip -n "$client" addr add 192.0.2.1/24 dev eth0
  ip -n "$proxy" addr add 192.0.2.2/24 dev eth0
  ip -n "$proxy" addr add 198.51.100.1/24 dev eth1
  ip -n "$upstream" addr add 198.51.100.10/24 dev eth0
  ip -n "$client" link set eth0 up
  ip -n "$proxy" link set eth0 up
  ip -n "$proxy" link set eth1 up
  ip -n "$upstream" link set eth0 up
  ip -n "$client" route add 198.51.100.0/24 via 192.0.2.2
  ip -n "$upstream" route add 192.0.2.0/24 via 198.51.100.1
}

# Waits until NAMESPACE accepts on ADDRESS:PORT, for at most 10 s, or until PID (if given) has exited.
wait_for_port() {
  local namespace=$1 address=$2 port=$3 pid=${4:-}
  for _ in $(seq 1 200); do
    ip netns exec "$namespace" bash -c "exec 3<>/dev/tcp/$address/$port" 2>/dev/null && return 0
    [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# Ends the processes the caller started and listed in its `pids` array, then deletes both namespaces.
remove_sandbox() {
  local pod=$1 peer=$2 pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns delete "$pod" 2>/dev/null || true
  ip netns delete "$peer" 2>/dev/null || true
}

# A mesh of pods for the demo (the tests build the same in Swift: Tests/CapstanTestSupport/MeshCluster.swift):
# one bridge in a "hub" namespace at 192.0.2.254/24, each pod a namespace whose eth0 is plugged into it.
# Service VIPs (198.51.100.0/24) are routed to the hub, where nothing answers: they exist to be captured.
make_hub() {
  local hub=$1
  ip netns add "$hub"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" addr add 192.0.2.254/24 dev br0
  ip -n "$hub" link set br0 up
}

# add_pod HUB NAMESPACE ADDRESS PORT_NAME
add_pod() {
  local hub=$1 pod=$2 address=$3 port=$4
  ip netns add "$pod"
  ip -n "$pod" link set lo up
  ip -n "$pod" link add eth0 type veth peer name "$port" netns "$hub"
  ip -n "$hub" link set "$port" master br0
  ip -n "$hub" link set "$port" up
  ip -n "$pod" addr add "$address/24" dev eth0
  ip -n "$pod" link set eth0 up
  ip -n "$pod" route add 198.51.100.0/24 via 192.0.2.254
}

# Ends every process inside the given namespaces (all of them were started by the caller, directly or
# by a process it started), then deletes the namespaces.
remove_namespaces() {
  local namespace pid
  for namespace in "$@"; do
    for pid in $(ip netns pids "$namespace" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  for namespace in "$@"; do ip netns delete "$namespace" 2>/dev/null || true; done
}
