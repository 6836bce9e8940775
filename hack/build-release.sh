#!/usr/bin/env bash
# The release build of `capstan` and the capture benchmarks: optimized, with the Swift runtime linked
# statically (a dynamically linked runtime makes every `capstan init` start about 2.5 ms slower).
# Prints the directory holding the binaries. With product names as arguments, builds only those.
set -euo pipefail
cd "$(dirname "$0")/.."
# Its own scratch folder, so a release build never waits on (or invalidates) the debug build the tests use.
flags=(-c release --static-swift-stdlib --scratch-path .build-release)
products=("$@")
((${#products[@]})) || products=(capstan CaptureBenchmarks NodeBenchmarks ControlPlaneBenchmarks AgentBenchmarks)
for product in "${products[@]}"; do
  swift build "${flags[@]}" --product "$product" >&2
done
swift build "${flags[@]}" --show-bin-path
