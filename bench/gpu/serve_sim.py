#!/usr/bin/env python3
"""A step-level model of a closed-loop serving benchmark (bench/gpu/serve_bench.sh's runs: N requests, C at once, P
prompt and O output tokens each, --ignore-eos), to compare chunking policies before spending device time on them.

The engine is modelled as the scheduler runs it (engine/scheduler.h): each step takes one decode row per running
sequence that has finished its prompt, then prompt chunks first come first served within the step's budget
(max_batched_tokens minus the decode rows, and max_prefill_tokens). A step's time is a piecewise-linear function of its
tokens, fitted to measured step traces (bench/gpu/step_trace_summary.py); the default points are the H100 7B-shape
steps of session 26 (bench/gpu/NOTES.md). Attention's growth with context is not modelled: the c64 arms of that
session came out within 1.3 %, the c128 ones about 25 % low.

Usage: serve_sim.py [--conc 64] [--requests 256] [--max-batched-tokens 2048] [--max-prefill-tokens 0]
                    [--points "1:6.7,64:7.8,128:9.2,200:10,511:15.3,1968:48.2,2048:50"]
"""
import argparse


def step_ms(points, tokens):
    for (a, ta), (b, tb) in zip(points, points[1:]):
        if tokens <= b:
            return ta + (tb - ta) * (tokens - a) / (b - a)
    a, ta = points[-1]
    return ta * tokens / a


def simulate(points, n, conc, prompt, output, max_batched, max_prefill):
    t, issued, done = 0.0, 0, 0
    waiting, running, ttft = [], [], []

    def issue():
        nonlocal issued
        waiting.append({"pre": 0, "gen": 0, "arrived": t})
        issued += 1

    for _ in range(min(conc, n)):
        issue()
    steps = 0
    while done < n:
        decode = [r for r in running if r["pre"] == prompt]
        budget = max_batched - len(decode)
        if max_prefill > 0:
            budget = min(budget, max_prefill)
        chunked = [r for r in running if r["pre"] < prompt]
        prefill = 0
        while budget > 0 and (chunked or waiting):
            if not chunked:
                r = waiting.pop(0)
                running.append(r)
                chunked.append(r)
            r = chunked[0]
            k = min(budget, prompt - r["pre"])
            r["pre"] += k
            budget -= k
            prefill += k
            if r["pre"] < prompt:
                break
            chunked.pop(0)
            r["first"] = True
        t += step_ms(points, len(decode) + prefill)
        steps += 1
        for r in decode:
            r["gen"] += 1
        for r in running:
            if r.pop("first", False):
                r["gen"] = 1
                ttft.append(t - r["arrived"])
        for r in [r for r in running if r["gen"] >= output]:
            running.remove(r)
            done += 1
            if issued < n:
                issue()
    ttft.sort()
    return {"output_tok_s": round(n * output / (t / 1000)), "median_ttft_ms": round(ttft[len(ttft) // 2]),
            "p99_ttft_ms": round(ttft[int(len(ttft) * 0.99)]), "steps": steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conc", type=int, default=64)
    ap.add_argument("--requests", type=int, default=0, help="0: 4 x conc, as serve_bench.sh")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--max-batched-tokens", type=int, default=2048)
    ap.add_argument("--max-prefill-tokens", type=int, default=0)
    ap.add_argument("--points", default="1:6.7,64:7.8,128:9.2,200:10,511:15.3,1968:48.2,2048:50",
                    help="tokens:ms pairs of the step-time curve, increasing")
    a = ap.parse_args()
    points = [(int(x.split(":")[0]), float(x.split(":")[1])) for x in a.points.split(",")]
    n = a.requests or 4 * a.conc
    print(simulate(points, n, a.conc, a.prompt, a.output, a.max_batched_tokens, a.max_prefill_tokens))


if __name__ == "__main__":
    main()
