#!/usr/bin/env python3
"""hack/bench-http.sh's figures: reads what wrk and h2load printed, keeps one JSON line per run, and
prints the summary table and the machine-readable block.

  http_figures.py record KIND PEER ROUND key=value...   one run as a JSON line (stdout)
  http_figures.py summary RESULTS.jsonl key=value...     the table, then the figures as one JSON object

record's keys: client= (wrk's or h2load's output), log= (h2load --log-file), failed= (why the run has no
figures), stat0= and stat1= (the cpu lines of /proc/stat before and after), and numbers: wall_s,
proxy_ticks, upstream_ticks, client_cpu_s, rss_kb, hwm_kb, ticks_per_s, scale (the share of the run
that was measured: the CPU figures are multiplied by it).
"""
import json
import re
import statistics
import sys

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text):
    number, unit = re.fullmatch(r"([0-9.]+)([a-z]+)", text).groups()
    return float(number) * UNITS[unit]


def parse_wrk(text):
    """wrk --latency: requests, duration, non-2xx and socket errors, latency percentiles (seconds)."""
    done = re.search(r"^\s*(\d+) requests in ([0-9.]+[a-z]+),", text, re.M)
    if not done:
        raise ValueError("wrk printed no result: " + " ".join(text.split())[:300])
    requests, duration = int(done.group(1)), seconds(done.group(2))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    latency = {f"p{p}": seconds(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+([0-9.]+[a-z]+)", text, re.M)}
    return {
        "requests": requests,
        "seconds": duration,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "latency_s": latency,
    }


def parse_h2load(text, log):
    """h2load: requests done/succeeded/failed, duration; percentiles from its per-request log."""
    line = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", text)
    # "finished in" counts the warm-up too, the requests and the rate do not: the rate is h2load's own.
    finished = re.search(r"finished in ([0-9.]+[a-z]+), ([0-9.]+) req/s", text)
    if not line or not finished:
        raise ValueError("h2load printed no result: " + " ".join(text.split())[:300])
    total, started, done, succeeded, failed, errored, timeout = (int(x) for x in line.groups())
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    ok = int(status.group(1)) if status else succeeded
    # --log-file: start time (µs since the epoch), status code, duration (µs), one tab-separated line per
    # request that ended in the measured period.
    durations = []
    if log:
        with open(log) as lines:
            for entry in lines:
                fields = entry.split("\t")
                if len(fields) >= 3 and fields[1].startswith("2"):
                    durations.append(int(fields[2]) * 1e-6)
    durations.sort()

    def percentile(fraction):
        return durations[min(len(durations) - 1, int(round((len(durations) - 1) * fraction)))] if durations else None

    return {
        "requests": done,
        "seconds": done / float(finished.group(2)) if float(finished.group(2)) else seconds(finished.group(1)),
        "non_2xx": done - ok,
        "socket_errors": errored + timeout,
        "latency_s": {f"p{p}": percentile(p / 100) for p in (50, 75, 90, 99)} if durations else {},
    }


def cpu_lines(path):
    with open(path) as lines:
        return {fields[0]: [int(x) for x in fields[1:]] for fields in (line.split() for line in lines)}


def machine(before, after, hz, scale):
    """The machine's CPU seconds over the run from two snapshots of /proc/stat's cpu lines: processes
    (user, nice, system), interrupts (irq, softirq: most of the network's work, charged to no process),
    and steal (taken by the hypervisor); the same busy total per CPU."""
    a, b = cpu_lines(before), cpu_lines(after)
    delta = {cpu: [(y - x) * scale / hz for x, y in zip(a[cpu], b[cpu])] for cpu in b if cpu in a}
    total = delta["cpu"]
    return {
        "process_cpu_s": total[0] + total[1] + total[2],
        "interrupt_cpu_s": total[5] + total[6],
        "steal_cpu_s": total[7] if len(total) > 7 else 0.0,
        "busy_cpu_s_per_cpu": {cpu: d[0] + d[1] + d[2] + d[5] + d[6] for cpu, d in sorted(delta.items()) if cpu != "cpu"},
    }


def record(kind, peer, round_, pairs):
    values = dict(pair.split("=", 1) for pair in pairs)
    row = {"kind": kind, "peer": peer, "round": int(round_)}
    if values.get("failed"):
        row["failed"] = values["failed"]
        return row
    with open(values["client"], errors="replace") as output:
        text = output.read()
    try:
        row.update(parse_wrk(text) if kind == "h1" else parse_h2load(text, values.get("log")))
    except ValueError as error:
        row["failed"] = str(error)
        return row
    good = row["requests"] - row["non_2xx"]
    row["ok_requests"] = good
    row["req_per_s"] = good / row["seconds"] if row["seconds"] else 0.0
    # More than 1% answers that are not 2xx, or socket errors on a tenth of them: not a throughput figure.
    if good <= 0 or row["non_2xx"] > 0.01 * row["requests"] or row["socket_errors"] > 0.1 * max(good, 1):
        row["failed"] = (f"{row['non_2xx']} of {row['requests']} answers were not 2xx, "
                         f"{row['socket_errors']} socket errors")
    hz = float(values.get("ticks_per_s", 100))
    for key in ("proxy", "upstream"):
        if values.get(f"{key}_ticks", "") != "":
            row[f"{key}_cpu_s"] = int(values[f"{key}_ticks"]) / hz
    for key in ("client_cpu_s", "wall_s"):
        if values.get(key, "") != "":
            row[key] = float(values[key])
    if values.get("stat0") and values.get("stat1"):
        row["machine"] = machine(values["stat0"], values["stat1"], hz, float(values.get("scale", 1)))
    for key in ("rss_kb", "hwm_kb"):
        if values.get(key, "") not in ("", "0"):
            row[key] = int(values[key])
    if good > 0:
        for key in ("proxy", "upstream"):
            if f"{key}_cpu_s" in row:
                row[f"{key}_cpu_s_per_1000"] = row[f"{key}_cpu_s"] / good * 1000
    return row


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(rows):
    """Per (kind, peer): medians over the rounds that have figures; failures kept as text."""
    peers = {}
    for row in rows:
        peers.setdefault((row["kind"], row["peer"]), []).append(row)
    figures = {}
    for (kind, peer), runs in peers.items():
        good = [r for r in runs if "failed" not in r]
        entry = {"rounds": len(runs), "rounds_with_figures": len(good)}
        failures = sorted({r["failed"] for r in runs if "failed" in r})
        if failures:
            entry["failed"] = failures
        if good:
            entry["req_per_s"] = median(r["req_per_s"] for r in good)
            entry["requests"] = sum(r["ok_requests"] for r in good)
            entry["latency_ms"] = {p: median(r["latency_s"].get(p) for r in good) * 1000
                                   for p in ("p50", "p75", "p90", "p99")
                                   if median(r["latency_s"].get(p) for r in good) is not None}
            for key in ("proxy_cpu_s_per_1000", "upstream_cpu_s_per_1000"):
                value = median(r.get(key) for r in good)
                if value is not None:
                    entry[key] = value
            # Cores in use during the measured part of the run (CPU seconds / seconds): the proxy's (is it
            # the bottleneck?), interrupts and softirq (the network's work), and what the benchmark's
            # processes did not use (someone else's build on the machine, kernel threads).
            timed = [r for r in good if "machine" in r and r.get("seconds")]
            if timed:
                entry["cores"] = {
                    "proxy": median(r.get("proxy_cpu_s") and r["proxy_cpu_s"] / r["seconds"] for r in timed),
                    "interrupts": median(r["machine"]["interrupt_cpu_s"] / r["seconds"] for r in timed),
                    # A process's utime+stime already holds most of the softirq work done in its
                                    # context, so this is the whole machine's busy time less the benchmark's.
                    "others": median(max(0.0, sum(r["machine"]["busy_cpu_s_per_cpu"].values()) - r.get("proxy_cpu_s", 0)
                                         - r.get("upstream_cpu_s", 0) - r.get("client_cpu_s", 0)) / r["seconds"]
                                     for r in timed),
                    "steal": median(r["machine"]["steal_cpu_s"] / r["seconds"] for r in timed),
                    "per_cpu_busy": {cpu: median(r["machine"]["busy_cpu_s_per_cpu"].get(cpu, 0) / r["seconds"] for r in timed)
                                     for cpu in timed[0]["machine"]["busy_cpu_s_per_cpu"]},
                }
                entry["cores"] = {k: v for k, v in entry["cores"].items() if v is not None}
            rss = [r["rss_kb"] for r in good if "rss_kb" in r]
            hwm = [r["hwm_kb"] for r in runs if "hwm_kb" in r]
            if rss:
                entry["rss_mb_under_load"] = max(rss) / 1024
            if hwm:
                entry["hwm_mb"] = max(hwm) / 1024
        figures.setdefault(kind, {})[peer] = entry
    # Ratios of medians, only between peers of the same run and kind.
    for kind, table in figures.items():
        ratios = {}
        for a, b in (("capstan", "haproxy"), ("capstan", "nginx"), ("capstan", "direct"),
                     ("haproxy", "direct"), ("nginx", "direct"), ("capstan-rbac", "capstan"),
                     ("capstan-gateway", "haproxy"), ("capstan-gateway", "capstan")):
            if "req_per_s" in table.get(a, {}) and "req_per_s" in table.get(b, {}):
                ratios[f"{a}/{b}"] = table[a]["req_per_s"] / table[b]["req_per_s"]
        for a, b in (("capstan", "haproxy"), ("capstan", "nginx")):
            x, y = table.get(a, {}).get("proxy_cpu_s_per_1000"), table.get(b, {}).get("proxy_cpu_s_per_1000")
            if x and y:
                ratios[f"cpu {a}/{b}"] = x / y
        table["ratios"] = ratios
    return figures


def number(value, digits=0):
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(figures, meta):
    titles = {"h1": f"HTTP/1.1 keep-alive, wrk {meta.get('wrk', '')}",
              "h2": f"HTTP/2 h2c prior knowledge, h2load {meta.get('h2load', '')}"}
    print(f"\n{meta.get('date')}, {meta.get('cpus')} CPUs, {meta.get('elapsed_s')} s; haproxy {meta.get('haproxy')}, "
          f"{meta.get('nginx')}; capstan: {meta.get('capstan') or 'none'}")
    print(f"placement: {meta.get('placement')}")
    if meta.get("capstan") and meta.get("capstan_build") != "release":
        print(f"NOTE: capstan is not a release build ({meta.get('capstan_build')}): its row is no figure of Capstan's (hack/build-release.sh)")
    for kind in ("h1", "h2"):
        table = figures.get(kind)
        if not table:
            continue
        print(f"\n{titles[kind]}  (medians of {meta.get('rounds')} rounds of {meta.get('seconds')} s, peers taking turns)")
        print(f"  {'peer':<8} {'req/s':>9} {'p50 ms':>7} {'p75 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
              f"{'cpu s/1k':>8} {'cores':>5} {'RSS MB':>7} {'HWM MB':>7}  {'busy per CPU':<12} {'others':>6}")
        for peer in ("direct", "haproxy", "nginx", "capstan", "capstan-rbac", "capstan-gateway"):
            entry = table.get(peer)
            if entry is None:
                continue
            if "req_per_s" not in entry:
                print(f"  {peer:<8} no figures: {'; '.join(entry.get('failed', ['?']))}")
                continue
            latency = entry.get("latency_ms", {})
            cores = entry.get("cores", {})
            print(f"  {peer:<8} {number(entry['req_per_s']):>9} "
                  + " ".join(f"{number(latency.get(p), 2):>7}" for p in ("p50", "p75", "p90", "p99"))
                  + f" {number(entry.get('proxy_cpu_s_per_1000') if peer != 'direct' else None, 3):>8}"
                  + f" {number(cores.get('proxy'), 2):>5}"
                  + f" {number(entry.get('rss_mb_under_load'), 1):>7} {number(entry.get('hwm_mb'), 1):>7}"
                  + "  " + f"{' '.join(number(v, 2) for v in cores.get('per_cpu_busy', {}).values()):<12}"
                  + f" {number(cores.get('others'), 2):>6}")
            if entry.get("failed"):
                print(f"           ({entry['rounds'] - entry['rounds_with_figures']} of {entry['rounds']} rounds failed: "
                      f"{'; '.join(entry['failed'])})")
        ratios = table.get("ratios", {})
        if ratios:
            print("  ratios: " + ", ".join(f"{name} {value:.2f}" for name, value in ratios.items()))
    print("\n  cpu s/1k: the proxy's CPU seconds (user+system, all its processes) per 1,000 requests answered 2xx;"
          "\n  cores: the proxy's CPU seconds per second (1.00 = a whole core: the proxy was the bottleneck);"
          "\n  RSS: the proxy's VmRSS sampled mid-run, max over rounds (nginx: master and workers added up), HWM: its VmHWM;"
          "\n  busy per CPU: each CPU's busy share (1.00: saturated); others: cores busy with anything but the"
          "\n  benchmark's processes (another build on the machine, kernel threads): how quiet the run was.")


def tidy(value):
    """Floats to 4 significant digits, for a JSON block a person can read too."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tidy(v) for v in value]
    return value


def main():
    if sys.argv[1] == "record":
        print(json.dumps(record(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])))
    elif sys.argv[1] == "summary":
        with open(sys.argv[2]) as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
        meta = dict(pair.split("=", 1) for pair in sys.argv[3:])
        figures = summarize(rows)
        print_table(figures, meta)
        document = tidy({"benchmark": "hack/bench-http.sh", **meta, "figures": figures, "runs": rows})
        print("\nBEGIN BENCH-HTTP FIGURES (JSON)")
        print(json.dumps(document, sort_keys=True))
        print("END BENCH-HTTP FIGURES")
        if meta.get("json_file"):
            with open(meta["json_file"], "w") as out:
                json.dump(document, out, indent=1, sort_keys=True)
                out.write("\n")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
