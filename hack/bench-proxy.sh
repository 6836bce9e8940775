#!/usr/bin/env bash
# Benchmarks `capstan proxy` against a direct connection and HAProxy on the same path (needs root).
#
# Two throw-away namespaces joined by a veth pair: "pod" (capture rules from `capstan init`, the
# proxies, the clients) and "peer" (the servers, on 198.51.100.10). Every figure comes from one run:
#   throughput  iperf3, one stream: direct (the proxy uid, not captured), through Capstan (captured by
#               the rules to :15001), through HAProxy 2 threads `mode tcp` (127.0.0.1:16001)
#   latency     sockperf ping-pong, 64-byte messages: the same three paths, p50 and p99
# The three paths take turns, ROUNDS times (default 3) for SECONDS_PER_RUN each (default 5); each
# figure is the median over the rounds, so a noisy moment does not favour one side.
#   memory      Capstan's resident set idle, and with 1,000 open idle connections
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
source hack/lib/sandbox.sh
hack/setup.sh
for tool in iperf3 haproxy sockperf; do
  command -v "$tool" >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null; }
done
seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}
bin=$(hack/build-release.sh 2>/dev/null)
work=$(mktemp -d)
chmod 755 "$work"  # the clients run as other uids

pod="cstproxybench$$-pod"
peer="cstproxybench$$-peer"
pids=()
cleanup() {
  remove_sandbox "$pod" "$peer"
  rm -rf "$work"
}
trap cleanup EXIT

make_sandbox "$pod" "$peer"
"$bin/capstan" init --network-namespace "/run/netns/$pod" >/dev/null

# Clients run as an application uid (captured) or as the proxy uid (not captured: the direct path).
app=(ip netns exec "$pod" setpriv --reuid=1000 --regid=1000 --clear-groups)
proxy_uid=(ip netns exec "$pod" setpriv --reuid=1337 --regid=1337 --clear-groups)
# Waits until something in the pod accepts on 127.0.0.1:PORT.
wait_for_local_port() {
  wait_for_port "$pod" 127.0.0.1 "$1" || { echo "hack/bench-proxy.sh: nothing listens on 127.0.0.1:$1" >&2; return 1; }
}

ip netns exec "$peer" iperf3 -s -p 5201 >/dev/null 2>&1 & pids+=($!)
ip netns exec "$peer" sockperf server --tcp -i 198.51.100.10 -p 11111 >/dev/null 2>&1 & pids+=($!)
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 2
  maxconn 5000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
frontend iperf
  bind 127.0.0.1:16001
  default_backend iperf
backend iperf
  server s 198.51.100.10:5201
frontend sockperf
  bind 127.0.0.1:16002
  default_backend sockperf
backend sockperf
  server s 198.51.100.10:11111
CFG
"${proxy_uid[@]}" haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & pids+=($!)
# `ip netns exec` execs the proxy, so this pid is the proxy's (started as root, it becomes uid 1337).
ip netns exec "$pod" "$bin/capstan" proxy --concurrency 2 2>"$work/proxy.log" & proxy=$!; pids+=($proxy)
wait_for_local_port 15000
wait_for_local_port 16001
ip netns exec "$peer" bash -c 'for _ in $(seq 1 100); do exec 3<>/dev/tcp/198.51.100.10/5201 && exit 0; sleep 0.05; done; exit 1' 2>/dev/null

throughput() {
  "$@" iperf3 -c "$target" -p "$port" -t "$seconds" -J > "$work/iperf.json" || true
  python3 -c 'import json,sys
result = json.load(open(sys.argv[1]))
if "error" in result: sys.exit("iperf3: " + result["error"])
print(result["end"]["sum_received"]["bits_per_second"])' "$work/iperf.json"
}
latency() {
  "$@" sockperf ping-pong --tcp -i "$target" -p "$port" -t "$seconds" -m 64 2>&1 \
    | python3 -c '
import re, sys
text = sys.stdin.read()
p50 = re.search(r"percentile 50\.000 =\s+([0-9.]+)", text).group(1)
p99 = re.search(r"percentile 99\.000 =\s+([0-9.]+)", text).group(1)
print(p50, p99)'
}

