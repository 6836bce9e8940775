#!/usr/bin/env bash
# The main job: a sandbox demo of `capstan init` and `capstan status` (needs root).
#
# Builds two throw-away network namespaces joined by a veth pair (documentation addresses only, no
# route out), programs Istio's sidecar capture in the "pod" one, proves it with a real connection,
# explains packet paths, breaks a rule by hand and shows the drift, repairs it, sends a request through
# the packaged proxy, switches to TPROXY, and cleans up. Everything it creates (namespaces, processes)
# is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/sandbox.sh

if [ "$(id -u)" != 0 ]; then
  echo "hack/demo.sh: network namespaces and nftables need root" >&2
  exit 1
fi
hack/setup.sh
swift build --product capstan >/dev/null
capstan="$(swift build --show-bin-path)/capstan"

pod="capstan-demo-$$-pod"
peer="capstan-demo-$$-peer"
pids=()
cleanup() {
  remove_sandbox "$pod" "$peer"
}
trap cleanup EXIT

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Sandbox: pod 192.0.2.1 / 2001:db8::1  <-veth->  peer 192.0.2.2 / 2001:db8::2 (a 'remote' 198.51.100.10 behind it)"
make_sandbox "$pod" "$peer"
ns="/run/netns/$pod"

step "What istio-init would program, as one nftables transaction (dry run: nothing changes)"
run "$capstan" init --dry-run -x 198.51.100.99/32 | sed -n '1,12p'
echo "  …"

step "Program it, with istio-iptables' flags (the injector's sidecar defaults, one exclusion)"
run "$capstan" init --network-namespace "$ns" -x 198.51.100.99/32

step "Prove it with a real connection (istio-validation): the proxy uid's probe reaches the capture port"
run "$capstan" init --network-namespace "$ns" -x 198.51.100.99/32 --skip-rule-apply --run-validation

step "Some application traffic, so the counters move (nothing listens on :15001, so it is refused)"
ip netns exec "$pod" bash -c 'exec 3<>/dev/tcp/198.51.100.10/80' 2>/dev/null || true
ip netns exec "$pod" bash -c 'exec 3<>/dev/tcp/198.51.100.10/80' 2>/dev/null || true

step "Status: intent recovered from the kernel alone, rules with their counters"
run "$capstan" status --network-namespace "$ns"

step "Explain packet paths"
run "$capstan" status --network-namespace "$ns" --trace tcp:198.51.100.10:80 --uid 1000
run "$capstan" status --network-namespace "$ns" --trace tcp:198.51.100.99:80 --uid 1000
run "$capstan" status --network-namespace "$ns" --trace tcp:198.51.100.10:80 --uid 1337
run "$capstan" status --network-namespace "$ns" --trace tcp:192.0.2.1:8080 --inbound --source 192.0.2.2

step "An operator deletes a rule by hand: status finds the drift (exit 1)"
handle=$(ip netns exec "$pod" nft -a list chain inet capstan outbound | awk '/198.51.100.99/ {print $NF}')
run ip netns exec "$pod" nft delete rule inet capstan outbound handle "$handle"
run "$capstan" status --network-namespace "$ns" || echo "(exit $?)"

step "Re-running init with the same flags repairs it"
run "$capstan" init --network-namespace "$ns" -x 198.51.100.99/32
run "$capstan" status --network-namespace "$ns" | head -3

step "The packaged proxy behind those rules: an application's request goes through it, and its stats say so"
ip netns exec "$peer" python3 -m http.server 80 --bind 198.51.100.10 >/dev/null 2>&1 & pids+=($!)
ip netns exec "$pod" "$capstan" proxy 2>/dev/null & pids+=($!)
for _ in $(seq 1 100); do
  ip netns exec "$pod" bash -c 'exec 3<>/dev/tcp/127.0.0.1/15000' 2>/dev/null && ip netns exec "$peer" bash -c 'exec 3<>/dev/tcp/198.51.100.10/80' 2>/dev/null && break
  sleep 0.1
done
run ip netns exec "$pod" setpriv --reuid=1000 --regid=1000 --clear-groups /usr/bin/python3 -c \
  'import urllib.request; print("GET http://198.51.100.10/ ->", urllib.request.urlopen("http://198.51.100.10/").status)'
ip netns exec "$pod" /usr/bin/python3 -c '
import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15000/ready").read().decode().strip())
stats = urllib.request.urlopen("http://127.0.0.1:15000/stats").read().decode()
print("\n".join(l for l in stats.splitlines() if "15001.downstream_cx_total" in l or "PassthroughCluster.upstream_cx_total" in l))'
run "$capstan" status --network-namespace "$ns" --trace tcp:198.51.100.10:80 --uid 1337
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
pids=()

step "Bad input is refused before anything is touched (exit 2)"
run "$capstan" init --network-namespace "$ns" -i 10.0.0.0/33 || echo "(exit $?)"

step "Switch to TPROXY: table replaced atomically, policy routing for IPv4 and IPv6"
run "$capstan" init --network-namespace "$ns" -m TPROXY
run "$capstan" status --network-namespace "$ns" | sed -n '1,14p'
run "$capstan" status --network-namespace "$ns" --trace tcp:[2001:db8::1]:8080 --inbound --source 2001:db8::2

step "Clean up the capture (the namespaces go when the demo exits)"
run "$capstan" init --network-namespace "$ns" --cleanup-only
run "$capstan" status --network-namespace "$ns" || echo "(exit $?)"
