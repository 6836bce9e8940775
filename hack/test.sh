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
    rm -rf "/tmp/cst${owner}n"*
  fi
done

hack/validate-manifests.sh
python3 hack/check-proto-subset.py

swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift test --skip-build --disable-xctest 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# A plain summary line from Swift Testing's own report.
total=$(grep -oE 'Test run with [0-9]+ tests?' "$log" | grep -oE '[0-9]+' | tail -1 || true)
failed=$(grep -cE '^✘ Test [^r].* failed' "$log" || true)
if [ -n "$total" ]; then
  echo "swift-testing: $((total - failed)) passed, $failed failed"
fi
exit "$status"
