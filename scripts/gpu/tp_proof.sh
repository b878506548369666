#!/usr/bin/env bash
# Issue 22's tensor-parallel proof run on the GPU machine (docs/TENSOR_PARALLEL.md), after scripts/gpu/build.sh
# citadel_gpu_tests citadel_tp_bench. With one GPU it is a dry run of the code paths; with 2-8 GPUs of one host it is
# the proof (NCCL, NVLink multicast off: NCCL_NVLS_ENABLE=0):
#   1. tests/gpu/tensor_parallel_cuda_test.cc: TP 2 / 4 against TP 1 with the ranks on one device (host-staged and
#      peer memory), and over NCCL with one rank per device (two or more devices): logits NMSE per row, top-1, ranks
#      bit-equal; tests/gpu/peer_all_reduce_test.cc (one rank per device); the fast shard load against its twin;
#   2. citadel_tp_bench on the 7B shape at TP = 2, 4, 8 (as many as there are devices), over NCCL, then with the
#      peer-memory all-reduce for small messages (TP_BENCH_COMM=peer): all-reduce bus bandwidth,
#      batch-1 decode against the per-rank roofline, 64 sequences, 512-token prefill; one device: TP 2 host-staged
#      (every rank on device 0; its times mean nothing);
#   3. DeepSeek-V2-Lite at TP 2 and 4 (expert parallel MoE); the llama-3 70B shape at TP 2: bf16 where a card holds more than 80 GB (H200), else int8 (H100);
#   4. TP_PROOF_SERVE=1 (about 75 GB of disk, and minutes to write and load): the seed's serving case, the llama-3 70B
#      shape (DeepSeek-R1-Distill-Llama-70B's) as a q8_0 GGUF, `serve --tensor-parallel 2` with the step-3 weight
#      format, 50 users, 512-token prompts, 256-token answers (bench/gpu/serve_bench.sh users50): p95 time to first
#      token and output tok/s (per user: / 50).
# Results: $OUT/tp_tests.log, $OUT/tp_bench_<shape>_tp<N>.json and .log, $OUT/serve-tp2_70b.json.
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
n_dev=$(nvidia-smi --list-gpus | wc -l)
echo "tp proof: $n_dev GPU(s): $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sort | uniq -c | tr '\n' ' ')"
timeout 300 ./build-gpu/citadel_gpu_tests --gtest_filter='CudaTensorParallel.*:PeerAllReduce.*:CudaLoad.Shard*' > "$OUT/tp_tests.log" 2>&1
echo "tp tests rc=$?"; grep -E "NMSE|^\[  (FAILED|PASSED|SKIPPED) |Failure" "$OUT/tp_tests.log" | head -40
bench() {  # LABEL ENV...: one citadel_tp_bench run
  local label=$1; shift
  env "$@" timeout 400 ./build-gpu/bench/citadel_tp_bench "$OUT/tp_bench_$label.json" > /dev/null \
    2> "$OUT/tp_bench_$label.log"
  echo "tp bench $label rc=$?"; grep -E "all-reduce|TP [0-9]|error|NCCL" "$OUT/tp_bench_$label.log" | tail -8
}
if [ "$n_dev" -lt 2 ]; then
  bench 7b_tp2_host TP_BENCH_SHAPE=7b TP_BENCH_N=2 TP_BENCH_COMM=host
  bench v2lite_tp2_host TP_BENCH_SHAPE=v2lite TP_BENCH_N=2 TP_BENCH_COMM=host
  exit 0
fi
for n in 2 4 8; do [ "$n" -le "$n_dev" ] && bench "7b_tp$n" TP_BENCH_SHAPE=7b TP_BENCH_N=$n; done
# The same with collectives up to 1 MiB through peer memory (runtime/peer_all_reduce.h): its all-reduce times and
# batch-1 decode against NCCL's above.
for n in 2 4 8; do [ "$n" -le "$n_dev" ] && bench "7b_tp${n}_peer" TP_BENCH_SHAPE=7b TP_BENCH_N=$n TP_BENCH_COMM=peer; done
# DeepSeek-V2-Lite (MLA heads split, MoE expert parallel: 64 experts over the ranks) at TP 2 and 4.
for n in 2 4; do [ "$n" -le "$n_dev" ] && bench "v2lite_tp$n" TP_BENCH_SHAPE=v2lite TP_BENCH_N=$n; done
mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
fmt=int8; [ "$mem" -gt 100000 ] && fmt=bf16
bench "70b_tp2_$fmt" TP_BENCH_SHAPE=70b TP_BENCH_N=2 TP_BENCH_FORMAT=$fmt
if [ "${TP_PROOF_SERVE:-0}" = 1 ]; then
  SERVE_BENCH_PRESET=llama-3-70b SERVE_BENCH_DTYPE=q8_0 SERVE_BENCH_RUNS=users50 SERVE_BENCH_READY_S=1800 \
    timeout 3600 bash bench/gpu/serve_bench.sh tp2_70b --tensor-parallel 2 --cuda-weights "$fmt"
fi
