#!/usr/bin/env bash
# Per-kernel GPU time of one DeepSeek-V2-Lite-shape step (citadel_deepseek_bench's CITADEL_BENCH_PROFILE modes:
# decode_bs1, decode_b64, prefill) under Nsight Compute (clocks left alone; kernels inside CUDA graphs profiled one by
# one). Usage: deepseek_ncu.sh OUT_DIR [MODE...]; env is passed through (e.g. CITADEL_MOE_PATH). Writes
# OUT_DIR/deepseek_ncu_MODE.csv and prints each mode's kernel time by family.
set -uo pipefail
out=$1; shift
bin=build-gpu/bench/citadel_deepseek_bench
for mode in "${@:-decode_bs1 decode_b64 prefill}"; do
  for m in $mode; do
    CITADEL_BENCH_PROFILE=$m timeout 240 ncu --clock-control none --profile-from-start off --graph-profiling node \
      --metrics gpu__time_duration.sum --csv "$bin" > "$out/deepseek_ncu_$m.csv" 2> "$out/deepseek_ncu_$m.log"
    echo "$m: rc=$? $(grep -E 'profiled' "$out/deepseek_ncu_$m.log")"
    python3 "$(dirname "$0")/ncu_summary.py" "$out/deepseek_ncu_$m.csv"
  done
done
