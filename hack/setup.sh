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
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
  echo "hack/setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
