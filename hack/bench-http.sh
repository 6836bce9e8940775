#!/usr/bin/env bash
# Benchmarks `capstan proxy` as an HTTP reverse proxy (issue 15) against HAProxy 2.6 (`mode http`) and
# nginx (`proxy_pass`), every peer in the same run, each in front of the same nginx upstream (needs root).
#
# Three throw-away namespaces joined by two veth pairs, documentation addresses, no route out:
#   client    192.0.2.1        wrk, h2load
#   proxy     192.0.2.2 | 198.51.100.1   haproxy, nginx, capstan proxy (each on its own port); it also
#             forwards IP, which is the direct path, so direct crosses the same two veth pairs as the rest
#   upstream  198.51.100.10    nginx: a 14-byte 200 for every request, HTTP/1.1 on :8080, h2c on :8082
# Each proxy is reached as a plain reverse proxy (the client connects to its port, no capture) and keeps
# HTTP/1.1 keep-alive connections to the upstream.
#
# The peers take turns, ROUNDS times (default 3), SECONDS_PER_RUN each (default 5); each figure is the
# median over the rounds, so a noisy moment does not favour one side:
#   h1   wrk, HTTP/1.1 keep-alive, THREADS threads (1 when pinned, else 2) and CONNECTIONS connections
#        (50): req/s, latency p50/p75/p90/p99 — direct, haproxy, nginx, capstan
#   h2   h2load, h2c with prior knowledge, H2_CLIENTS connections (10) with H2_STREAMS streams each (10),
#        timed like wrk (-D, after a 1 s warm-up; timed rather than -n so that a slow proxy cannot
#        stretch the run): req/s, p50..p99 from its per-request log — direct (the upstream nginx's own
#        h2c, which costs it more than HTTP/1.1 does: a proxy can beat it when CPUs are shared),
#        haproxy (`proto h2` bind), nginx (`listen http2`), capstan (codec AUTO). Every proxy speaks
#        HTTP/1.1 keep-alive to the upstream.
#   cpu  each proxy's user+system CPU seconds per 1,000 requests answered (from /proc/PID/stat)
#   rss  each proxy's VmRSS sampled mid-run (max over rounds) and its VmHWM
# Prints a table, then the figures as one JSON object between BEGIN/END BENCH-HTTP FIGURES lines (also
# written to JSON_FILE if set). A proxy that does not start or answer gets a row saying why; the others go on.
#
# CPU placement (PIN, default 1 on a machine with 2 or more CPUs): each proxy runs with one worker
# (haproxy nbthread 1, nginx worker_processes 1, capstan --concurrency 1) pinned to CPU 1, and the load
# generator and the upstream share CPU 0. The proxy then has a core to itself, the same for every proxy,
# and the figure compares proxies rather than schedulers; the price is that the direct row is bounded by
# one core running both wrk and nginx. PIN=0: nothing pinned, every proxy with 2 workers, all sharing
# both cores (a proxy that spends less CPU leaves more to the client and the upstream).
#
# The capstan binary: CAPSTAN=/path/to/capstan (CAPSTAN=.build-release/release/capstan: the last release
# build, without building), or else the release build from hack/build-release.sh, built first as the
# other benchmarks do (its time is not part of the ~2.5 minutes the benchmark takes). A debug build works
# for trying the script; the summary says its figures are not Capstan's. PEERS (default "direct haproxy
# nginx capstan capstan-rbac capstan-gateway") limits the peers. capstan-rbac is the same proxy with an
# envoy.filters.http.rbac filter of 20 ALLOW policies in force (issue 18's target: ≥ 0.95 × capstan).
# capstan-gateway is the proxy as an ingress gateway (issue 19): a router node configured over ADS by
# `capstan control-plane` (in the proxy's namespace, on 127.0.0.1) from a Gateway on 10041 and a
# VirtualService bound to it, so its path is istiod's gateway listener, routes and EDS cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
source hack/lib/sandbox.sh
hack/setup.sh >&2
for tool in haproxy nginx wrk h2load; do
  command -v "$tool" >/dev/null || { echo "hack/bench-http.sh: $tool is missing (hack/setup.sh installs it)" >&2; exit 1; }
