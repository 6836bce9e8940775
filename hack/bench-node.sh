#!/usr/bin/env bash
# Benchmarks node mode (needs root), release build from hack/build-release.sh. Everything happens in a
# throw-away node sandbox: a "node" network namespace, pod namespaces, the reference bridge + host-local
# CNI plugins with capstan-cni chained after them, and `capstan node-agent` in the node namespace.
# See Benchmarks/NodeBenchmarks/main.swift for what is timed. PODS, SEQUENTIAL, REPAIRS set the counts.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
hack/setup.sh
bin=$(hack/build-release.sh 2>/dev/null)

source hack/lib/benchmark.sh
run_benchmark "$bin/NodeBenchmarks" n "node-agent --socket /tmp/@"
