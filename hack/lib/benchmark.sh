# Sourced by the benchmark scripts: runs a benchmark from the release build and cleans up after it
# whatever happens. Its sandboxes name their namespaces and /tmp files cst<PID><KIND>… (KIND: x for
# Sandbox, n for NodeSandbox); if the benchmark dies, the capstan processes it started (found by
# PATTERN, a regular expression in which @ stands for cst<PID><KIND>), its namespaces and its files go.
#
#   run_benchmark BINARY KIND PATTERN
run_benchmark() {
  # Globals: the EXIT trap runs after this function has returned.
  bench="" bench_kind=$2 bench_pattern=$3
  cleanup_benchmark() {
    [ -n "$bench" ] || return 0
    kill "$bench" 2>/dev/null || true
    wait "$bench" 2>/dev/null || true
    local tag="cst${bench}${bench_kind}" child namespace
    for child in $(pgrep -f "${bench_pattern//@/$tag}" || true); do kill "$child" 2>/dev/null || true; done
    for namespace in $(ip netns list | awk '{print $1}' | grep -E "^${tag}[0-9]+-" || true); do
      ip netns delete "$namespace"
    done
    rm -rf /tmp/"${tag}"*
  }
  trap cleanup_benchmark EXIT
  "$1" &
  bench=$!
  wait "$bench"
}
