#!/usr/bin/env bash
# The main job: a small service mesh in a sandbox of network namespaces (needs root).
#
# A control plane (`capstan control-plane`, also the mesh CA), a client pod and `payments` v1 and v2
# pods, each captured by `capstan init` and running `capstan agent`, which gets the pod's certificate
# from the CA and runs the proxy. The 90/10 VirtualService (TCP on 9080, HTTP on 9081) and STRICT mutual
# TLS are applied; the demo sends traffic and prints the splits (HTTP per request on keep-alive
# connections, with Istio's request metrics), the peer identities each side verified, a plaintext client being
# refused, and `capstan status` for a pod. Documentation addresses only, no route out; everything it
# creates (namespaces, processes, files) is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
source hack/lib/sandbox.sh

hack/setup.sh
swift build --product capstan >/dev/null
capstan="$(swift build --show-bin-path)/capstan"

run_id="capstan-demo-$$"
dir="/tmp/$run_id"
hub="$run_id-hub"
namespaces=("$hub")
cleanup() {
  remove_namespaces "${namespaces[@]}"
  rm -rf "$dir"
}
trap cleanup EXIT

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }
in_pod() { local pod=$1; shift; ip netns exec "$run_id-$pod" "$@"; }
http() { in_pod "$1" python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$2"; }

step "Sandbox: one bridge, a pod per workload (192.0.2.0/24); the service VIP 198.51.100.200:9080 is only captured"
make_hub "$hub"
index=0
for pod in istiod:192.0.2.2 client:192.0.2.1 payments-v1:192.0.2.10 payments-v2:192.0.2.11; do
  add_pod "$hub" "$run_id-${pod%%:*}" "${pod##*:}" "p$index"
  namespaces+=("$run_id-${pod%%:*}")
  index=$((index + 1))
  echo "  ${pod%%:*} ${pod##*:}"
done

step "The mesh, as Istio YAML: payments v1/v2 under service account payments, 90/10 canary, STRICT mTLS"
mkdir -p "$dir/mesh" "$dir/ca"
cat > "$dir/mesh/payments.yaml" <<'YAML'
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [payments.shop.svc.cluster.local]
  addresses: [198.51.100.200]
  ports: [{number: 9080, name: tcp-payments, protocol: TCP}, {number: 9081, name: http-payments}]
  resolution: STATIC
  workloadSelector: {labels: {app: payments}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: payments-v1, namespace: shop}
spec:
  address: 192.0.2.10
  labels: {app: payments, version: v1, security.istio.io/tlsMode: istio}
  serviceAccount: payments
  ports: {tcp-payments: 8080, http-payments: 8081}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: payments-v2, namespace: shop}
spec:
  address: 192.0.2.11
  labels: {app: payments, version: v2, security.istio.io/tlsMode: istio}
  serviceAccount: payments
  ports: {tcp-payments: 8080, http-payments: 8081}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments, namespace: shop}
spec:
  host: payments
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments, namespace: shop}
spec:
  hosts: [payments]
  tcp:
  - match: [{port: 9080}]
    route:
    - {destination: {host: payments, subset: v1, port: {number: 9080}}, weight: 90}
    - {destination: {host: payments, subset: v2, port: {number: 9080}}, weight: 10}
  http:
  - route:
    - {destination: {host: payments, subset: v1}, weight: 90}
    - {destination: {host: payments, subset: v2}, weight: 10}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
YAML
run "$capstan" control-plane --validate "$dir/mesh"

step "Control plane and CA (a root generated on first start; callers known by token)"
printf '%s shop/client\n%s shop/payments\n' "demo-token-client-0123456789" "demo-token-payments-0123456789" > "$dir/ca-tokens"
chmod 600 "$dir/ca-tokens"
ip netns exec "$run_id-istiod" "$capstan" control-plane --config-dir "$dir/mesh" --xds-address 192.0.2.2:15010 \
  --ca-dir "$dir/ca" --ca-tokens "$dir/ca-tokens" --secure-xds-address 192.0.2.2:15012 > "$dir/control-plane.log" 2>&1 &
disown $!
for _ in $(seq 1 100); do grep -q "the CA over TLS" "$dir/control-plane.log" && break; sleep 0.1; done
grep "capstan control-plane:" "$dir/control-plane.log" | sed 's/^/  /'
# The root goes to the pods as istiod's istio-ca-root-cert ConfigMap would.
cp "$dir/ca/root-cert.pem" "$dir/root-cert.pem"

# A payments application: on 8080 says which version it is, then echoes; on 8081 answers HTTP with it.
app='import http.server, socket, sys, threading
version = "payments " + sys.argv[1]
class Version(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = version.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *arguments):
        pass
web = http.server.ThreadingHTTPServer(("0.0.0.0", 8081), Version)
threading.Thread(target=web.serve_forever, daemon=True).start()
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 8080)); server.listen(128)
def serve(connection):
    with connection:
        connection.sendall((version + "\n").encode())
        while data := connection.recv(65536): connection.sendall(data)
while True: threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()'

