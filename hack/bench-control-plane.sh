#!/usr/bin/env bash
# Benchmarks the control plane (needs root), release build from hack/build-release.sh, in throw-away
# namespaces: how fast a file change reaches a proxy's traffic, and a full push of SERVICES services
# to STREAMS ADS streams with the control plane's memory. See Benchmarks/ControlPlaneBenchmarks/main.swift.
# ROUNDS, STREAMS, SERVICES set the sizes (ROUNDS=0 skips the first part).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"
hack/setup.sh
bin=$(hack/build-release.sh 2>/dev/null)

source hack/lib/benchmark.sh
run_benchmark "$bin/ControlPlaneBenchmarks" x "capstan (control-plane|proxy) .*@"
