#!/usr/bin/env bash
# What a process start costs, and what a slim `init` or `capstan-cni` entry could save: medians of RUNS
# (default 400) starts of
#   - a C program that does nothing (the floor of any process),
#   - a statically linked Swift "hello" (the floor of any Swift entry, however slim),
#   - `capstan-cni` answering VERSION (the plugin process, as bench-node.sh's "plugin process alone"),
#   - `capstan init --dry-run` (init's process and rendering, no kernel work),
# each spawned directly and waited for, with its minor page faults, plus the binary facts behind them:
# protocol-conformance records (each first conformance lookup scans them all) and libstdc++'s symbol
# relocations (every Swift process's loader resolves them). Release build from hack/build-release.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
runs=${RUNS:-400}
bin=$(hack/build-release.sh capstan 2>/dev/null)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf 'int main(void) { return 0; }\n' > "$work/nothing.c"
gcc -O2 -o "$work/c-nothing" "$work/nothing.c"
printf 'print("hello")\n' > "$work/hello.swift"
swiftc -O -static-stdlib -o "$work/swift-hello" "$work/hello.swift"
ln -s "$bin/capstan" "$work/capstan-cni"

python3 - "$runs" "$work" "$bin/capstan" <<'PY'
import os, statistics, sys, time
runs, work, capstan = int(sys.argv[1]), sys.argv[2], sys.argv[3]
version = os.open(os.path.join(work, "version.json"), os.O_RDWR | os.O_CREAT, 0o644)
os.write(version, b'{"cniVersion": "1.0.0"}\n')
null = os.open(os.devnull, os.O_WRONLY)
cases = [
    ("C program doing nothing", [f"{work}/c-nothing"], {}),
    ("static Swift hello", [f"{work}/swift-hello"], {}),
    ("capstan-cni VERSION", [f"{work}/capstan-cni"], {"CNI_COMMAND": "VERSION"}),
    ("capstan init --dry-run", [capstan, "init", "--dry-run"], {}),
]
def start(argv, env):
    os.lseek(version, 0, os.SEEK_SET)
    began = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, {**os.environ, **env},
                         file_actions=[(os.POSIX_SPAWN_DUP2, version, 0), (os.POSIX_SPAWN_DUP2, null, 1)])
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        sys.exit(f"{argv} exited with {status}")
    return time.perf_counter() - began, usage.ru_minflt
results = {}
for _ in range(20):  # warm the page cache
    for _, argv, env in cases: start(argv, env)
samples = {name: [] for name, _, _ in cases}
for _ in range(runs):  # interleaved, so a noisy moment hits every case alike
    for name, argv, env in cases: samples[name].append(start(argv, env))
floor = statistics.median(t for t, _ in samples["C program doing nothing"])
for name, values in samples.items():
    wall = statistics.median(t for t, _ in values)
    faults = statistics.median(f for _, f in values)
    print(f"{name:26s} median {wall * 1000:6.2f} ms ({(wall - floor) * 1000:+.2f} ms over C), {faults:5.0f} minor faults")
PY
for binary in "$work/swift-hello" "$bin/capstan"; do
  records=$(size -A "$binary" | awk '$1 == "swift5_protocol_conformances" { print $2 / 4 }')
  echo "$(basename "$binary"): $records protocol-conformance records, $(du -m "$binary" | cut -f1) MB"
done
stdcxx=$(ldconfig -p | awk '$1 == "libstdc++.so.6" && !found { print $NF; found = 1 }')
echo "libstdc++.so.6: $(readelf -r "$stdcxx" | grep -c 'R_X86_64_\(GLOB_DAT\|JUMP_SLO\|64 \)') symbol relocations resolved at every Swift process's start"
