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

# Ends the processes the caller started and listed in its `pids` array, then deletes both namespaces.
remove_sandbox() {
  local pod=$1 peer=$2 pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns delete "$pod" 2>/dev/null || true
  ip netns delete "$peer" 2>/dev/null || true
}
