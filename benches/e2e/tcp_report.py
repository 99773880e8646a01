#!/usr/bin/env python3
"""Helper of benches/e2e/tcp.sh: CPU snapshots, one record per run, the summary table.

  tcp_report.py snap FILE [PID...]       /proc/PID/stat utime+stime of each PID (all its
                                         threads), /proc/stat per-CPU times, a clock
  tcp_report.py record JSONL KEY=VALUE... parse one run's raw output and snapshots,
                                         append one JSON line
  tcp_report.py summary JSONL            medians per (case, target), ratios, as Markdown
"""
import glob
import json
import os
import statistics
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return None


def cpu_times():
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            p = line.split()
            if p[0].startswith("cpu") and p[0] != "cpu":
                v = [int(x) for x in p[1:]]
                # user nice system idle iowait irq softirq steal
                out[p[0][3:]] = {"busy": v[0] + v[1] + v[2] + v[5] + v[6], "steal": v[7] if len(v) > 7 else 0}
    return out


def snap(path, pids):
    d = {"t": time.monotonic(), "pids": {p: proc_ticks(p) for p in pids}, "cpus": cpu_times()}
    with open(path, "w") as f:
        json.dump(d, f)


def count_lines(path, offset):
    """Lines appended to a log file (or, for a glob, the newest match) since offset."""
    files = sorted(glob.glob(path), key=os.path.getmtime)
    if not files:
        return None
    with open(files[-1], "rb") as f:
        f.seek(int(offset))
        n = 0
        while True:
            b = f.read(1 << 20)
            if not b:
                return n
            n += b.count(b"\n")


def record(jsonl, kv):
    a = dict(x.split("=", 1) for x in kv)
    s0, s1 = (json.load(open(a[k])) for k in ("snap_a", "snap_b"))
    wall = s1["t"] - s0["t"]

    def cpu_of(pid):
        if not pid or s0["pids"].get(pid) is None or s1["pids"].get(pid) is None:
            return None
        return (s1["pids"][pid] - s0["pids"][pid]) / TICK

    rec = {k: a[k] for k in ("id", "target", "case", "rep", "tool")}
    rec["rep"] = int(rec["rep"])
    rec["wall_s"] = round(wall, 3)
    rec["proxy_cpu_s"] = cpu_of(a.get("proxy_pid"))
    rec["upstream_cpu_s"] = cpu_of(a.get("upstream_pid"))
    for label, cpu in (("proxy_core", a["proxy_core"]), ("load_core", a["load_core"])):
        b = (s1["cpus"][cpu]["busy"] - s0["cpus"][cpu]["busy"]) / TICK
        st = (s1["cpus"][cpu]["steal"] - s0["cpus"][cpu]["steal"]) / TICK
        rec[f"{label}_busy_pct"] = round(100 * b / wall, 1)
        rec[f"{label}_steal_pct"] = round(100 * st / wall, 1)
    raw = open(a["raw"]).read()
    rec["error"] = None
    try:
        if rec["tool"] == "iperf3":
            j = json.loads(raw)
            if "error" in j:
                raise ValueError(j["error"])
            r = j["end"]["sum_received"]
            rec["mib"] = r["bytes"] / 2**20
            rec["secs"] = r["seconds"]
            rec["value"] = rec["mib"] / r["seconds"]  # MiB/s
            rec["client_cpu_s"] = j["end"]["cpu_utilization_percent"]["host_total"] / 100 * r["seconds"]
            rec["retransmits"] = j["end"].get("sum_sent", {}).get("retransmits")
            units = rec["mib"]
        else:
            j = json.loads(raw.strip().splitlines()[-1])
            rec.update({k: j[k] for k in ("ok", "errors", "secs", "p50_us", "p99_us", "first_error")})
            rec["client_cpu_s"] = j.get("cpu_s")
            rec["value"] = j["rate"]  # conn/s
            units = j["ok"]
    except (ValueError, KeyError, IndexError) as e:
        rec["error"] = f"{type(e).__name__}: {e}: {raw[-300:]!r}"
        rec["value"] = None
        units = 0
    if units and rec["proxy_cpu_s"] is not None:
        rec["proxy_cpu_us_per_unit"] = rec["proxy_cpu_s"] * 1e6 / units
        rec["proxy_core_share_pct"] = round(100 * rec["proxy_cpu_s"] / wall, 1)
    if units and rec.get("client_cpu_s") is not None and rec["upstream_cpu_s"] is not None:
        rec["load_cpu_us_per_unit"] = (rec["client_cpu_s"] + rec["upstream_cpu_s"]) * 1e6 / units
    if a.get("log") and units and rec["tool"] == "tcpload":
        n = count_lines(a["log"], a.get("log_off", 0))
        if n is not None:
            rec["log_lines_per_conn"] = round(n / units, 3)
    if a.get("syscalls") and units:
        counts = {}
        try:
            for line in open(a["syscalls"]):
                f = line.strip().split(",")
                if len(f) > 2 and f[0].isdigit():
                    counts[f[2].split(":")[-1].replace("sys_enter_", "")] = int(f[0])
        except OSError:
            pass
        if counts:
            rec["syscalls_per_unit"] = {k: round(v / units, 2) for k, v in counts.items()}
    with open(jsonl, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    if abs(v) >= 100:
        return f"{v:.0f}{unit}"
    if abs(v) >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.2f}{unit}"