direct_bps=() capstan_bps=() haproxy_bps=() direct_lat=() capstan_lat=() haproxy_lat=()
for _ in $(seq 1 "$rounds"); do
  target=198.51.100.10 port=5201; direct_bps+=("$(throughput "${proxy_uid[@]}")")
  target=198.51.100.10 port=5201; capstan_bps+=("$(throughput "${app[@]}")")
  target=127.0.0.1 port=16001; haproxy_bps+=("$(throughput "${proxy_uid[@]}")")
  target=198.51.100.10 port=11111; direct_lat+=("$(latency "${proxy_uid[@]}" | tr ' ' ,)")
  target=198.51.100.10 port=11111; capstan_lat+=("$(latency "${app[@]}" | tr ' ' ,)")
  target=127.0.0.1 port=16002; haproxy_lat+=("$(latency "${proxy_uid[@]}" | tr ' ' ,)")
done

idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$proxy/status")
# Of the idle resident set: the pages of the capstan binary's own mappings, and how many were written.
binary_kb=$(awk -v exe="$(readlink "/proc/$proxy/exe")" '/^[0-9a-f]+-/ {mine = ($6 == exe)} mine && /^Rss:/ {rss += $2} mine && /^Private_Dirty:/ {dirty += $2} END {print rss " " dirty}' "/proc/$proxy/smaps")
# 1,000 idle connections through the proxy, held open by a client in the pod.
cat > "$work/hold.py" <<'PY'
import socket, sys, time
held = [socket.create_connection(("198.51.100.10", 5201)) for _ in range(1000)]
print("open", flush=True)
time.sleep(float(sys.argv[1]))
PY
ip netns exec "$peer" python3 -c '
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("198.51.100.10", 5202)); s.listen(2000)
held = []
while True: held.append(s.accept()[0])
' & pids+=($!)
sed -i 's/5201/5202/' "$work/hold.py"
ip netns exec "$peer" bash -c 'for _ in $(seq 1 100); do exec 3<>/dev/tcp/198.51.100.10/5202 && exit 0; sleep 0.05; done; exit 1' 2>/dev/null
"${app[@]}" /usr/bin/python3 "$work/hold.py" 5 > "$work/hold.out" 2>&1 & holder=$!; pids+=($holder)
for _ in $(seq 1 200); do grep -q open "$work/hold.out" 2>/dev/null && break; sleep 0.05; done
sleep 1
held_kb=$(awk '/VmRSS/ {print $2}' "/proc/$proxy/status")
held_connections=$(ip netns exec "$pod" python3 -c 'import urllib.request
stats = urllib.request.urlopen("http://127.0.0.1:15000/stats").read().decode()
print(next(l.split()[-1] for l in stats.splitlines() if l.startswith("listener.0.0.0.0_15001.downstream_cx_active")))')
wait "$holder" || true

python3 - "${direct_bps[*]}" "${capstan_bps[*]}" "${haproxy_bps[*]}" "${direct_lat[*]}" "${capstan_lat[*]}" \
  "${haproxy_lat[*]}" "$idle_kb" "$held_kb" "$rounds" "$seconds" "$held_connections" "$binary_kb" <<'PY'
import statistics, sys
def gbits(arg): return statistics.median(float(x) for x in arg.split()) / 1e9
def lat(arg):
    pairs = [tuple(float(v) for v in item.split(",")) for item in arg.split()]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
d, c, h = gbits(sys.argv[1]), gbits(sys.argv[2]), gbits(sys.argv[3])
(dp50, dp99), (cp50, cp99), (hp50, hp99) = lat(sys.argv[4]), lat(sys.argv[5]), lat(sys.argv[6])
idle, held = (int(x) / 1024 for x in sys.argv[7:9])
print(f"medians of {sys.argv[9]} rounds of {sys.argv[10]} s, paths taking turns")
print(f"throughput (iperf3, 1 stream): direct {d:.2f} Gbit/s, capstan {c:.2f} Gbit/s, haproxy {h:.2f} Gbit/s; "
      f"capstan/direct {c/d:.2f}, haproxy/direct {h/d:.2f}, capstan/haproxy {c/h:.2f}")
print(f"latency (sockperf ping-pong, round trip us): direct p50 {dp50:.1f} p99 {dp99:.1f}; "
      f"capstan p50 {cp50:.1f} p99 {cp99:.1f} (added {cp50-dp50:.1f} / {cp99-dp99:.1f}); "
      f"haproxy p50 {hp50:.1f} p99 {hp99:.1f} (added {hp50-dp50:.1f} / {hp99-dp99:.1f})")
print(f"memory (capstan proxy RSS): idle {idle:.1f} MB, with {sys.argv[11]} open idle connections {held:.1f} MB")
binary, dirty = (int(x) / 1024 for x in sys.argv[12].split())
print(f"  of the idle figure, pages of the capstan binary itself: {binary:.1f} MB, of which written: {dirty:.1f} MB")
PY
