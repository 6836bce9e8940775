#!/usr/bin/env bash
# Benchmarks the agent's DNS proxy answering mesh names (needs root): the proxy (`DNSProxyServer`, run
# alone by Benchmarks/DNSBenchmarks with a table of HOSTS Kubernetes services) and dnsmasq, given the same
# names as a hosts file, side by side in one throw-away network namespace, on loopback. dnsperf sends A
# queries for those names, open loop at RATE queries/s for DURATION seconds, to one server and then the other, in
# the same run; the p50/p90/p99 latency of each comes from dnsperf's per-query log (-v).
# RATE (10000), DURATION (10 s), HOSTS (1000) set the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
hack/setup.sh
bin=$(hack/build-release.sh DNSBenchmarks 2>/dev/null)
rate=${RATE:-10000} duration=${DURATION:-10} hosts=${HOSTS:-1000}

ns=capstan-bench-dns-$$
work=$(mktemp -d /tmp/capstan-bench-dns.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  ip netns delete "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up

# The same names for both: svc-N.shop.svc.cluster.local at 198.51.100.0 + N.
for ((i = 0; i < hosts; i++)); do
  a=$((0xC6336400 + i))
  printf '%d.%d.%d.%d svc-%d.shop.svc.cluster.local\n' $((a >> 24 & 255)) $((a >> 16 & 255)) $((a >> 8 & 255)) $((a & 255)) "$i"
  echo "svc-$i.shop.svc.cluster.local A" >>"$work/queries"
done >"$work/hosts"

ip netns exec "$ns" "$bin/DNSBenchmarks" --port 15053 --hosts "$hosts" >"$work/proxy.log" 2>&1 &
pids+=($!)
ip netns exec "$ns" /usr/sbin/dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --addn-hosts="$work/hosts" --local-ttl=30 --user=root --pid-file --bind-interfaces --listen-address=127.0.0.1 \
  --port=5353 >"$work/dnsmasq.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q "DNS proxy on" "$work/proxy.log" && break; sleep 0.1; done
grep -q "DNS proxy on" "$work/proxy.log" || { cat "$work/proxy.log" >&2; exit 1; }

run() { # NAME PORT
  # Warm-up (caches, page faults), then the measured run.
  ip netns exec "$ns" dnsperf -s 127.0.0.1 -p "$2" -d "$work/queries" -Q "$rate" -l 2 >/dev/null 2>&1
  ip netns exec "$ns" dnsperf -s 127.0.0.1 -p "$2" -d "$work/queries" -Q "$rate" -l "$duration" -v >"$work/$1.txt" 2>&1
}
run capstan 15053
run dnsmasq 5353

python3 - "$work" "$rate" "$duration" "$hosts" <<'PY'
import sys
work, rate, duration, hosts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
def figures(name):
    latencies, codes, sent = [], {}, 0
    for line in open(f"{work}/{name}.txt"):
        if line.startswith("> "):
            parts = line.split()
            codes[parts[1]] = codes.get(parts[1], 0) + 1
            latencies.append(float(parts[-1]))
        elif line.strip().startswith("Queries sent:"):
            sent = int(line.split()[2])
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    return dict(sent=sent, answered=len(latencies), codes=codes, p50=pick(0.5), p90=pick(0.9), p99=pick(0.99))
ours, theirs = figures("capstan"), figures("dnsmasq")
print(f"DNS answers for mesh names: {rate} queries/s for {duration} s, {hosts} names, A queries, loopback in one namespace")
print(f"{'server':<22}{'sent':>8}{'answered':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}  rcodes")
for name, f in (("capstan DNS proxy", ours), ("dnsmasq 2.90", theirs)):
    print(f"{name:<22}{f['sent']:>8}{f['answered']:>10}{f['p50']:>9.3f}{f['p90']:>9.3f}{f['p99']:>9.3f}  {f['codes']}")
print(f"p50 ratio capstan/dnsmasq: {ours['p50'] / theirs['p50']:.2f}")
PY
