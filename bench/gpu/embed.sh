#!/usr/bin/env bash
# The CUDA embedding runner on the GPU machine, one device call: build the GPU tests and citadel_embed_bench, run the
# CPU-vs-CUDA parity tests (tests/gpu/embedding_cuda_test.cc) under compute-sanitizer memcheck too, then the
# throughput bench (32-token inputs, batch 1 and 32, CPU runner against CUDA runner) into $OUT/embed_bench.json.
# Usage (repository root on the GPU machine): OUT=/some/dir bash bench/gpu/embed.sh [--no-memcheck]
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
bash scripts/gpu/build.sh citadel_gpu_tests citadel_embed_bench || exit 1
echo "build warnings: $(grep -c -i 'warning' "$OUT/build.log")"
build-gpu/citadel_gpu_tests --gtest_filter='CudaEmbedding.*' > "$OUT/embed_tests.log" 2>&1
echo "embedding tests rc=$?"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|cuda vs cpu|alone vs" "$OUT/embed_tests.log" | head -40
if [ "${1:-}" != --no-memcheck ]; then
  timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/citadel_gpu_tests \
    --gtest_filter='CudaEmbedding.SmallShapes*:CudaEmbedding.BadInputs*:CudaEmbedding.Unnormalised*' \
    > "$OUT/embed_memcheck.log" 2>&1
  echo "memcheck rc=$? ($(grep -c 'Invalid' "$OUT/embed_memcheck.log") invalid accesses)"
fi
build-gpu/bench/citadel_embed_bench --commit "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" \
  --out "$OUT/embed_bench.json" > "$OUT/embed_bench.log" 2>&1
echo "bench rc=$?"
cat "$OUT/embed_bench.json" 2>/dev/null || tail -20 "$OUT/embed_bench.log"