step "Each pod: capture with istio-iptables' flags, then the agent (certificate, xDS relay, proxy)"
declare -A agents
for pod in client:client:192.0.2.1 payments-v1:payments:192.0.2.10 payments-v2:payments:192.0.2.11; do
  IFS=: read -r name account address <<< "$pod"
  "$capstan" init -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020 \
    --network-namespace "/run/netns/$run_id-$name" | sed 's/^/  /'
  mkdir -p "$dir/$name/sockets" "$dir/$name/certs"
  echo "demo-token-$account-0123456789" > "$dir/$name/token"
  chown -R 1337:1337 "$dir/$name"
  chmod 600 "$dir/$name/token"
  if [ "$name" != client ]; then ip netns exec "$run_id-$name" python3 -c "$app" "${name#payments-}" & disown $!; fi
  ip netns exec "$run_id-$name" env POD_NAME="$name-7d9f" POD_NAMESPACE=shop INSTANCE_IP="$address" SERVICE_ACCOUNT="$account" \
    PROXY_CONFIG='{"discoveryAddress": "192.0.2.2:15012"}' OUTPUT_CERTS="$dir/$name/certs" MINIMUM_DRAIN_DURATION=1s \
    "$capstan" agent --socket-dir "$dir/$name/sockets" --token-path "$dir/$name/token" --root-cert "$dir/root-cert.pem" \
    > "$dir/$name/agent.log" 2>&1 &
  agents[$name]=$!
  disown $!
done
for name in client payments-v1 payments-v2; do
  started=$(date +%s%N)
  in_pod "$name" "$capstan" wait --timeoutSeconds 20 --periodMillis 20 >/dev/null
  printf '  %-12s ready in %4d ms: %s\n' "$name" $((($(date +%s%N) - started) / 1000000)) \
    "$(openssl x509 -in "$dir/$name/certs/cert-chain.pem" -noout -ext subjectAltName | grep -o 'URI:.*')"
done

step "1,000 connections from the client application (uid 1000) to payments 198.51.100.200:9080"
in_pod client setpriv --reuid=1000 --regid=1000 --clear-groups /usr/bin/python3 -c '
import collections, socket
seen = collections.Counter()
for _ in range(1000):
    with socket.create_connection(("198.51.100.200", 9080), timeout=5) as connection:
        seen[connection.makefile().readline().strip()] += 1
for version, count in sorted(seen.items()):
    print(f"  {version}: {count:4d} ({count / 10:.1f} %)")'

step "1,000 HTTP requests on 10 keep-alive connections to payments:9081 (HTTP by its port name): split per request"
in_pod client setpriv --reuid=1000 --regid=1000 --clear-groups /usr/bin/python3 -c '
import collections, http.client
seen, mixed = collections.Counter(), 0
for _ in range(10):
    connection, versions = http.client.HTTPConnection("198.51.100.200", 9081, timeout=5), set()
    for _ in range(100):
        connection.request("GET", "/", headers={"host": "payments"})
        version = connection.getresponse().read().decode()
        seen[version] += 1
        versions.add(version)
    mixed += len(versions) > 1
    connection.close()
for version, count in sorted(seen.items()):
    print(f"  {version}: {count:4d} ({count / 10:.1f} %)")
print(f"  connections that saw both versions: {mixed} of 10")'
echo "  Istio's request metrics of the client's sidecar:"
http client http://127.0.0.1:15020/stats/prometheus | python3 -c '
import re, sys
for line in sys.stdin:
    if line.startswith("istio_requests_total{"):
        labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", line))
        print("    istio_requests_total", " ".join(f"{key}={labels[key]}" for key in
              ("reporter", "destination_service", "destination_principal", "response_code") if key in labels), "=", line.split()[-1])'

step "Identities each side's proxy verified (Istio's standard metrics, from the agents' merged :15020)"
http client http://127.0.0.1:15020/stats/prometheus | grep '^istio_tcp_connections_opened_total' | sed 's/^/  client     /'
for name in payments-v1 payments-v2; do
  http "$name" http://127.0.0.1:15020/stats/prometheus | grep '^istio_tcp_connections_opened_total' | sed "s/^/  $name /"
done

step "STRICT: a plaintext client without a sidecar (the hub) is refused by payments-v1's proxy"
ip netns exec "$hub" python3 -c '
import socket
with socket.create_connection(("192.0.2.10", 8080), timeout=5) as connection:
    connection.sendall(b"hello in plaintext\n")
    try:
        answer = connection.recv(100)
        print("  answered:", answer.decode().strip() if answer else "nothing: the proxy closed the connection (no filter chain for plaintext)")
    except ConnectionResetError:
        print("  nothing: the proxy reset the connection")'

step "capstan status for the client pod: the rules from the kernel, and the sidecar from its agent"
run "$capstan" status --network-namespace "/run/netns/$run_id-client" | sed -n '1,12p'
echo "  …"
http client http://127.0.0.1:15021/healthz/ready | sed 's/^/  readiness: /'

step "Shutdown: SIGTERM to payments-v1's agent drains inbound, then exits 0"
agent=${agents[payments-v1]}
kill -TERM "$agent"
for _ in $(seq 1 100); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
grep -E "draining|drained|stopped" "$dir/payments-v1/agent.log" | cut -c1-160 | sed 's/^/  /' || true
kill -0 "$agent" 2>/dev/null && echo "  (still running)" || echo "  agent exited"
