#!/usr/bin/env bash
# Per-kernel GPU time of (the first 300 kernels of) a bf16 512-token prefill (Nsight Compute, clocks left alone), for
# two builds of citadel_gpu_bench: where a prefill row differs between commits, this says whether the kernels or the gaps between
# them moved. Usage: prefill_ncu.sh OUT_DIR NAME=BENCH_BINARY...; writes OUT_DIR/prefill_ncu_NAME.csv and prints each
# build's kernel time by kernel family.
set -uo pipefail
out=$1; shift
for nb in "$@"; do
  name=${nb%%=*} bin=${nb#*=}
  CITADEL_BENCH_PROFILE=bf16_prefill ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum \
    --launch-count 300 --csv "$bin" > "$out/prefill_ncu_$name.csv" 2> "$out/prefill_ncu_$name.log"
  echo "$name: rc=$? $(grep -E 'prefill 512' "$out/prefill_ncu_$name.log")"
done
for nb in "$@"; do python3 "$(dirname "$0")/ncu_summary.py" "$out/prefill_ncu_${nb%%=*}.csv"; done