done
[[ $(haproxy -v | head -1) == *"version 2.6"* ]] || echo "hack/bench-http.sh: note: $(haproxy -v | head -1), not HAProxy 2.6" >&2

seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}
kinds=${KINDS:-h1 h2}            # KINDS=h1 or KINDS=h2: one protocol's runs only
connections=${CONNECTIONS:-50}   # wrk: enough to keep one proxy worker busy without queueing for long
h2_clients=${H2_CLIENTS:-10}     # h2load: 10 connections x 10 streams = 100 requests in flight
h2_streams=${H2_STREAMS:-10}
peers=${PEERS:-direct haproxy nginx capstan capstan-rbac capstan-gateway}
pin=${PIN:-1}
(($(nproc) >= 2)) || pin=0
if ((pin)); then workers=1 proxy_cpu=(taskset -c 1) load_cpu=(taskset -c 0)
else workers=2 proxy_cpu=() load_cpu=(); fi
# Client threads (THREADS): one when pinned, as the client has one core (which it shares with the
# upstream: a second thread only adds context switches), else two, one per core.
threads=${THREADS:-$((pin ? 1 : 2))}
hz=$(getconf CLK_TCK)

# Which capstan: the one named, or the release build (as hack/bench-proxy.sh). A build that fails does not
# stop the benchmark: the Capstan row says so.
capstan="" capstan_problem=""
if [[ -n ${CAPSTAN:-} ]]; then
  capstan=$(realpath -m "$CAPSTAN")
elif [[ " $peers " == *" capstan"* ]]; then
  echo "hack/bench-http.sh: building the release capstan (hack/build-release.sh capstan)" >&2
  if bin=$(hack/build-release.sh capstan 2>/tmp/csthttp$$-build.log); then
    capstan=$bin/capstan
  else
    capstan_problem="the release build failed: $(grep -m1 'error:' /tmp/csthttp$$-build.log || tail -1 /tmp/csthttp$$-build.log)"
  fi
  rm -f /tmp/csthttp$$-build.log
