#!/usr/bin/env bash
# Installs what building, testing and benchmarking Capstan needs from Debian, if it is missing.
set -euo pipefail

packages=(
  libnftables-dev   # libnftables: in-process nftables transactions
  libmnl-dev        # libmnl: rtnetlink (policy routing)
  libyaml-dev       # libyaml: the control plane's Istio-style YAML
  libre2-dev        # RE2: Envoy's safe_regex semantics for HTTP route matching and rewrites (CRE2 wraps its C++ API)
  pkg-config        # SwiftPM finds both through pkg-config
  iproute2          # tests and demo build throw-away network namespaces with `ip netns`
  nftables          # the demo edits a rule by hand with `nft`, as an operator would
  iptables          # benchmark peer: iptables-nft-restore / ip6tables-nft-restore
  hyperfine         # benchmark driver
  nghttp2-client    # nghttp (an HTTP/2 client for the HTTP tests) and h2load (HTTP/2 load generator for benchmarks)
  wrk               # HTTP/1.1 load generator for the HTTP benchmarks
  nginx             # benchmark peer: a reverse proxy to compare with; only ever started by a benchmark, in its namespace
  haproxy           # benchmark peer: HTTP (`mode http`) and TCP proxy, only ever started by a benchmark, in its namespace
  python3           # the demo's HTTP server and client, benchmark summaries
  python3-pip       # installs kubernetes-validate (manifest checks) from PyPI
  openssl           # tests make throw-away CAs and certificates
  containernetworking-plugins  # the reference CNI plugins (bridge, host-local) node-mode tests chain after
  protobuf-compiler # protoc: hack/check-proto-subset.py compiles proto/ to compare it with Envoy's and Istio's
  libprotobuf-dev   # google/protobuf/*.proto (any, struct, wrappers), which protoc only recommends
  umoci             # hack/build-image.sh: the OCI image, FROM scratch, without a container daemon
  ca-certificates   # the CA bundle the image carries
  util-linux        # unshare: hack/build-image.sh --check runs the image's binary in a mount namespace of its own
  binutils          # readelf: hack/build-image.sh finds the binary's program interpreter
  bind9-dnsutils    # dig: the DNS proxy tests check its answers as an operator would read them
  dnsmasq-base      # the DNS tests' outside-world nameserver, only ever started by a test in its namespace (no service)
  dnsperf           # hack/bench-dns.sh: rate-limited DNS load and latency
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
  echo "hack/setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages that ship a daemon (nginx, haproxy) start it from their postinst through invoke-rc.d or
  # deb-systemd-invoke, which both ask policy-rc.d first. Benchmarks start these peers themselves, in their
  # own namespaces, so nothing may start them as a system service: without a policy of the machine's own,
  # one that refuses every start (101) is in place for the install and removed after it.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# hack/setup.sh: no service starts while it installs packages.\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Under systemd the unit is still enabled for the next boot: disable it, for the daemons installed just now.
  if [[ -d /run/systemd/system ]]; then
    for package in nginx haproxy; do
      [[ " ${missing[*]} " == *" $package "* ]] && systemctl disable --quiet "$package.service" 2>/dev/null || true
    done
  fi
fi

# From PyPI: the Kubernetes schema check of deploy/ (hack/validate-manifests.sh), and Envoy's own
# generated protos (xds-protos), which the wire-compatibility tests and hack/check-proto-subset.py use.
pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}
if ! command -v kubernetes-validate >/dev/null && ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "hack/setup.sh: installing kubernetes-validate from PyPI"
  pip_install kubernetes-validate
fi
if ! python3 -c 'import envoy.service.discovery.v3.ads_pb2, grpc' 2>/dev/null; then
  echo "hack/setup.sh: installing xds-protos and grpcio from PyPI"
  pip_install xds-protos grpcio
fi
# A CA we did not write, for the agent's interoperability test: Istio's ca.proto compiled by grpcio-tools,
# certificates signed by pyca/cryptography.
if ! python3 -c 'import grpc_tools.protoc, cryptography.x509' 2>/dev/null; then
  echo "hack/setup.sh: installing grpcio-tools and cryptography from PyPI"
  pip_install grpcio-tools cryptography
fi
# Real HTTP peers for the HTTP end-to-end tests and benchmarks (Tests/EndToEndTests/Peers/http_*.py): from
# PyPI rather than Debian's python3-* packages, so they land in the python3 the tests run (which need not
# be Debian's), at versions with the APIs used (websockets' sync client: 11 and later).
#   hypercorn  the upstream application server: HTTP/1.1 (h11), HTTP/2 with prior knowledge (h2) and
#              WebSocket (wsproto) on one port;
#   httpx[http2]  the HTTP/1.1 and HTTP/2 client (httpcore, h2);
#   websockets    the WebSocket client.
if ! python3 -c 'import hypercorn.asyncio, httpx, h2, websockets.sync.client' 2>/dev/null; then
  echo "hack/setup.sh: installing hypercorn, httpx[http2] and websockets from PyPI"
  pip_install hypercorn 'httpx[http2]' 'websockets>=11'
fi
