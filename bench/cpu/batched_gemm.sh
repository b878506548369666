#!/usr/bin/env bash
# Batched CPU decode with and without the GEMM tiles (CITADEL_CPU_GEMM=off keeps the row-dot kernels), one binary,
# interleaved rounds: engine_cpu_bench at 1, 4 and 16 concurrent sequences. Writes
# bench/results/cpu-amd-epyc-<date>-batched-gemm.json (decode step time and tok/s per concurrency, medians).
#   bench/cpu/batched_gemm.sh [BUILD_DIR]   env: ROUNDS=2 MODEL=/tmp/citadel-bench/smollm2-135m-q8_0.gguf
#                                                PROMPT=32 GEN=32 CONC=1,4,16 OUT=...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-dev}
[ -x "$build/bench/engine_cpu_bench" ] || { echo "build engine_cpu_bench in $build first" >&2; exit 2; }
work=${BENCH_DIR:-/tmp/citadel-bench}
mkdir -p "$work"
model=${MODEL:-$work/smollm2-135m-q8_0.gguf}
[ -f "$model" ] || "$build/citadel" synth --preset smollm2-135m --seed 1 --dtype q8_0 --out "$model" >/dev/null
lines=$work/batched_gemm.jsonl
: > "$lines"
args="--model $model --concurrency ${CONC:-1,4,16} --prompt ${PROMPT:-32} --gen ${GEN:-32} --repeats 1"
for r in $(seq 1 "${ROUNDS:-2}"); do
  for g in off on; do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    res=$(CITADEL_CPU_GEMM=$g "$build/bench/engine_cpu_bench" $args 2>/dev/null)
    echo "{\"gemm\": \"$g\", \"round\": $r, \"loadavg\": \"$load\", \"result\": $res}" >> "$lines"
    echo "round $r gemm $g (load $load) done" >&2
  done
done
out=${OUT:-$root/bench/results/cpu-amd-epyc-$(date +%Y-%m-%d)-batched-gemm.json}
python3 - "$lines" "$out" "$(git -C "$root" rev-parse --short HEAD)" "$args" <<'EOF'
import datetime, json, statistics, sys
lines, out, commit, args = sys.argv[1:]
rows = [json.loads(l) for l in open(lines)]
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
by = {}
for r in rows:
    for c in r["result"]["by_concurrency"]:
        d = by.setdefault(r["gemm"], {}).setdefault(c["concurrency"], {"decode_step_ms": [], "decode_tok_s": []})
        d["decode_step_ms"].append(c["decode_step_ms"])
        d["decode_tok_s"].append(c["decode_tok_s"])
figures = {}
for g, cs in by.items():
    for c, d in cs.items():
        figures["gemm_%s_c%d_decode_step_ms" % (g, c)] = round(statistics.median(d["decode_step_ms"]), 2)
        figures["gemm_%s_c%d_decode_tok_s" % (g, c)] = round(statistics.median(d["decode_tok_s"]), 2)
doc = {"device": cpu + ", 2 threads", "commit": commit, "date": datetime.date.today().isoformat(),
       "model": args.split()[1],
       "command": "bench/cpu/batched_gemm.sh: per round, engine_cpu_bench " + args +
                  " with CITADEL_CPU_GEMM=off (row-dot kernels) then on (GEMM tiles from 4 tokens)",
       "figures": figures, "runs": [{"gemm": r["gemm"], "round": r["round"], "loadavg": r["loadavg"],
                                    "by_concurrency": r["result"]["by_concurrency"]} for r in rows]}
json.dump(doc, open(out, "w"), indent=1)
print(json.dumps(figures, indent=1))
print("wrote", out)
EOF
