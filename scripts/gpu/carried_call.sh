#!/usr/bin/env bash
# One device call that runs binaries built on the dev machine (no build on the device), everything a session needs
# from a scarce GPU in one go, each part under its own time cap so that one hang cannot eat the call:
#   1. the bs1 A/B of citadel_deepseek_bench (bench/gpu/deepseek_ab.sh) when AB_ARMS is set and the card is an H100
#      (issue 16's target is an H100 number), or any card with AB_ANY=1 (a before / after on one machine);
#   2. the GPU suite in two processes: FIRST (a gtest filter: the tests new this session) alone, so that a sticky
#      CUDA error there cannot fail the rest; then everything else;
#   3. serving runs with the server bundle (scripts/gpu/bundle_server.sh) when SERVE_ARMS is set: one
#      bench/gpu/serve_bench.sh per arm, the 7B file synthesised meanwhile.
# Binaries: the bundle of scripts/gpu/bundle_server.sh made with BUNDLE_TESTS=1 (.gpu-server.tar.xz: .gpu-server/
# citadel, citadel-run, gpu_tests, ds, COMMIT and lib/ with their shared libraries); carry it.
# Environment: TOTAL (seconds for the whole script, default 560), FIRST, AB_ROUNDS (3), AB_ARMS ("name='ENV=V ...'
# ..." as deepseek_ab.sh takes them), DS_FULL=1 (the benchmark's every row, head and base), BASE_TESTS (a gtest
# filter run with the base's and the head's test binaries), SERVE_ARMS
# ("label:flags,label:flags"; flags with spaces allowed, e.g. "d0:,d4:--admission-delay-steps 4"; flags may begin
# with env:NAME=V[+NAME=V], variables for that arm's server), SERVE_BENCH_RUNS
# (passed on), SKIP_SUITE=1 (only the FIRST tests), GPU_BENCH (see below). Results: $OUT/results.tgz (every file the parts wrote).
# Usage (repository root, on the device): AB_ARMS="head='X=1' base='CITADEL_MOE_EARLY=0'" bash scripts/gpu/carried_call.sh
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( ${TOTAL:-560} - $(el) )); }
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "device: $GPU"
DIR=.gpu-server
tar xJf .gpu-server.tar.xz && echo "binaries: $(cat $DIR/COMMIT | tr '\n' ' ')"
# A base commit's benchmark for before / after arms (AB_ARMS "base='BIN=.gpu-base/ds'"): .gpu-base.tar.xz, if carried.
[ -f .gpu-base.tar.xz ] && tar xJf .gpu-base.tar.xz && echo "base: $(cat .gpu-base/COMMIT)"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/$DIR/lib
if [ -n "${AB_ARMS:-}" ] && { [[ "$GPU" == *H100* ]] || [ "${AB_ANY:-0}" = 1 ]; } && [ -x "$DIR/ds" ]; then
  eval "arms=($AB_ARMS)"
  OUT=$OUT timeout $(( $(left) / 3 )) bash bench/gpu/deepseek_ab.sh "$DIR/ds" "${AB_ROUNDS:-3}" "${arms[@]}" | cut -c1-300
  echo "A/B done at $(el) s"
fi
# BASE_TESTS=filter: that gtest filter with the base's test binary (.gpu-base/gpu_tests, if carried), then with the
# head's, each in a process of its own (does a failure come from the change?).
# BASE_REPEAT=N: each binary runs the filter N times (--gtest_repeat).
if [ -n "${BASE_TESTS:-}" ]; then
  for b in .gpu-base/gpu_tests "$DIR/gpu_tests"; do
    [ -x "$b" ] || continue
    log="$OUT/base_tests_$(basename "$(dirname "$b")").log"
    CITADEL_PEER_TIMEOUT_S=10 timeout $(( $(left) / 5 )) "$b" --gtest_filter="$BASE_TESTS" \
      --gtest_repeat="${BASE_REPEAT:-1}" > "$log" 2>&1
    echo "$b: rc=$? at $(el) s"
    grep -cE "^\[  PASSED  \]" "$log" | sed 's/^/  passing repeats: /'
    grep -E "^\[  FAILED  \]" "$log" | sort | uniq -c | head -6
  done
fi
# DS_FULL=1: every row of citadel_deepseek_bench (bs1, 64 sequences, prefill 512, roofline ratios) for the head's
# binary and, if carried, the base's: issue 16's table from this card.
if [ "${DS_FULL:-0}" = 1 ] && [ -x "$DIR/ds" ]; then
  for b in "$DIR/ds" .gpu-base/ds; do
    [ -x "$b" ] || continue
    tag=$(basename "$(dirname "$b")")
    timeout $(( $(left) / 4 )) "$b" "$OUT/ds_full_${tag#.}.json" 2>/dev/null | tail -1 | cut -c1-600
  done
  echo "full rows done at $(el) s"
fi
serve=${SERVE_ARMS:-}
if [ -n "$serve" ]; then
  M=/tmp/m/deepseek-r1-distill-qwen-7b-f16.gguf
  mkdir -p /tmp/m
  (nice .gpu-server/citadel-run synth --preset deepseek-r1-distill-qwen-7b --dtype f16 --seed 1 --out $M \
     > "$OUT/synth.log" 2>&1; echo "synth rc=$? at $(el) s") &
  synth=$!
