#!/usr/bin/env python3
"""Per-kernel-family GPU time from Nsight Compute CSV files (ncu --csv --metrics gpu__time_duration.sum).

Usage: ncu_summary.py CSV... ; prints, per file, the total kernel time and the 14 largest kernel families (name up to
the first '(' or '<'), with their launch counts."""
import collections
import csv
import sys

UNIT_US = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}


def summarise(path):
    rows = [r for r in csv.reader(open(path)) if len(r) > 10]
    if not rows:
        print(f"== {path}: no kernel rows")
        return
    head = rows[0]
    ki, vi, ui = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
    fam, n = collections.Counter(), collections.Counter()
    for r in rows[1:]:
        if not r[vi].replace(",", "").replace(".", "").isdigit():
            continue
        v = float(r[vi].replace(",", "")) * UNIT_US.get(r[ui], 1.0)
        k = r[ki].replace("(anonymous namespace)::", "").replace("<unnamed>::", "").removeprefix("void ")
        k = k.split("(")[0].split("<")[0][:60]
        fam[k] += v
        n[k] += 1
    total = sum(fam.values())
    print(f"== {path}: {total:.0f} us in {sum(n.values())} kernels")
    for k, v in fam.most_common(14):
        print(f"  {v:9.1f} us  {n[k]:4d}x  {v / n[k]:7.1f} us each  {100 * v / total:5.1f} %  {k}")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        summarise(p)
