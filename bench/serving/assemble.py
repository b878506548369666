#!/usr/bin/env python3
"""Assemble bench/serving/smollm2.sh outputs into bench/results/serving-<cpu>-<date>-smollm2.json.

usage: assemble.py WORK_DIR REPO_ROOT REPEATS
Per configuration: the median over repeats of every citadel bench figure (vLLM names, prefixed serving_), with
min/max spread for the headline figures; the raw runs are kept under "runs".
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

work, root, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load(name):
    return json.load(open(os.path.join(work, name + ".json")))


HEADLINE = ["output_throughput", "request_throughput", "total_token_throughput", "mean_ttft_ms", "median_ttft_ms",
            "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms",
            "p99_itl_ms", "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms", "completed", "failed", "duration"]


def unit_key(k):
    # Throughputs carry their unit in the key; latencies already end in _ms.
    if k == "output_throughput":
        return "output_throughput_tok_s"
    if k == "total_token_throughput":
        return "total_token_throughput_tok_s"
    if k == "request_throughput":
        return "request_throughput_req_s"
    if k == "duration":
        return "duration_s"
    return k


def summarize(prefix):
    runs = [load(f"{prefix}-r{r}") for r in range(1, repeats + 1)]
    out = {"bench_args": runs[0]["bench_args"], "loadavg_1min": [float(r["loadavg_after"].split()[0]) for r in runs]}
    for k in HEADLINE:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if not vals:
            continue
        out["serving_" + unit_key(k)] = round(statistics.median(vals), 4)
        out["serving_" + unit_key(k) + "_min"] = round(min(vals), 4)
        out["serving_" + unit_key(k) + "_max"] = round(max(vals), 4)
    return out, runs


def stats_summary(path):
    s = json.load(open(path))
    srv = s["server"]
    res = {}
    for k in ("received_to_submit", "received_to_first_step"):
        res[k + "_ms"] = {q.replace("_ms", ""): round(v, 4) if isinstance(v, float) else v
                          for q, v in srv[k].items()}  # already in ms
    res["responses_2xx"] = srv["responses_2xx"]
    res["responses_4xx"] = srv["responses_4xx"]
    res["responses_5xx"] = srv["responses_5xx"]
    eng = s.get("engine") or s.get("model") or {}
    res["engine"] = eng
    return res, s


commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
date = datetime.date.today().isoformat()
cfgs = {"c1": "concurrency_1", "c4": "concurrency_4", "c16": "concurrency_16", "prefix-c4": "prefix_repetition_c4"}
result = {
    "device": f"{cpu_name()}, {os.cpu_count()} cores (shared with other builds/helpers: see loadavg)",
    "commit": commit,
    "date": date,
    "model": "SmolLM2-135M-Instruct Q4_1 (real weights, citadel pull smollm2-135m), CPU runner",
    "command": "bench/serving/smollm2.sh (citadel serve --model smollm2-135m --port 0; citadel bench ...; "
               "the exact bench arguments are under each configuration's bench_args)",
    "client": "citadel bench (C++ Beast), same machine, loopback; client and server share the 2 cores",
    "repeats": repeats,
    "configs": {},
    "runs": [],
}
for prefix, key in cfgs.items():
    summ, runs = summarize(prefix)
    result["configs"][key] = summ
    result["runs"] += runs

rps = []
for r in range(1, repeats + 1):
    run = load(f"rps1000-r{r}")
    st, raw = stats_summary(os.path.join(work, f"stats-rps-r{r}.json"))
    rps.append({"bench": run, "server_stats": st, "loadavg_before": run["loadavg_before"],
                "loadavg_after": run["loadavg_after"]})
    result["runs"].append(run)


def med(vals):
    return round(statistics.median(vals), 4), round(min(vals), 4), round(max(vals), 4)


open_loop = {"bench_args": rps[0]["bench"]["bench_args"],
             "note": "fresh server per repeat; server stats include the 20-request warm-up; received_to_first_step "
                     "includes queueing behind the model when arrivals outpace it"}
for k, f in [("completed", lambda x: x["bench"]["completed"]), ("failed", lambda x: x["bench"]["failed"]),
             ("request_throughput_req_s", lambda x: x["bench"]["request_throughput"]),
             ("duration_s", lambda x: x["bench"]["duration"]),
             ("median_ttft_ms", lambda x: x["bench"]["median_ttft_ms"]),
             ("p99_ttft_ms", lambda x: x["bench"]["p99_ttft_ms"]),
             ("responses_2xx", lambda x: x["server_stats"]["responses_2xx"]),
             ("responses_4xx", lambda x: x["server_stats"]["responses_4xx"])]:
    m, lo, hi = med([f(x) for x in rps])
    open_loop["serving_" + k] = m
    open_loop["serving_" + k + "_min"] = lo
    open_loop["serving_" + k + "_max"] = hi
for k in ("received_to_submit_ms", "received_to_first_step_ms"):
    for q in ("mean", "p50", "p90", "p99", "max"):
        vals = [x["server_stats"][k][q] for x in rps if isinstance(x["server_stats"][k].get(q), (int, float))]
        if vals:
            m, lo, hi = med(vals)
            open_loop[f"server_{k[:-3]}_{q}_ms"] = m
            open_loop[f"server_{k[:-3]}_{q}_ms_min"] = lo
            open_loop[f"server_{k[:-3]}_{q}_ms_max"] = hi
open_loop["per_repeat_server_stats"] = [x["server_stats"] for x in rps]
open_loop["loadavg"] = [[x["loadavg_before"], x["loadavg_after"]] for x in rps]
result["configs"]["open_loop_1000_rps_1_token"] = open_loop
if os.path.exists(os.path.join(work, "stats-closed.json")):
    result["closed_loop_server_stats"] = stats_summary(os.path.join(work, "stats-closed.json"))[0]

cpu_short = "amd-epyc" if "EPYC" in cpu_name() else cpu_name().lower().split()[0]
out = os.path.join(root, "bench", "results", f"serving-{cpu_short}-{date}-smollm2.json")
json.dump(result, open(out, "w"), indent=2, sort_keys=False)
open(out, "a").write("\n")
print(out)