fi
if [ -x "$DIR/gpu_tests" ]; then
  filter=${FIRST:-}
  if [ -n "$filter" ]; then
    CITADEL_PEER_TIMEOUT_S=10 timeout $(( $(left) / 3 )) "$DIR/gpu_tests" --gtest_filter="$filter" > "$OUT/gpu_tests_first.log" 2>&1
    echo "first tests rc=$? at $(el) s"
    grep -E "^\[  (PASSED|SKIPPED|FAILED)  \] [0-9]+ test|^\[  FAILED  \] [A-Z]|NMSE" "$OUT/gpu_tests_first.log" | head -40
  fi
  if [ "${SKIP_SUITE:-0}" != 1 ]; then  # SKIP_SUITE=1: the FIRST tests only
    timeout $(( $(left) - ${SERVE_RESERVE:-0} )) "$DIR/gpu_tests" ${filter:+--gtest_filter="-$filter"} \
      > "$OUT/gpu_tests.log" 2>&1
    echo "gpu tests rc=$? at $(el) s"
    grep -E "^\[  (PASSED|SKIPPED|FAILED)  \] [0-9]+ test|^\[  FAILED  \] [A-Z]" "$OUT/gpu_tests.log" | head -30
    echo "passed so far: $(grep -c '^\[       OK \]' "$OUT/gpu_tests.log"); last started: $(grep '^\[ RUN' "$OUT/gpu_tests.log" | tail -1)"
  fi
fi
# GPU_BENCH="rope mixed ncu": citadel_gpu_bench parts (the bundle's gpu_bench). rope: rope_kv_write per step size,
# the default launch and the earlier per-head one (CITADEL_ROPE_KV_HEAD_BLOCKS=32), and prompt attention with and
# without split-KV; mixed: issue 23's mixed-step rows per MIXED_ARMS ("label:VAR=V ...", default: now, the earlier
# rope launch, no split-KV); ncu: per-kernel times of one mixed step (bench/gpu/step_ncu.sh, PROFILE=mixed).
# SM clock and power every 100 ms while the benchmarks and the serving arms run (sustained tensor-core work runs
# at the power limit; Nsight Compute times each kernel alone).
if [ -n "${GPU_BENCH:-}${serve}" ]; then
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,utilization.gpu --format=csv -lms 100 > "$OUT/smi.csv" &
  smi=$!
fi
for part in ${GPU_BENCH:-}; do
  [ -x "$DIR/gpu_bench" ] || { echo "no gpu_bench in the bundle"; break; }
  case $part in
    rope) for hb in 1 32; do
            CITADEL_BENCH_ROPE=1 CITADEL_ROPE_KV_HEAD_BLOCKS=$hb timeout 60 "$DIR/gpu_bench" 2>/dev/null |
              tee "$OUT/rope_hb$hb.json"
          done ;;
    mixed) for arm in ${MIXED_ARMS:-now:X=1 rope_old:CITADEL_ROPE_KV_HEAD_BLOCKS=32 nosplit:CITADEL_PREFILL_SPLIT=0}; do
             echo "mixed arm ${arm%%:*}"
             env "${arm#*:}" CITADEL_BENCH_MIXED=1 timeout $(( $(left) / 5 )) "$DIR/gpu_bench" \
               "$OUT/mixed_${arm%%:*}.json" 2>&1 | grep -E "^mixed step|copy" | cut -c1-260
           done ;;
    ncu) PATH=/usr/local/cuda/bin:$PATH PROFILE=mixed timeout $(( $(left) / 4 )) bash bench/gpu/step_ncu.sh "$OUT" \
           head="$DIR/gpu_bench" | head -30 ;;
  esac
  echo "gpu_bench $part done at $(el) s"
done
if [ -n "$serve" ]; then
  wait $synth
  IFS=',' read -ra arms <<< "$serve"
  for a in "${arms[@]}"; do
    [ "$(left)" -lt 45 ] && { echo "no time for serving arm ${a%%:*}"; break; }
    # An arm's flags may start with env:NAME=V[+NAME=V...] (variables for the server:
    # "nosplit:env:CITADEL_PREFILL_SPLIT=0", "old:env:A=1+B=0 --max-prefill-tokens 2048").
    flags=${a#*:} arm_env=X_ARM=1
    [[ "$flags" == env:* ]] && { arm_env=${flags#env:}; arm_env=${arm_env%% *}; flags=${flags#env:"$arm_env"}; }
    IFS='+' read -ra arm_envs <<< "$arm_env"
    # shellcheck disable=SC2086  # the arm's flags split into words on purpose
    env "${arm_envs[@]}" CITADEL_BIN=$PWD/.gpu-server/citadel-run OUT=$OUT timeout "$(left)" \
      bash bench/gpu/serve_bench.sh "${a%%:*}" $flags 2>&1 |
      grep -E "ready|rc=|\{'output_throughput|did not"
    t="$OUT/steps-${a%%:*}.jsonl"
    [ -s "$t" ] && python3 bench/gpu/step_trace_summary.py "$t" --json "${t%.jsonl}-summary.json" | head -60
  done
fi
[ -n "${smi:-}" ] && kill "$smi" 2>/dev/null
# Everything under $OUT in one archive (the device tool returns a limited number of files).
(cd "$OUT" && tar czf /tmp/results.tgz --exclude=results.tgz . && find . -type f ! -name results.tgz -delete &&
  mv /tmp/results.tgz results.tgz)
echo "end at $(el) s"