def summary(jsonl):
    recs = [json.loads(l) for l in open(jsonl) if l.strip()]
    targets, cases = [], []
    for r in recs:
        if r["target"] not in targets:
            targets.append(r["target"])
        if r["case"] not in cases:
            cases.append(r["case"])
    reps = max((r["rep"] for r in recs), default=0)

    def vals(case, target, key):
        return [r[key] for r in recs if r["case"] == case and r["target"] == target and r.get(key) is not None]

    def med(case, target, key):
        v = vals(case, target, key)
        return statistics.median(v) if v else None

    label = {
        "bulk1": "bulk, 1 connection",
        "bulk8": "bulk, 8 connections",
        "crr": "connection rate",
    }
    menshens = [t for t in targets if t.startswith("menshen")]
    base = "haproxy" if "haproxy" in targets else None
    head = ["metric"] + targets + ([f"{m}/{base}" for m in menshens] if base else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name, case, key, unit="", ratio=True, pct=False):
        cells = [med(case, t, key) for t in targets]
        if all(c is None for c in cells):
            return
        out = [name] + [fmt(c) + ("%" if pct and c is not None else unit) for c in cells]
        if base and not ratio:
            out += [""] * len(menshens)
        elif base:
            b = med(case, base, key)
            for m in menshens:
                v = med(case, m, key)
                out.append(f"{v / b:.2f}x" if v is not None and b else "-")
        lines.append("| " + " | ".join(out) + " |")

    for c in cases:
        what = "MiB/s" if c.startswith("bulk") else "conn/s"
        row(f"{c} {what} ({label.get(c, c)})", c, "value")
    for c in cases:
        per = "us/MiB" if c.startswith("bulk") else "us/conn"
        row(f"{c} proxy CPU {per} (lower is better)", c, "proxy_cpu_us_per_unit")
    for c in cases:
        per = "us/MiB" if c.startswith("bulk") else "us/conn"
        row(f"{c} load side CPU {per} (client + upstream)", c, "load_cpu_us_per_unit", ratio=False)
    for c in cases:
        row(f"{c} proxy process CPU, % of its core", c, "proxy_core_share_pct", ratio=False, pct=True)
    for c in cases:
        row(f"{c} load core busy % (client+upstream+others)", c, "load_core_busy_pct", ratio=False, pct=True)
    for c in cases:
        if not c.startswith("bulk"):
            row(f"{c} latency p50 us", c, "p50_us")
            row(f"{c} latency p99 us", c, "p99_us")
            row(f"{c} log lines per connection", c, "log_lines_per_conn", ratio=False)
    print(f"\nMedians of {reps} run(s) per cell (ratio columns: median over median; "
          "for CPU rows a ratio > 1 means Menshen spends more).")
    print("\n".join(lines))

    sys_recs = [r for r in recs if r.get("syscalls_per_unit")]
    if sys_recs:
        print("\nProxy syscalls per MiB (bulk) / per connection (crr), medians (perf stat, SYSCALLS=1):")
        names = []
        for r in sys_recs:
            for k in r["syscalls_per_unit"]:
                if k not in names:
                    names.append(k)
        print("| case / target | " + " | ".join("all" if n == "sys_enter" else n for n in names) + " |")
        print("|" + "---|" * (len(names) + 1))
        for c in cases:
            for t in targets:
                v = [r["syscalls_per_unit"] for r in sys_recs if r["case"] == c and r["target"] == t]
                if v:
                    cells = [fmt(statistics.median([x.get(n, 0) for x in v])) for n in names]
                    print(f"| {c} {t} | " + " | ".join(cells) + " |")

    # Noise: how much of the proxy core others took while the proxy ran.
    others = [r["proxy_core_busy_pct"] - (r.get("proxy_core_share_pct") or 0) for r in recs
              if r.get("proxy_core_share_pct") is not None]
    if others:
        print(f"\nCore-0 time used by processes other than the proxy under test during the runs: "
              f"median {statistics.median(others):.0f}%, max {max(others):.0f}% of the core "
              f"(steal max {max(r['proxy_core_steal_pct'] for r in recs):.0f}%).")
    print("\nPer-run values (rep order):")
    for c in cases:
        for t in targets:
            v = [r for r in recs if r["case"] == c and r["target"] == t]
            if not v:
                continue
            parts = []
            for r in sorted(v, key=lambda r: r["rep"]):
                s = fmt(r.get("value"))
                if r.get("proxy_cpu_us_per_unit") is not None:
                    s += f" ({r['proxy_cpu_us_per_unit']:.1f} us, core {r.get('proxy_core_share_pct')}%)"
                parts.append(s)
            print(f"  {c:6} {t:15} " + ", ".join(parts))
    errs = [r for r in recs if r.get("error") or r.get("errors")]
    for r in errs:
        print(f"  ! {r['id']}: {r.get('error') or str(r.get('errors')) + ' failed connections: ' + str(r.get('first_error'))}")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "snap":
        snap(sys.argv[2], sys.argv[3:])
    elif cmd == "record":
        r = record(sys.argv[2], sys.argv[3:])
        v = r.get("value")
        extra = f", proxy {r['proxy_cpu_us_per_unit']:.1f} us/unit" if r.get("proxy_cpu_us_per_unit") else ""
        print(f"  {r['id']}: {fmt(v)}{' MiB/s' if r['tool'] == 'iperf3' else ' conn/s'}{extra}"
              + (f"  ERROR {r['error']}" if r.get("error") else ""), file=sys.stderr)
    elif cmd == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
