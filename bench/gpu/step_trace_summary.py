#!/usr/bin/env python3
"""Where a serving run's time goes, from the engine's step trace (CITADEL_STEP_TRACE, bench/gpu/serve_bench.sh
STEP_TRACE=1): steps grouped by kind (decode only, prefill only, mixed) and by tokens per step, with their count,
mean step and forward times and share of the run's step time; a line fit of forward time against the step's
tokens per kind, so the cost of a decode row and of a prompt token can be read off.

Runs of one server (serve_bench.sh runs several benchmarks against it) are told apart by idle gaps: --split-gap-ms
(default 1000) starts a new run where no step began for that long; each run gets its own summary, then all together.

Usage: step_trace_summary.py steps-LABEL.jsonl [--json OUT] [--split-gap-ms MS]
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def kind(s):
    if s["prefill"] == 0:
        return "decode"
    return "prefill" if s["decode"] == 0 else "mixed"


def bucket(tokens):
    b = 1
    while b < tokens:
        b *= 2
    return b


def fit(xs, ys):
    """Least squares y = a + b x; (a, b), or None with fewer than two distinct x."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def split_runs(steps, gap_ms):
    """The steps cut where the engine idled for gap_ms or more between two steps' starts and ends."""
    runs, cur, last_end = [], [], None
    for s in steps:
        start = s["t_ms"] - s["step_ms"]
        if cur and last_end is not None and start - last_end >= gap_ms:
            runs.append(cur)
            cur = []
        cur.append(s)
        last_end = s["t_ms"]
    if cur:
        runs.append(cur)
    return runs


def summarise(steps):
    total = sum(s["step_ms"] for s in steps) or 1.0
    groups = {}
    for s in steps:
        key = (kind(s), bucket(s["decode"] + s["prefill"]))
        groups.setdefault(key, []).append(s)
    rows = []
    for (k, b), ss in sorted(groups.items()):
        rows.append({
            "kind": k, "tokens_up_to": b, "steps": len(ss),
            "mean_decode": round(sum(s["decode"] for s in ss) / len(ss), 1),
            "mean_prefill": round(sum(s["prefill"] for s in ss) / len(ss), 1),
            "mean_step_ms": round(sum(s["step_ms"] for s in ss) / len(ss), 3),
            "mean_fwd_ms": round(sum(s["fwd_ms"] for s in ss) / len(ss), 3),
            "share": round(sum(s["step_ms"] for s in ss) / total, 3),
        })
    fits = {}
    for k in ("decode", "prefill", "mixed"):
        ss = [s for s in steps if kind(s) == k]
        f = fit([s["decode"] + s["prefill"] for s in ss], [s["fwd_ms"] for s in ss])
        if f:
            fits[k] = {"ms_at_0_tokens": round(f[0], 3), "ms_per_token": round(f[1], 5), "steps": len(ss)}
    out_tokens = sum(s["decode"] for s in steps)
    return {"steps": len(steps), "step_ms_total": round(total, 1),
            "fwd_ms_total": round(sum(s["fwd_ms"] for s in steps), 1),
            "decode_rows": out_tokens, "prefill_tokens": sum(s["prefill"] for s in steps),
            "groups": rows, "fits": fits}


def print_summary(s):
    print(f"{s['steps']} steps, {s['step_ms_total']} ms of step time ({s['fwd_ms_total']} ms in the forward), "
          f"{s['decode_rows']} decode rows, {s['prefill_tokens']} prompt tokens")
    print(f"{'kind':8s} {'tokens<=':>8s} {'steps':>6s} {'decode':>7s} {'prefill':>8s} {'step ms':>8s} {'fwd ms':>8s} "
          f"{'share':>6s}")
    for r in s["groups"]:
        print(f"{r['kind']:8s} {r['tokens_up_to']:8d} {r['steps']:6d} {r['mean_decode']:7.1f} {r['mean_prefill']:8.1f} "
              f"{r['mean_step_ms']:8.2f} {r['mean_fwd_ms']:8.2f} {r['share']:6.3f}")
    for k, f in s["fits"].items():
        print(f"fit {k}: fwd ms = {f['ms_at_0_tokens']} + {f['ms_per_token']} x tokens ({f['steps']} steps)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--json", help="write the summaries here too")
    ap.add_argument("--split-gap-ms", type=float, default=1000.0)
    a = ap.parse_args()
    steps = load(a.trace)
    if not steps:
        sys.exit(f"{a.trace}: no steps")
    runs = split_runs(steps, a.split_gap_ms)
    out = {"runs": [summarise(r) for r in runs] if len(runs) > 1 else [], "all": summarise(steps)}
    if a.json:  # before printing: a reader that stops early (| head) must not cost the file
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    for i, r in enumerate(out["runs"]):
        print(f"== run {i + 1} of {len(runs)}")
        print_summary(r)
    if out["runs"]:
        print("== all runs")
    print_summary(out["all"])


if __name__ == "__main__":
    main()
