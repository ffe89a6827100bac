#!/usr/bin/env python3
"""Summarises the `fleet-drill:` lines the fleet kill drill prints
(e2e/tests/fleet.rs) over several runs: detection time, rejoin time and
per-channel takeover time (p50/p99), lines lost per takeover.

    cargo nextest run -p e2e --test fleet --stress-count 10 \
        -E 'test(/fault_fleet_an_instance_killed/)' --no-capture 2>&1 | tee run.log
    scripts/fleet-drill-stats.py run.log
"""
import math
import re
import sys


def pct(values, p):
    s = sorted(values)
    return s[max(1, math.ceil(p / 100 * len(s))) - 1]


runs = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.search(r"fleet-drill: detection_ms=(\d+) rejoin_ms=(\d+) lost=(\d+) takeover_ms=([\d,]*)", line)
    if m:
        runs.append((int(m[1]), int(m[2]), int(m[3]), [int(t) for t in m[4].split(",") if t]))
if not runs:
    sys.exit("no fleet-drill lines")
det = [r[0] / 1000 for r in runs]
rej = [r[1] / 1000 for r in runs]
lost = [r[2] for r in runs]
tk = [t / 1000 for r in runs for t in r[3]]
per_channel = [r[2] / len(r[3]) for r in runs if r[3]]
print(f"runs: {len(runs)}")
print(f"detection (kill -> first JOIN by a survivor): p50 {pct(det, 50):.2f} s, p99 {pct(det, 99):.2f} s, max {max(det):.2f} s")
print(f"rejoin (first -> last JOIN): p50 {pct(rej, 50):.3f} s, p99 {pct(rej, 99):.3f} s")
print(f"per-channel takeover ({len(tk)} channels): p50 {pct(tk, 50):.2f} s, p99 {pct(tk, 99):.2f} s, max {max(tk):.2f} s")
print(f"lines lost per takeover (20 channels, 1,000 msg/s over 60): min {min(lost)}, p50 {pct(lost, 50)}, max {max(lost)}; per channel {sum(per_channel) / len(per_channel):.0f}")
