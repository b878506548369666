#!/usr/bin/env bash
# Engine + CpuRunner throughput vs concurrency (issue 5) on the synthetic SmolLM2-135M q8_0 (seed 1).
# Writes bench/results/cpu-<cpu>-<date>-engine.json (format: /work/shared/BENCHMARKS.md).
#   bench/cpu/engine.sh [BUILD_DIR]     env: REPEATS=3, CONC=1,4,16,64
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
cmake -S "$root" -B "$build" -DCITADEL_CUDA=OFF >/dev/null
cmake --build "$build" --target engine_cpu_bench -j2 >/dev/null
work=${BENCH_DIR:-/tmp/citadel-engine-bench}
mkdir -p "$work"
args="--concurrency ${CONC:-1,4,16,64} --prompt 128 --gen 64 --repeats ${REPEATS:-3}"
before=$(cut -d' ' -f1-3 /proc/loadavg)
"$build/bench/engine_cpu_bench" $args >"$work/line.json" 2>"$work/log.txt"
after=$(cut -d' ' -f1-3 /proc/loadavg)
cat "$work/log.txt" >&2
python3 - "$work/line.json" "$root" "$before" "$after" "$args" <<'EOF'
import datetime, json, os, subprocess, sys
line, root, before, after, args = sys.argv[1:]
d = json.load(open(line))
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
date = datetime.date.today().isoformat()
figures = {}
for r in d["by_concurrency"]:
    c = r["concurrency"]
    figures[f"engine_c{c}_generated_tok_s"] = r["generated_tok_s"]
    figures[f"engine_c{c}_decode_tok_s"] = r["decode_tok_s"]
    figures[f"engine_c{c}_decode_step_ms"] = r["decode_step_ms"]
    figures[f"engine_c{c}_prefill_tok_s"] = r["prefill_tok_s"]
    figures[f"engine_c{c}_speedup_decode_vs_c1"] = r["speedup_decode_vs_first"]
    figures[f"engine_c{c}_speedup_generated_vs_c1"] = r["speedup_e2e_vs_first"]
out = {
    "device": f"{cpu}, {os.cpu_count()} cores (shared with other builds/helpers: see loadavg)",
    "commit": commit,
    "date": date,
    "model": "synthetic smollm2-135m q8_0, seed 1 (citadel synth --preset smollm2-135m --dtype q8_0 --seed 1)",
    "command": f"CITADEL_THREADS={os.environ.get('CITADEL_THREADS', '')} bench/cpu/engine.sh  (engine_cpu_bench {args})",
    "what": "Engine (synchronous step()) + CpuRunner: C greedy requests of 128 random prompt tokens and exactly 64 new "
            "tokens submitted at once, stepped until done; prefix caching off. generated_tok_s = C*64 / round wall "
            "time (prefill included); decode_tok_s = tokens of pure-decode steps / their time; decode_step_ms = median "
            "pure-decode step; median over repeats, _min/_max = spread.",
    "loadavg_before": before,
    "loadavg_after": after,
    "figures": figures,
    "runs": d,
}
cpu_short = "amd-epyc" if "EPYC" in cpu else cpu.lower().split()[0]
p = os.path.join(root, "bench", "results", f"cpu-{cpu_short}-{date}-engine.json")
json.dump(out, open(p, "w"), indent=2)
open(p, "a").write("\n")
print(p)
EOF
