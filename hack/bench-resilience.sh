#!/usr/bin/env bash
# Benchmarks the resilience features of `capstan proxy` (issue 17), in one run (needs root):
#   cost     requests per second through a route with Istio's default retry policy to a cluster with
#            outlier detection and circuit breakers, against a plain route and cluster in the same proxy,
#            each in front of the same healthy nginx: the two take turns, ROUNDS times (default 3),
#            SECONDS_PER_RUN each (default 5), wrk with CONNECTIONS (50) keep-alive connections; the
#            figure is the ratio of the medians (target >= 0.95).
#   success  the share of REQUESTS (default 100,000) requests answered 2xx when the upstream answers 10 %
#            of them 503 at random (nginx's split_clients on its $request_id): through Istio's default
#            retry policy (2 retries on connect-failure, refused-stream, unavailable, cancelled and
#            retriable status 503, on other hosts), and without retries, h2load --h1 (target >= 99.9 %).
#
# Three throw-away namespaces joined by two veth pairs, documentation addresses, no route out:
#   client    192.0.2.1        wrk, h2load
#   proxy     192.0.2.2 | 198.51.100.1   capstan proxy, one event loop, pinned to CPU 1 (PIN=0: not)
#   upstream  198.51.100.10    nginx: a healthy server on :8080 and :8081, one failing 10 % on :8090 and :8091
# Prints a table, then the figures as JSON between BEGIN/END BENCH-RESILIENCE FIGURES lines.
# CAPSTAN=/path/to/capstan, else the release build from hack/build-release.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
source hack/lib/sandbox.sh
hack/setup.sh >&2
for tool in nginx wrk h2load; do
  command -v "$tool" >/dev/null || { echo "hack/bench-resilience.sh: $tool is missing (hack/setup.sh installs it)" >&2; exit 1; }
done

seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-50}
requests=${REQUESTS:-100000}
pin=${PIN:-1}
(($(nproc) >= 2)) || pin=0
if ((pin)); then proxy_cpu=(taskset -c 1) load_cpu=(taskset -c 0); else proxy_cpu=() load_cpu=(); fi

if [[ -n ${CAPSTAN:-} ]]; then
  capstan=$(realpath -m "$CAPSTAN")
else
  echo "hack/bench-resilience.sh: building the release capstan (hack/build-release.sh capstan)" >&2
  capstan=$(hack/build-release.sh capstan)/capstan
fi
[[ -x $capstan ]] || { echo "hack/bench-resilience.sh: $capstan is not an executable" >&2; exit 1; }

work=$(mktemp -d /tmp/cstres$$.XXXXXX)
chmod 755 "$work"  # nginx workers run as nobody
client="cstres$$-client" proxy="cstres$$-proxy" upstream="cstres$$-upstream"
# The processes this script started, by pid (its own children).
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  remove_namespaces "$client" "$proxy" "$upstream"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_proxy_row "$client" "$proxy" "$upstream"

# The upstream: healthy servers, and servers that answer a random 10 % of requests 503.
cat >"$work/nginx.conf" <<CFG
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $work/body; proxy_temp_path $work/proxy; fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  default_type text/plain;
  split_clients "\$request_id" \$failing { 10% 1; * 0; }
  server {
    listen 8080; listen 8081;
    location / { return 200 "capstan-bench\n"; }
  }
  server {
    listen 8090; listen 8091;
    location / {
      if (\$failing) { return 503 "failing\n"; }
      return 200 "capstan-bench\n";
    }
  }
}
CFG
"${load_cpu[@]}" ip netns exec "$upstream" nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
for port in 8080 8081 8090 8091; do
  wait_for_port "$upstream" 198.51.100.10 "$port" || { echo "hack/bench-resilience.sh: nginx did not start:" >&2; cat "$work/nginx-error.log" >&2; exit 1; }
done

# The proxy: four listeners, each with one route to a cluster of two endpoints (two ports of the upstream):
#   10021 plain: no retry policy, round robin, no outlier detection
#   10022 guarded: Istio's default retry policy, outlier detection as Istio's DestinationRule example, and
#         istiod's circuit-breaker threshold
#   10023 guarded, to the failing servers        10024 plain, to the failing servers
listener() {  # PORT NAME CLUSTER RETRIES(0|1)
  cat <<CFG
  - name: $2
    address: {socket_address: {address: 0.0.0.0, port_value: $1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $2
          route_config:
            name: $2
            virtual_hosts:
            - name: everything
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: $3
CFG
  if (($4)); then
    cat <<CFG
                  retry_policy:
                    retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes
                    num_retries: 2
                    retriable_status_codes: [503]
                    retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}]
                    host_selection_retry_max_attempts: 5
CFG
  fi
  cat <<CFG
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
CFG
}
cluster() {  # NAME FIRST_PORT GUARDED(0|1)
  cat <<CFG
  - name: $1
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: $1
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 198.51.100.10, port_value: $2}}}
        - endpoint: {address: {socket_address: {address: 198.51.100.10, port_value: $(($2 + 1))}}}
