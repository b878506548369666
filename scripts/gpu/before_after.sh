#!/usr/bin/env bash
# The GPU benchmark table before and after a change, on one machine in one call (issue 16's proof of no loss), plus
# the GPU tests, the HF transformers check and the device-fault check of the new tree.
#   BASE: an untouched tree of the base commit (default .base, made here with
#         `rm -rf .base && mkdir .base && git archive <commit> | tar -x -C .base && echo <commit> > .base/.gpu_commit`
#         and carried by the device tool); the current tree is "after" (.gpu_commit names its commit).
# Both trees build in parallel (citadel_gpu_bench; the tests for "after" only); then the benchmarks run one after the
# other: before, after, before, after (each row's runs are kept and their medians compared; the second round is
# skipped when the call runs late). Output in $OUT: before_{1,2}.json, after_{1,2}.json are folded into before_after.json;
# logs: gpu_tests.log, fault.txt, hf_after.json, bench_logs.txt.
set -uo pipefail
OUT=${OUT:-/tmp/citadel_before_after}
BASE=${BASE:-.base}  # ROUNDS: rounds of (before, after) benchmarks, default 2
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
cfg=(-DCITADEL_CUDA=ON -DCITADEL_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -Wno-dev)
t0=$(date +%s)
(cmake -S "$BASE" -B "$BASE/build-gpu" "${cfg[@]}" && cmake --build "$BASE/build-gpu" -j8 --target citadel_gpu_bench) \
  > /tmp/build_base.log 2>&1 &
(cmake -S . -B build-gpu "${cfg[@]}" && cmake --build build-gpu -j8 --target citadel_gpu_tests citadel_gpu_bench citadel_deepseek_bench) \
  > /tmp/build_after.log 2>&1 &
wait
echo "builds: $(( $(date +%s) - t0 )) s"
for t in "$BASE/build-gpu" build-gpu; do
  [ -x "$t/bench/citadel_gpu_bench" ] || { echo "build failed: $t"; grep -E "error" /tmp/build_*.log | head -30; exit 1; }
done
./build-gpu/citadel_gpu_tests > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests rc=$?"; grep -E "^\[  (FAILED|PASSED|SKIPPED) \]|Failure" "$OUT/gpu_tests.log" | head -30
: > /tmp/bench_logs.txt
for run in $(seq 1 "${ROUNDS:-2}"); do
  if [ "$run" -gt 1 ] && [ $(( $(date +%s) - t0 )) -gt 330 ]; then echo "round $run skipped (time)"; break; fi
  for side in before after; do
    bin=./build-gpu/bench/citadel_gpu_bench; [ $side = before ] && bin=$BASE/build-gpu/bench/citadel_gpu_bench
    hf=(); [ $side = after ] && [ $run = 1 ] && hf=(/tmp/citadel_hf)
    mkdir -p /tmp/citadel_hf
    t=$(date +%s)
    CITADEL_BENCH_QUICK= $bin "/tmp/${side}_$run.json" "${hf[@]}" 2>> /tmp/bench_logs.txt > /dev/null
    echo "bench $side $run rc=$? $(( $(date +%s) - t )) s"
    cp "/tmp/${side}_$run.json" "$OUT/" 2>/dev/null  # partial results come back even if the call is cut short
  done
done
cp /tmp/bench_logs.txt "$OUT/bench_logs.txt"
python3 - "$OUT" "$BASE" <<'PY'
import json, statistics, sys
out, base = sys.argv[1], sys.argv[2]
import os
runs = {s: [json.load(open(f"/tmp/{s}_{r}.json")) for r in (1, 2) if os.path.exists(f"/tmp/{s}_{r}.json")]
        for s in ("before", "after")}
commit = lambda p: open(p).read().strip() if os.path.exists(p) else "unknown"
res = {"device": runs["after"][0]["device"], "before_commit": commit(f"{base}/.gpu_commit"),
       "after_commit": commit(".gpu_commit"), "rows": {}}
for k in runs["after"][0]:
    if not k.endswith("tok_s") or k not in runs["before"][0]:
        continue
    b = [r[k] for r in runs["before"]]; a = [r[k] for r in runs["after"]]
    mb, ma = statistics.median(b), statistics.median(a)
    res["rows"][k] = {"before": b, "after": a, "ratio": round(ma / mb, 4) if mb else None}
    print(f"{k:40s} before {b} after {a} ratio {res['rows'][k]['ratio']}")
res["worst_ratio"] = min(v["ratio"] for v in res["rows"].values() if v["ratio"])
json.dump(res, open(f"{out}/before_after.json", "w"), indent=1)
print("worst ratio", res["worst_ratio"])
PY
BUILD=build-gpu bash scripts/gpu/fault_check.sh > /dev/null 2>&1; echo "fault check rc=$?"
PYTHONUNBUFFERED=1 python3 bench/gpu/hf_check.py /tmp/citadel_hf "$OUT/hf_after.json" > /tmp/hf.log 2>&1
echo "hf check rc=$?"; tail -4 /tmp/hf.log
