#!/usr/bin/env bash
# Benchmarks the agent (needs root), release build from hack/build-release.sh, in a throw-away mesh of
# namespaces: start to ready with a local control plane and CA, the agent's memory, and the latency two
# sidecars with mutual TLS add, open loop, against the direct path in the same run: over TCP, and over
# HTTP (h2load at a fixed rate to nginx; needs h2load and nginx, which hack/setup.sh installs).
# See Benchmarks/AgentBenchmarks/main.swift. ROUNDS, SECONDS, RATE set the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
hack/setup.sh
bin=$(hack/build-release.sh 2>/dev/null)

source hack/lib/benchmark.sh
run_benchmark "$bin/AgentBenchmarks" x "capstan (control-plane|agent|proxy) .*@"
