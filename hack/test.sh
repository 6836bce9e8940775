#!/usr/bin/env bash
# The test command: unit tests and end-to-end tests in throw-away network namespaces (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "hack/test.sh: the end-to-end tests create network namespaces and nftables rules: run as root" >&2
  exit 1
fi
hack/setup.sh

# Namespaces left behind by a test process that died (names carry its pid): ours only, dead owners only.
for namespace in $(ip netns list | awk '{print $1}' | grep -E '^cst[0-9]+[xn][0-9]+-' || true); do
  owner=${namespace#cst}; owner=${owner%%[xn]*}
  if ! kill -0 "$owner" 2>/dev/null; then
    # A node agent that test process started (its paths carry the owner's pid) goes with it.
    for agent in $(pgrep -f "node-agent --socket /tmp/cst${owner}n" || true); do kill "$agent" 2>/dev/null || true; done
    ip netns delete "$namespace"
    rm -rf "/tmp/cst${owner}n"* "/tmp/cst${owner}x"*
  fi
done

hack/validate-manifests.sh
python3 hack/check-proto-subset.py

swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Two runs: the unit tests, in parallel, then the end-to-end tests. The end-to-end tests block their
# threads (sockets, child processes); beside them, the unit tests that time async work would be
# starved of the concurrency pool's threads on a two-core machine.
status=0
for selection in "--skip EndToEndTests" "--filter EndToEndTests"; do
  set +e
  # shellcheck disable=SC2086
  swift test --skip-build --disable-xctest $selection 2>&1 | tee -a "$log"
  run_status=${PIPESTATUS[0]}
  set -e
  [ "$run_status" = 0 ] || status=$run_status
done

# A plain summary line from Swift Testing's own reports.
total=$(grep -oE 'Test run with [0-9]+ tests?' "$log" | grep -oE '[0-9]+' | awk '{ sum += $1 } END { if (NR) print sum }')
failed=$(grep -cE '^✘ Test [^r].* failed' "$log" || true)
if [ -n "$total" ]; then
  echo "swift-testing: $((total - failed)) passed, $failed failed"
fi
exit "$status"
