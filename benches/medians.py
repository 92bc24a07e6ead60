#!/usr/bin/env python3
"""Prints criterion's median (and its 95% confidence interval) for every
benchmark of the last run, as a Markdown table, from the estimates criterion
saves under target/criterion/. Usage: python3 benches/medians.py [target dir]"""

import json
import math
import pathlib
import sys


def fmt(ns: float) -> str:
    unit, value = "ns", ns
    for name, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            unit, value = name, ns / scale
            break
    decimals = max(0, 2 - int(math.floor(math.log10(value)))) if value > 0 else 0
    return f"{value:.{decimals}f} {unit}"


def main() -> None:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target") / "criterion"
    rows = []
    for bench in sorted(root.glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        median = json.loads((bench.parent / "estimates.json").read_text())["median"]
        ci = median["confidence_interval"]
        rows.append((meta["full_id"], median["point_estimate"], ci["lower_bound"], ci["upper_bound"]))
    print("| benchmark | median | 95% CI of the median |")
    print("|---|---:|---|")
    for name, point, low, high in rows:
        print(f"| `{name}` | {fmt(point)} | {fmt(low)} – {fmt(high)} |")


if __name__ == "__main__":
    main()
