#!/usr/bin/env bash
# Per-kernel GPU time of one profiled step of citadel_gpu_bench under Nsight Compute (clocks left alone), for one or
# more builds: where a step's time goes, and where a row differs between commits, whether the kernels or the gaps
# between them moved. PROFILE (default bf16_prefill: a 512-token prefill; mixed: issue 23's mixed step, 64 decode rows
# + a 448-token chunk; any CITADEL_BENCH_PROFILE mode) picks the step; LAUNCHES (default 400) caps the kernels profiled.
# Usage: step_ncu.sh OUT_DIR NAME=BENCH_BINARY...; writes OUT_DIR/ncu_PROFILE_NAME.csv and prints each build's kernel
# time by kernel family (ncu_summary.py).
set -uo pipefail
out=$1; shift
prof=${PROFILE:-bf16_prefill}
for nb in "$@"; do
  name=${nb%%=*} bin=${nb#*=}
  CITADEL_BENCH_PROFILE=$prof ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum \
    --launch-count "${LAUNCHES:-400}" --csv "$bin" > "$out/ncu_${prof}_$name.csv" 2> "$out/ncu_${prof}_$name.log"
  echo "$name: rc=$? $(grep -E 'prefill 512|mixed step' "$out/ncu_${prof}_$name.log")"
done
for nb in "$@"; do python3 "$(dirname "$0")/ncu_summary.py" "$out/ncu_${prof}_${nb%%=*}.csv"; done
