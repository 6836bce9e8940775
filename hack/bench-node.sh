#!/usr/bin/env bash
# Benchmarks node mode (needs root), release build from hack/build-release.sh. Everything happens in a
# throw-away node sandbox: a "node" network namespace, pod namespaces, the reference bridge + host-local
# CNI plugins with capstan-cni chained after them, and `capstan node-agent` in the node namespace.
# See Benchmarks/NodeBenchmarks/main.swift for what is timed. PODS, SEQUENTIAL, REPAIRS set the counts.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
bin=$(hack/build-release.sh 2>/dev/null)

bench=""
cleanup() {
  if [ -n "$bench" ]; then
    kill "$bench" 2>/dev/null || true
    wait "$bench" 2>/dev/null || true
    # The sandbox removes itself; if the benchmark died, stop the agent it started (its paths carry the
    # benchmark's pid) and remove the namespaces and files that carry it.
    for agent in $(pgrep -f "node-agent --socket /tmp/cst${bench}n" || true); do kill "$agent" 2>/dev/null || true; done
    for namespace in $(ip netns list | awk '{print $1}' | grep -E "^cst${bench}n[0-9]+-" || true); do
      ip netns delete "$namespace"
    done
    rm -rf /tmp/cst"${bench}"n*
  fi
}
trap cleanup EXIT
"$bin/NodeBenchmarks" &
bench=$!
wait "$bench"
