#!/usr/bin/env bash
# Issue 16's proof on the GPU: the DeepSeek-V2-Lite shape (weights generated on the device) against HF transformers
# on the same weights, 256 teacher-forced positions. One device call, from the repository root:
#   OUT=/some/dir bash scripts/gpu/deepseek_hf.sh [--bench] [--cpu-exact] [--exact]
# Steps: build citadel_deepseek_bench and citadel_deepseek_cpu_ref in build-gpu (configured here if missing;
# incremental otherwise); the mapping self-test on the CPU (tiny V2 and V3: Citadel's CPU exact path vs HF fp32,
# proves this machine's transformers takes the mapping); the Citadel dump (bf16: one prefill step, 64-token chunks,
# 128 prefill + 128 decode steps; the benchmark itself too with --bench); then bench/gpu/deepseek_hf_check.py (HF
# bf16 and fp32 on the GPU, after Citadel's process has exited). --cpu-exact: also Citadel's CPU exact path at the
# V2-Lite shape (citadel_deepseek_cpu_ref: a 31 GB bf16 GGUF in $DUMP_CPU, deleted after use, ~63 GB of host memory
# for the f32 weights; run in the background beside the GPU steps, a few minutes) as a fourth row. Output in $OUT:
# deepseek_hf.json, deepseek_hf_selftest.json, deepseek_hf.log (everything printed), deepseek_bench.json with --bench.
# --exact: also the GPU exact path (CITADEL_BENCH_EXACT=1: bf16 weights, fp32 activations and latent cache; dump in
# $DUMP_EXACT, log deepseek_bench_exact.log) as rows cuda_exact (one prefill step), cuda_exact_chunked and
# cuda_exact_decode.
set -uo pipefail
OUT=${OUT:-/tmp/citadel_deepseek_hf}
DUMP=${DUMP:-/tmp/citadel_deepseek_dump}
DUMP_CPU=${DUMP_CPU:-/tmp/citadel_deepseek_cpu_dump}
DUMP_EXACT=${DUMP_EXACT:-/tmp/citadel_deepseek_exact_dump}
BENCH=0; CPU_EXACT=0; GPU_EXACT=0
for a in "$@"; do
  case $a in
    --bench) BENCH=1;; --cpu-exact) CPU_EXACT=1;; --exact) GPU_EXACT=1;; *) echo "unknown argument $a"; exit 2;;
  esac
done
mkdir -p "$OUT" "$DUMP" "$DUMP_CPU" "$DUMP_EXACT"
LOG="$OUT/deepseek_hf.log"
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }
t0=$(date +%s)
if [ ! -f build-gpu/CMakeCache.txt ]; then
  cmake -S . -B build-gpu -DCITADEL_CUDA=ON -DCITADEL_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=90a -Wno-dev > /tmp/deepseek_hf_build.log 2>&1
fi
cmake --build build-gpu -j16 --target citadel_deepseek_bench citadel_deepseek_cpu_ref >> /tmp/deepseek_hf_build.log 2>&1 \
  || { grep -E "error" /tmp/deepseek_hf_build.log | head -30 | tee -a "$LOG"; exit 1; }
say "build: $(( $(date +%s) - t0 )) s"

EXTRA=()
CPU_PID=
if [ "$CPU_EXACT" = 1 ]; then
  timeout 420 build-gpu/bench/citadel_deepseek_cpu_ref "${CPU_PRESET:-deepseek-v2-lite}" "$DUMP_CPU" 256 > "$OUT/cpu_exact.log" 2>&1 &
  CPU_PID=$!
  CPU_EXTRA=(--extra-run "cpu_exact=$DUMP_CPU")
fi

t1=$(date +%s)
PYTHONUNBUFFERED=1 timeout 180 python3 bench/gpu/deepseek_hf_check.py --selftest-tiny \
  build-gpu/bench/citadel_deepseek_cpu_ref "$OUT/deepseek_hf_selftest.json" 2>&1 | grep -v "positions written" | tee -a "$LOG"
rc=${PIPESTATUS[0]}
say "mapping self-test rc=$rc ($(( $(date +%s) - t1 )) s)"

t1=$(date +%s)
if [ "$BENCH" = 1 ]; then
  timeout 300 build-gpu/bench/citadel_deepseek_bench "$OUT/deepseek_bench.json" "$DUMP" > /dev/null 2> "$OUT/deepseek_bench.log"
else
  CITADEL_BENCH_DUMP_ONLY=1 timeout 120 build-gpu/bench/citadel_deepseek_bench /dev/null "$DUMP" \
    > /dev/null 2> "$OUT/deepseek_bench.log"
fi
rc=$?
say "citadel dump rc=$rc ($(( $(date +%s) - t1 )) s)"
grep -E "cuda memory plan|weights generated" "$OUT/deepseek_bench.log" | tee -a "$LOG"
if [ "$rc" != 0 ]; then
  tail -5 "$OUT/deepseek_bench.log" | tee -a "$LOG"
  [ -n "$CPU_PID" ] && kill "$CPU_PID" 2>/dev/null
  exit 1
fi

if [ "$GPU_EXACT" = 1 ]; then
  t1=$(date +%s)
  CITADEL_BENCH_EXACT=1 CITADEL_BENCH_DUMP_ONLY=1 timeout 180 build-gpu/bench/citadel_deepseek_bench /dev/null \
    "$DUMP_EXACT" > /dev/null 2> "$OUT/deepseek_bench_exact.log"
  rc=$?
  say "citadel exact-path dump rc=$rc ($(( $(date +%s) - t1 )) s)"
  grep -E "cuda memory plan" "$OUT/deepseek_bench_exact.log" | tee -a "$LOG"
  if [ "$rc" = 0 ]; then
    EXTRA+=(--extra-run "cuda_exact=$DUMP_EXACT")
  else
    tail -5 "$OUT/deepseek_bench_exact.log" | tee -a "$LOG"
  fi
fi

if [ "$CPU_EXACT" = 1 ]; then
  t1=$(date +%s)
  wait "$CPU_PID"
  rc=$?
  cat "$OUT/cpu_exact.log" >> "$LOG"; tail -3 "$OUT/cpu_exact.log"
  say "cpu exact rc=$rc (waited $(( $(date +%s) - t1 )) s)"
  [ "$rc" = 0 ] && EXTRA+=("${CPU_EXTRA[@]}")
fi

t1=$(date +%s)
PYTHONUNBUFFERED=1 timeout 360 python3 bench/gpu/deepseek_hf_check.py "$DUMP" "$OUT/deepseek_hf.json" "${EXTRA[@]}" 2>&1 \
  | tee -a "$LOG"
rc=${PIPESTATUS[0]}
say "hf check rc=$rc ($(( $(date +%s) - t1 )) s); total $(( $(date +%s) - t0 )) s"
exit "$rc"
