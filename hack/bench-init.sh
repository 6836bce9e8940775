#!/usr/bin/env bash
# Benchmarks `capstan init` (needs root), as built by hack/build-release.sh. All work happens in throw-away network namespaces.
#
# 1. Whole process in a fresh namespace: `capstan init` against istio-init's pair
#    `iptables-nft-restore --noflush` + `ip6tables-nft-restore --noflush` loading the same sidecar
#    ruleset (hack/bench/istio-sidecar-v{4,6}.rules), in the same run; medians and their ratio.
#    Timed beside them: a minimal C program running the same nftables script through libnftables (the
#    floor for any whole-process libnftables apply), and `capstan init --dry-run` (the Swift process
#    and the rendering, no kernel work).
# 2. The in-process apply the node agent uses (enter namespace, new libnftables context, one
#    transaction), over 100 fresh namespaces: median and p90.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
hack/setup.sh
runs=${RUNS:-80}

bin=$(hack/build-release.sh 2>/dev/null)
work=$(mktemp -d)
gcc -O2 -o "$work/nft-apply-floor" hack/bench/nft-apply-floor.c -lnftables
# The script capstan applies in a fresh namespace: create the table and its chains in one transaction.
{ echo "create table inet capstan"; "$bin/capstan" init --dry-run | sed -n '/^table/,$p'; } > "$work/capstan.nft"

prefix="cstbench$$"
namespaces=()
cleanup() {
  for namespace in "${namespaces[@]}"; do ip netns delete "$namespace" 2>/dev/null || true; done
  rm -rf "${work:-}"
}
trap cleanup EXIT

fresh="$prefix-fresh"
namespaces+=("$fresh")
ip netns add "$fresh"
renew="ip netns delete $fresh; ip netns add $fresh"
results="$work/results.json"

hyperfine -N --warmup 5 --runs "$runs" --export-json "$results" \
  --prepare "sh -c '$renew'" \
  -n "capstan init" "nsenter --net=/run/netns/$fresh sh -c '$bin/capstan init >/dev/null'" \
  --prepare "sh -c '$renew'" \
  -n "iptables-nft-restore + ip6tables-nft-restore" \
  "nsenter --net=/run/netns/$fresh sh -c 'iptables-nft-restore --noflush hack/bench/istio-sidecar-v4.rules && ip6tables-nft-restore --noflush hack/bench/istio-sidecar-v6.rules'" \
  --prepare "sh -c '$renew'" \
  -n "libnftables floor (C)" "nsenter --net=/run/netns/$fresh sh -c '$work/nft-apply-floor $work/capstan.nft'" \
  --prepare "sh -c '$renew'" \
  -n "capstan init --dry-run" "nsenter --net=/run/netns/$fresh sh -c '$bin/capstan init --dry-run >/dev/null'" \
  --prepare "sh -c '$renew'" \
  -n "nsenter + sh" "nsenter --net=/run/netns/$fresh sh -c 'true'"

python3 - "$results" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
ours, peer = results["capstan init"], results["iptables-nft-restore + ip6tables-nft-restore"]
print(f"whole process, fresh namespace: capstan init median {ours['median']*1000:.2f} ms, "
      f"iptables-nft-restore pair median {peer['median']*1000:.2f} ms, ratio {ours['median']/peer['median']:.2f}")
print("  beside them: " + ", ".join(f"{name} {results[name]['median']*1000:.2f} ms"
                                    for name in ["libnftables floor (C)", "capstan init --dry-run", "nsenter + sh"]))
PY

paths=()
for i in $(seq 1 100); do
  namespace="$prefix-$i"
  namespaces+=("$namespace")
  ip netns add "$namespace"
  paths+=("/run/netns/$namespace")
done
echo -n "in-process apply, 100 fresh namespaces: "
"$bin/CaptureBenchmarks" "${paths[@]}" | tr '\n' ' '
echo
