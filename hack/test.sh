#!/usr/bin/env bash
# The test command: unit tests and end-to-end tests in throw-away network namespaces (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/root.sh
require_root "$@"

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

# The release binary: Foundation-free (no Foundation, no ICU), and packaged as the image a cluster runs,
# which is checked from its own root filesystem.
release=$(hack/build-release.sh capstan)
hack/check-foundation-free.sh "$release/capstan"
image=$(mktemp -d)
hack/build-image.sh --binary "$release/capstan" --out "$image/oci" --check
rm -rf "$image"

swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Two runs: the unit tests, in parallel, then the end-to-end tests. The end-to-end tests block their
# threads (sockets, child processes); beside them, the unit tests that time async work would be
# starved of the concurrency pool's threads on a two-core machine.
# Each run has a deadline (TEST_DEADLINE, default 15 minutes): a test that hangs is stopped with the
# run and named as a failure, instead of hanging CI. The test bundle runs as timeout's own child (as
# `swift test` runs it, but without a runner in between that would outlive the deadline and hold back
# the output), uncoloured, so the results read the same in a log as on a terminal.
deadline=${TEST_DEADLINE:-15m}
tests="$(swift build --show-bin-path)/capstanPackageTests.xctest"
status=0
for selection in "--skip EndToEndTests" "--filter EndToEndTests"; do
  run_log=$(mktemp)
  set +e
  # shellcheck disable=SC2086
  NO_COLOR=1 timeout --kill-after=30s "$deadline" "$tests" --testing-library swift-testing $selection 2>&1 | tee "$run_log"
  run_status=${PIPESTATUS[0]}
  set -e
  if [ "$run_status" = 124 ] || [ "$run_status" = 137 ]; then
    # Started and never ended: Swift Testing's "◇ Test NAME started." without a passed, failed or skipped
    # line (a parameterized test's cases start one by one and end in one line, "NAME with N test cases").
    grep -oP '^◇ Test (?!case passing |run started\.$)\K.*(?= started\.$)' "$run_log" | sort -u > "$run_log.started"
    grep -oP '^[✔✘➜] Test (?!run with )\K.*?(?=( with [0-9]+ test cases?)? (passed|failed|skipped))' "$run_log" | sort -u > "$run_log.ended"
    comm -23 "$run_log.started" "$run_log.ended" | while read -r name; do
      echo "✘ Test $name failed after the run's deadline of $deadline: hung"
    done | tee -a "$run_log"
    rm -f "$run_log.started" "$run_log.ended"
  fi
  cat "$run_log" >> "$log"
  rm -f "$run_log"
  [ "$run_status" = 0 ] || status=$run_status
done

# A plain summary line from Swift Testing's own per-test results: a test's last line says "passed after",
# "failed after" (its issues are separate "recorded an issue" lines) or "skipped"; the runs' own
# "Test run with N tests" lines are not tests.
passed=$(grep -cP '^✔ Test (?!run with ).* passed after' "$log" || true)
failed=$(grep -cP '^✘ Test (?!run with ).* failed after' "$log" || true)
skipped=$(grep -cP '^➜ Test (?!run with ).* skipped' "$log" || true)
echo "swift-testing: $passed passed, $failed failed, $skipped skipped"
exit "$status"