CFG
  if (($3)); then
    cat <<CFG
    circuit_breakers:
      thresholds:
      - {max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true}
    outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 50, enforcing_success_rate: 0}
CFG
  fi
}
{
  echo "static_resources:"
  echo "  listeners:"
  listener 10021 plain plain 0
  listener 10022 guarded guarded 1
  listener 10023 guarded_failing guarded_failing 1
  listener 10024 plain_failing plain_failing 0
  echo "  clusters:"
  cluster plain 8080 0
  cluster guarded 8080 1
  cluster guarded_failing 8090 1
  cluster plain_failing 8090 0
} >"$work/capstan.yaml"
"${proxy_cpu[@]}" ip netns exec "$proxy" "$capstan" proxy --config "$work/capstan.yaml" --concurrency 1 --drain-time-s 1 \
  >"$work/capstan.log" 2>&1 & pids+=($!)
for port in 10021 10022 10023 10024; do
  wait_for_port "$proxy" 192.0.2.2 "$port" || { echo "hack/bench-resilience.sh: capstan did not start:" >&2; cat "$work/capstan.log" >&2; exit 1; }
done
if grep -q "not acted on" "$work/capstan.log"; then
  echo "hack/bench-resilience.sh: note: the proxy does not act on all of this configuration:" >&2
  grep "not acted on" "$work/capstan.log" >&2
fi

# cost: the two routes take turns; requests per second from wrk.
run_wrk() {  # PORT
  "${load_cpu[@]}" ip netns exec "$client" wrk -t1 -c"$connections" -d"${seconds}s" "http://192.0.2.2:$1/" \
    | awk '/Requests\/sec/ { print $2 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ip netns exec "$client" wrk -t1 -c"$connections" -d1s http://192.0.2.2:10021/ >/dev/null  # warm-up
ip netns exec "$client" wrk -t1 -c"$connections" -d1s http://192.0.2.2:10022/ >/dev/null
plain_runs=() guarded_runs=()
for round in $(seq 1 "$rounds"); do
  plain_runs+=("$(run_wrk 10021)")
  guarded_runs+=("$(run_wrk 10022)")
  echo "hack/bench-resilience.sh: round $round: plain ${plain_runs[-1]} req/s, guarded ${guarded_runs[-1]} req/s" >&2
done
plain=$(printf '%s\n' "${plain_runs[@]}" | median)
guarded=$(printf '%s\n' "${guarded_runs[@]}" | median)
ratio=$(awk -v g="$guarded" -v p="$plain" 'BEGIN { printf "%.3f", g / p }')

# success: h2load --h1 counts the statuses.
statuses() {  # PORT -> "2xx 5xx"
  "${load_cpu[@]}" ip netns exec "$client" h2load --h1 -n "$requests" -c "$connections" "http://192.0.2.2:$1/" \
    | awk '/^status codes:/ { gsub(",", ""); print $3, $9 }' | head -1
}
read -r retried_ok retried_failed < <(statuses 10023)
read -r bare_ok bare_failed < <(statuses 10024)
share() { awk -v ok="$1" -v n="$requests" 'BEGIN { printf "%.3f", 100 * ok / n }'; }
retried=$(share "$retried_ok")
bare=$(share "$bare_ok")
retries=$(ip netns exec "$proxy" bash -c "exec 3<>/dev/tcp/127.0.0.1/15000; printf 'GET /stats HTTP/1.0\r\n\r\n' >&3; cat <&3" \
  | awk -F': ' '$1 == "cluster.guarded_failing.upstream_rq_retry" { print $2 }')

printf '\n%-58s %12s\n' "" "capstan"
printf '%-58s %12s\n' "req/s, plain route" "$plain" "req/s, retry policy + outlier detection + breakers" "$guarded"
printf '%-58s %12s %s\n' "ratio (target >= 0.95)" "$ratio" "" \
  "2xx share, 10 % failing upstream, Istio's default retries" "$retried %" "(target >= 99.9 %; ${retries:-?} retries)" \
  "2xx share, 10 % failing upstream, no retries" "$bare %" ""
echo "BEGIN BENCH-RESILIENCE FIGURES"
printf '{"rounds": %d, "seconds": %d, "connections": %d, "plain_rps": %s, "guarded_rps": %s, "ratio": %s, ' \
  "$rounds" "$seconds" "$connections" "$plain" "$guarded" "$ratio"
printf '"requests": %d, "retried_2xx_percent": %s, "retried_5xx": %s, "retries": %s, "bare_2xx_percent": %s, "bare_5xx": %s}\n' \
  "$requests" "$retried" "${retried_failed:-0}" "${retries:-0}" "$bare" "${bare_failed:-0}"
echo "END BENCH-RESILIENCE FIGURES"
