#!/usr/bin/env python3
"""Assembles bench/results/cpu-<cpu>-<date>.json from cpu_model_bench lines (one JSON object per line).

  assemble.py LINES.jsonl REPO_ROOT [KERNELS_BENCH_STREAM_OUTPUT]

Roofline: decode tokens/s cannot exceed read bandwidth / weight bytes per token. The bandwidth measured after each
run varies with the other load on this shared machine, so the ceiling used is the best read bandwidth seen in the
whole run (the most conservative ratio); each run's own figure is kept beside it.
"""
import datetime
import json
import os
import re
import subprocess
import sys


def main():
    lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    root = sys.argv[2]
    stream = open(sys.argv[3]).read() if len(sys.argv) > 3 and os.path.exists(sys.argv[3]) else ""
    cpu = re.search(r"Model name:\s*(.*)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
    cpu = cpu.group(1).strip() if cpu else "unknown-cpu"
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    date = datetime.date.today().isoformat()
    bw = max(l["read_bandwidth_GBps"] for l in lines)
    figures = {}
    for l in lines:
        roof = bw * 1e9 / l["weight_bytes_per_token"]
        l["decode_roofline_tok_s_at_best_bw"] = round(roof, 2)
        l["roofline_ratio_decode_at_best_bw"] = round(l["decode_tok_s"] / roof, 3)
        figures[f"decode_bs1_{l['name']}_tok_s"] = l["decode_tok_s"]
        figures[f"prefill_128_{l['name']}_tok_s"] = l["prefill_tok_s"]
        figures[f"roofline_ratio_decode_bs1_{l['name']}"] = l["roofline_ratio_decode_at_best_bw"]
    m_read = re.search(r"read_B/s=([\d.]+)G/s", stream)
    m_copy = re.search(r"rw_B/s=([\d.]+)G/s", stream)
    doc = {
        "device": f"{cpu}, {os.cpu_count()} cores",
        "commit": commit,
        "date": date,
        "model": "SmolLM2-135M-Instruct Q4_1 (real); citadel synth --seed 1: smollm2-135m f16/q8_0, qwen2-0.5b q8_0/f16",
        "command": "bench/cpu/run.sh (cpu_model_bench: 128-token random prompt, then 128 greedy decode steps, "
                   "one sequence, median of repeats after a warm-up)",
        "read_bandwidth_GBps": bw,
        "kernels_bench_stream_read_GBps": float(m_read.group(1)) if m_read else None,
        "copy_bandwidth_GBps": float(m_copy.group(1)) if m_copy else None,
        "loadavg_after": open("/proc/loadavg").read().split()[:3],
        "figures": figures,
        "runs": lines,
    }
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")
    path = os.path.join(root, "bench", "results", f"cpu-{slug}-{date}.json")
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(path)


if __name__ == "__main__":
    main()
