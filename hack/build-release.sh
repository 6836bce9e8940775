#!/usr/bin/env bash
# The release build of `capstan` and the capture benchmarks: optimized, with the Swift runtime linked
# statically (a dynamically linked runtime makes every `capstan init` start about 2.5 ms slower).
# Prints the directory holding the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release --static-swift-stdlib)
for product in capstan CaptureBenchmarks NodeBenchmarks ControlPlaneBenchmarks AgentBenchmarks; do
  swift build "${flags[@]}" --product "$product" >&2
done
swift build "${flags[@]}" --show-bin-path