fi
capstan_build="none"
if [[ -n $capstan ]]; then
  [[ -x $capstan ]] || { capstan_problem="$capstan is not an executable"; capstan=""; }
  case $capstan in
    */release/*) capstan_build="release" ;;
    *debug*) capstan_build="debug"
      echo "hack/bench-http.sh: warning: $capstan is a debug build: its figures are not Capstan's" >&2 ;;
    *) capstan_build="unknown" ;;
  esac
fi

work=$(mktemp -d /tmp/csthttp$$.XXXXXX)
chmod 755 "$work"  # nginx workers run as nobody
client="csthttp$$-client"
proxy="csthttp$$-proxy"
upstream="csthttp$$-upstream"
# The processes this script started, by pid: all are its own children, and a child keeps its pid until it
# has been waited for, so these kills reach no one else. client_pid: the client of the run in progress.
pids=() client_pid=""
cleanup() {
  local pid
  for pid in $client_pid "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -z $client_pid ]] || wait "$client_pid" 2>/dev/null || true
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Anything left in the namespaces (nginx workers of a master that died) was started by this script.
  remove_namespaces "$client" "$proxy" "$upstream"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The namespaces; every veth is created inside them, nothing in the host namespace.
make_proxy_row "$client" "$proxy" "$upstream"
# The direct path: the proxy namespace routes between its two links (this namespace's sysctl only).
ip netns exec "$proxy" sysctl -qw net.ipv4.ip_forward=1


# The upstream: nginx answering every request itself (`return`, no file), no logs, keep-alive connections
# that never end by count (nginx's default is to close one after 1,000 requests, which would put new
# connections into the figures), HTTP/1.1 on :8080 and h2c with prior knowledge on :8082.
nginx_common() {  # PREFIX: the lines every nginx here shares
  cat <<CFG
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
CFG
}
nginx_temp_paths() {  # PREFIX: temporary files in the run's folder, not in /var/lib/nginx
  printf '  %s_temp_path %s/%s;\n' client_body "$1" body proxy "$1" proxy fastcgi "$1" fastcgi uwsgi "$1" uwsgi scgi "$1" scgi
}
mkdir -p "$work/upstream" "$work/nginx"
{
  echo "worker_processes $workers;"
  nginx_common "$work/upstream"
  cat <<CFG
http {
$(nginx_temp_paths "$work/upstream")
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  default_type text/plain;
  server {
    listen 8080 reuseport;
    listen 8082 http2;
    location / { return 200 "capstan-bench\n"; }
  }
}
CFG
} >"$work/upstream/nginx.conf"
"${load_cpu[@]}" ip netns exec "$upstream" nginx -p "$work/upstream" -c "$work/upstream/nginx.conf" \
  -e "$work/upstream/error.log" -g 'daemon off;' & upstream_pid=$!; pids+=("$upstream_pid")
wait_for_port "$upstream" 198.51.100.10 8080 "$upstream_pid" && wait_for_port "$upstream" 198.51.100.10 8082 "$upstream_pid" \
  || { echo "hack/bench-http.sh: the upstream nginx did not start:" >&2; cat "$work/upstream/error.log" >&2; exit 1; }

# Per peer: its HTTP/1.1 and HTTP/2 URLs, and why it has no figures if it does not start or answer.
declare -A h1_url h2_url problem proxy_pid
h1_url[direct]=http://198.51.100.10:8080/ h2_url[direct]=http://198.51.100.10:8082/
h1_url[haproxy]=http://192.0.2.2:10001/ h2_url[haproxy]=http://192.0.2.2:10002/
h1_url[nginx]=http://192.0.2.2:10011/ h2_url[nginx]=http://192.0.2.2:10012/
h1_url[capstan]=http://192.0.2.2:10021/ h2_url[capstan]=http://192.0.2.2:10021/
h1_url[capstan-rbac]=http://192.0.2.2:10031/ h2_url[capstan-rbac]=http://192.0.2.2:10031/
h1_url[capstan-gateway]=http://192.0.2.2:10041/ h2_url[capstan-gateway]=http://192.0.2.2:10041/

# HAProxy 2.6: `mode http`, no logs. `http-reuse always` shares idle upstream connections between client
# connections (the most reuse HAProxy offers; the upstream is one trusted server); keep-alive on both
# sides is HAProxy's default in mode http. One frontend per client protocol: `proto h2` for h2c with
# prior knowledge, since a bind does not detect it. maxconn 4000: HAProxy raises its descriptor limit to
# about twice maxconn, which must stay within the hard limit (20,000 for root here).
if [[ " $peers " == *" haproxy "* ]]; then
  cat >"$work/haproxy.cfg" <<CFG
global
  nbthread $workers
  maxconn 4000
defaults
  mode http
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend h1
  bind 192.0.2.2:10001
  default_backend upstream
frontend h2
  bind 192.0.2.2:10002 proto h2
  default_backend upstream
backend upstream
  server upstream 198.51.100.10:8080
CFG
  "${proxy_cpu[@]}" ip netns exec "$proxy" haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & proxy_pid[haproxy]=$!
  pids+=("${proxy_pid[haproxy]}")
fi

# nginx as a reverse proxy: `proxy_pass` to an upstream block with `keepalive` (idle connections kept per
# worker; proxy_http_version 1.1 and an empty Connection header are what make nginx reuse them), no
# limit on requests per connection on either side, no logs. `listen ... http2` without TLS is h2c with
# prior knowledge.
if [[ " $peers " == *" nginx "* ]]; then
  {
    echo "worker_processes $workers;"
    nginx_common "$work/nginx"
    cat <<CFG
http {
$(nginx_temp_paths "$work/nginx")
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  upstream backend {
    server 198.51.100.10:8080;
    keepalive 256;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }
  server {
    listen 192.0.2.2:10011;
    listen 192.0.2.2:10012 http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CFG
  } >"$work/nginx/nginx.conf"
  "${proxy_cpu[@]}" ip netns exec "$proxy" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" \
    -e "$work/nginx/error.log" -g 'daemon off;' & proxy_pid[nginx]=$!
  pids+=("${proxy_pid[nginx]}")
fi

# Capstan: a static listener whose one filter chain is the HTTP connection manager, codec AUTO (HTTP/1.1,
# or HTTP/2 when the connection starts with its preface), an inline route sending everything to a STATIC
# cluster of the upstream, and the router filter: the smallest Envoy configuration of a reverse proxy.
# No access log, as for the peers.
if [[ " $peers " == *" capstan"* ]]; then
  cat >"$work/capstan.yaml" <<'CFG'
static_resources:
  listeners:
  - name: http_bench
    address: {socket_address: {address: 0.0.0.0, port_value: 10021}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http_bench
          codec_type: AUTO
          route_config:
            name: http_bench
            virtual_hosts:
            - name: everything
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 198.51.100.10, port_value: 8080}}}
CFG
fi

# capstan-rbac: the same, on 10031, with istiod's shape of a 20-rule ALLOW AuthorizationPolicy before the
# router: policies policy-01 … policy-20, each GET on any path for one caller range. Every request of the
# benchmark (GET / from 192.0.2.1) is allowed by the last one only: all 20 are tried, each matching the
# method and path before its range does not.
if [[ " $peers " == *" capstan-rbac "* ]]; then
  {
    sed -e 's/port_value: 10021/port_value: 10031/' -e 's/stat_prefix: http_bench/stat_prefix: http_bench_rbac/' \
      -e '/^          http_filters:$/q' "$work/capstan.yaml"
    cat <<'CFG'
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
CFG
    for i in $(seq -w 1 20); do
      if ((10#$i < 20)); then range=10.$((10#$i)).0.0; else range=192.0.2.0; fi
      cat <<CFG
                  policy-$i:
                    permissions:
                    - and_rules: {rules: [{or_rules: {rules: [{header: {name: ":method", exact_match: GET}}]}},
                                          {or_rules: {rules: [{url_path: {path: {prefix: "/"}}}]}}]}
                    principals:
                    - and_ids: {ids: [{or_ids: {ids: [{direct_remote_ip: {address_prefix: $range, prefix_len: 24}}]}}]}
CFG
    done
    sed -n '/^          - name: envoy.filters.http.router$/,$p' "$work/capstan.yaml"
  } >"$work/capstan-rbac.yaml"
fi

# capstan-gateway: the Istio ingress of issue 19, a Gateway on 10041 for every host and a VirtualService
# bound to it sending everything to the upstream (a ServiceEntry with one endpoint), served by `capstan
# control-plane` to a proxy whose bootstrap names a router node with the gateway's labels.
if [[ " $peers " == *" capstan-gateway "* ]]; then
  mkdir -p "$work/gateway-mesh"
  cat >"$work/gateway-mesh/gateway.yaml" <<'CFG'
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gateway, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 10041, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: upstream, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [bench-gateway]
  http:
  - route:
    - destination: {host: upstream.bench.svc.cluster.local, port: {number: 8080}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: bench}
spec:
  hosts: [upstream.bench.svc.cluster.local]
  ports: [{number: 8080, name: http}]
  resolution: STATIC
  endpoints: [{address: 198.51.100.10}]
CFG
  cat >"$work/capstan-gateway.yaml" <<'CFG'
node:
  id: router~192.0.2.2~gateway-bench.bench~bench.svc.cluster.local
  cluster: istio-ingressgateway.bench
  metadata: {NAMESPACE: bench, LABELS: {istio: ingressgateway}}
dynamic_resources:
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
  ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 15310}}}
CFG
  if [[ -z $capstan_problem ]]; then
    ip netns exec "$proxy" "$capstan" control-plane --config-dir "$work/gateway-mesh" --xds-address 127.0.0.1:15310 \
      >"$work/gateway-control-plane.log" 2>&1 & pids+=($!)
  fi
fi

# --concurrency: as many event loops as the others have workers. --drain-time-s 1: at the end, SIGTERM
# drains; nothing is left to drain by then, and this bounds the wait if something is.
for peer in capstan capstan-rbac capstan-gateway; do
  [[ " $peers " == *" $peer "* ]] || continue
  if [[ -n $capstan_problem ]]; then
    problem[$peer]=$capstan_problem
  else
    # The second proxy's admin, Prometheus and capture ports move aside.
    ports=()
    [[ $peer == capstan-rbac ]] && ports=(--admin-port 15100 --stats-port 15190 --outbound-port 15101 --inbound-port 15106)
    [[ $peer == capstan-gateway ]] && ports=(--admin-port 15200 --stats-port 15290 --outbound-port 15201 --inbound-port 15206)
    "${proxy_cpu[@]}" ip netns exec "$proxy" "$capstan" proxy --config "$work/$peer.yaml" --concurrency "$workers" \
      --drain-time-s 1 "${ports[@]}" >"$work/$peer.log" 2>&1 & proxy_pid[$peer]=$!
    pids+=("${proxy_pid[$peer]}")
  fi
done

# The last lines a peer logged, on one line, for its row.
log_tail() { [[ -s $1 ]] && tail -n 3 "$1" | tr '\n' ' ' | cut -c1-400 || echo "(nothing logged)"; }
log_of() { case $1 in haproxy) echo "$work/haproxy.log" ;; nginx) echo "$work/nginx/error.log" ;; capstan*) echo "$work/$1.log" ;; esac; }

# Each proxy must listen, then answer one HTTP/1.1 request with the upstream's body and a few h2c
# requests with 2xx; a proxy that does not is left out of that protocol's runs, its row saying why.
h1_probe() {
  ip netns exec "$client" python3 -c '
import sys, urllib.request
try:
    body = urllib.request.urlopen(sys.argv[1], timeout=3).read()
except Exception as error:
    sys.exit(f"HTTP/1.1 request failed: {error}")
if body != b"capstan-bench\n":
    sys.exit(f"HTTP/1.1 answer is not the upstream body: {body[:80]!r}")' "$1" 2>&1
}
h2_probe() {
  local output
  # -N 3: a connection silent for 3 s is given up, so a proxy that never answers ends the probe.
  output=$(timeout 10 ip netns exec "$client" h2load -n 20 -c 1 -m 2 -N 3 "$1" 2>&1) || true
  grep -q "20 succeeded" <<<"$output" && grep -q "status codes: 20 2xx" <<<"$output" && return 0
  output=$(grep -E 'requests:|status codes:|error|refused|onnection|timeout' <<<"$output" | head -3 | tr '\n' ' ')
  echo "h2c prior knowledge failed: ${output:-no answer within 10 s}"
  return 1
}
declare -A h1_problem h2_problem
for peer in $peers; do
  [[ -n ${problem[$peer]:-} ]] && continue
  pid=${proxy_pid[$peer]:-}
  url=${h1_url[$peer]#http://}; address=${url%%:*}; port=${url#*:}; port=${port%/}
  if [[ $peer != direct ]] && ! wait_for_port "$client" "$address" "$port" "$pid"; then
    kill -0 "$pid" 2>/dev/null && problem[$peer]="nothing listens on $address:$port after 10 s: $(log_tail "$(log_of "$peer")")" \
      || problem[$peer]="exited at start: $(log_tail "$(log_of "$peer")")"
    continue
  fi
  h1_problem[$peer]=$(h1_probe "${h1_url[$peer]}") || true
  h2_problem[$peer]=$(h2_probe "${h2_url[$peer]}") || true
  if [[ $peer != direct ]] && ! kill -0 "$pid" 2>/dev/null; then
    problem[$peer]="exited after the first requests: $(log_tail "$(log_of "$peer")")"
  fi
done
for peer in $peers; do
  for kind in h1 h2; do
    reason=${problem[$peer]:-}
    [[ -n $reason ]] || { [[ $kind == h1 ]] && reason=${h1_problem[$peer]:-} || reason=${h2_problem[$peer]:-}; }
    [[ -z $reason ]] || echo "hack/bench-http.sh: $peer, $kind: no figures: $reason" >&2
  done
done

# Measuring. A process's CPU ticks are /proc/PID/stat's utime + stime (fields 14 and 15; the command
# name before them may hold spaces, hence the sed); nginx's are its master's and its workers'.
tree() { echo "$1"; pgrep -P "$1" || true; }
ticks() { local pid; for pid in "$@"; do sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null || true; done | awk '{t += $12 + $13} END {print t + 0}'; }
status_kb() { local pid; for pid in "${@:2}"; do grep "^$1:" "/proc/$pid/status" 2>/dev/null || true; done | awk '{t += $2} END {print t + 0}'; }
# The CPU seconds of this shell's finished children (bash's `times`, second line), where the client goes
# once it has been waited for. A builtin with a redirection runs in this shell, not in a subshell.
# Sets child_cpu (a command substitution would run `times` in a subshell, which has no children yet).
children_cpu() {
  times >"$work/times"
  child_cpu=$(awk 'NR == 2 {for (i = 1; i <= 2; i++) {split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2]} print t}' "$work/times")
}

results="$work/results.jsonl"
: >"$results"
# run KIND PEER ROUND: one timed run of the client against the peer, recorded as a JSON line.
run() {
  local kind=$1 peer=$2 round=$3 reason pid procs=() upstream_procs rss=0 hwm=0
  reason=${problem[$peer]:-}
  [[ -n $reason ]] || { [[ $kind == h1 ]] && reason=${h1_problem[$peer]:-} || reason=${h2_problem[$peer]:-}; }
  pid=${proxy_pid[$peer]:-}
  if [[ -z $reason && -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
    problem[$peer]="exited during the benchmark: $(log_tail "$(log_of "$peer")")"
    reason=${problem[$peer]}
  fi
  if [[ -n $reason ]]; then
    python3 hack/bench/http_figures.py record "$kind" "$peer" "$round" "failed=$reason" >>"$results"
    return
  fi
  [[ -z $pid ]] || mapfile -t procs < <(tree "$pid")
  mapfile -t upstream_procs < <(tree "$upstream_pid")
  local proxy0 upstream0 client0 start
  proxy0=$( ((${#procs[@]})) && ticks "${procs[@]}" || echo "")
  children_cpu; client0=$child_cpu
  upstream0=$(ticks "${upstream_procs[@]}") start=$(date +%s.%N)
  grep '^cpu' /proc/stat >"$work/stat0"  # the machine's CPU use, per CPU, over the run
  rm -f "$work/h2.log"
  # A client that hangs is stopped 20 s after its time.
  if [[ $kind == h1 ]]; then
    # wrk: THREADS threads, CONNECTIONS keep-alive connections, every request the same small GET.
    "${load_cpu[@]}" timeout $((seconds + 20)) ip netns exec "$client" wrk -t "$threads" -c "$connections" \
      -d "${seconds}s" --latency --timeout 5s "${h1_url[$peer]}" >"$work/client.out" 2>&1 & client_pid=$!
  else
    # h2load: H2_CLIENTS connections with up to H2_STREAMS concurrent streams each, timed (-D) after a
    # 1 s warm-up that is not counted, each request logged for the percentiles.
    "${load_cpu[@]}" timeout $((seconds + 20)) ip netns exec "$client" h2load -t "$threads" -c "$h2_clients" \
      -m "$h2_streams" -D "$seconds" --warm-up-time=1 --log-file="$work/h2.log" "${h2_url[$peer]}" \
      >"$work/client.out" 2>&1 & client_pid=$!
  fi
  # The proxy's resident set under load: sampled in the middle of the measured period.
  if ((${#procs[@]})); then
    sleep "$(awk -v s="$seconds" -v k="$kind" 'BEGIN {print s / 2 + (k == "h2" ? 1 : 0)}')"
    rss=$(status_kb VmRSS "${procs[@]}")
  fi
  wait "$client_pid" || true
  client_pid=""
  local wall proxy1="" upstream1 client1
  wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
  ((${#procs[@]})) && { proxy1=$(ticks "${procs[@]}"); hwm=$(status_kb VmHWM "${procs[@]}"); }
  children_cpu; client1=$child_cpu
  upstream1=$(ticks "${upstream_procs[@]}")
  grep '^cpu' /proc/stat >"$work/stat1"
  # The CPU counts cover the whole run, h2load's warm-up second included (as its requests are not):
  # for h2 the per-request CPU is taken over the measured part only, scaled by seconds/(seconds+1).
  local scale=1
  [[ $kind == h1 ]] || scale=$(awk -v s="$seconds" -v w="$wall" 'BEGIN {print s / (w > s ? w : s + 1)}')
  python3 hack/bench/http_figures.py record "$kind" "$peer" "$round" client="$work/client.out" log="$work/h2.log" \
    ticks_per_s="$hz" wall_s="$wall" \
    proxy_ticks="$([[ -n $proxy1 ]] && awk -v a="$proxy0" -v b="$proxy1" -v s="$scale" 'BEGIN {printf "%d", (b - a) * s}')" \
    upstream_ticks="$(awk -v a="$upstream0" -v b="$upstream1" -v s="$scale" 'BEGIN {printf "%d", (b - a) * s}')" \
    stat0="$work/stat0" stat1="$work/stat1" scale="$scale" \
    client_cpu_s="$(awk -v a="$client0" -v b="$client1" -v s="$scale" 'BEGIN {print (b - a) * s}')" \
    rss_kb="$rss" hwm_kb="$hwm" >>"$results"
  echo "hack/bench-http.sh: round $round $kind $peer: $(tail -1 "$results" | python3 -c 'import json,sys; r = json.load(sys.stdin); print(r.get("failed") or format(r["req_per_s"], ",.0f") + " req/s")')" >&2
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
# Each round starts with the next peer, so that no peer always runs first (or right after another).
read -ra order <<<"$peers"
for round in $(seq 1 "$rounds"); do
  for kind in $kinds; do
    for i in "${!order[@]}"; do run "$kind" "${order[$(((i + round - 1) % ${#order[@]}))]}" "$round"; done
  done
done
elapsed=$(($(date +%s) - started))

capstan_version=""
[[ -z $capstan ]] || capstan_version="$capstan ($capstan_build build of $(stat -c '%y' "$capstan" | cut -d. -f1))"
if ((pin)); then placement="each proxy one worker on CPU 1; the client and the upstream nginx (one worker) share CPU 0"
else placement="nothing pinned; each proxy and the upstream 2 workers; everything shares $(nproc) CPUs"; fi
python3 hack/bench/http_figures.py summary "$results" \
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" rounds="$rounds" seconds="$seconds" pinned="$pin" placement="$placement" \
  proxy_workers="$workers" cpus="$(nproc)" wrk="-t $threads -c $connections -d ${seconds}s --latency" \
  h2load="-t $threads -c $h2_clients -m $h2_streams -D $seconds --warm-up-time=1" \
  haproxy="$(haproxy -v | head -1 | cut -d' ' -f3)" nginx="$(nginx -v 2>&1 | cut -d' ' -f3)" \
  capstan="$capstan_version" capstan_build="$capstan_build" \
  loadavg_before="$load_before" loadavg_after="$(cut -d' ' -f1-3 /proc/loadavg)" elapsed_s="$elapsed" \
  json_file="${JSON_FILE:-}"
