#!/usr/bin/env bash
# Benchmarks the control plane (needs root), release build from hack/build-release.sh, in throw-away
# namespaces: how fast a file change reaches a proxy's traffic, and a full push of SERVICES services
# to STREAMS ADS streams with the control plane's memory. See Benchmarks/ControlPlaneBenchmarks/main.swift.
# ROUNDS, STREAMS, SERVICES set the sizes (ROUNDS=0 skips the first part).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
bin=$(hack/build-release.sh 2>/dev/null)

bench=""
cleanup() {
  if [ -n "$bench" ]; then
    kill "$bench" 2>/dev/null || true
    wait "$bench" 2>/dev/null || true
    # The benchmark removes its sandboxes; if it died, stop what it started (its paths carry its pid)
    # and remove the namespaces and files that carry it.
    for child in $(pgrep -f "capstan (control-plane|proxy) .*cst${bench}x" || true); do kill "$child" 2>/dev/null || true; done
    for namespace in $(ip netns list | awk '{print $1}' | grep -E "^cst${bench}x[0-9]+-" || true); do
      ip netns delete "$namespace"
    done
    rm -rf /tmp/cst"${bench}"x*
  fi
}
trap cleanup EXIT
"$bin/ControlPlaneBenchmarks" &
bench=$!
wait "$bench"
