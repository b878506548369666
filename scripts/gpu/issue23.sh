#!/usr/bin/env bash
# One device call for issue 23 (and the GPU tests it touches): build (scripts/gpu/build.sh), the decoder / engine /
# device-id GPU tests, the mixed prefill + decode step benchmark (citadel_gpu_bench with CITADEL_BENCH_MIXED), then
# the serving benchmark with the default configuration (bench/gpu/serve_bench.sh). Everything lands in $OUT.
# Usage (repository root on the GPU machine): OUT=... bash scripts/gpu/issue23.sh [tests|mixed|serve ...]
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT"
parts=${*:-"tests mixed serve"}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "commit $(cat .gpu_commit 2>/dev/null || git rev-parse HEAD)"
bash scripts/gpu/build.sh || exit 1
for p in $parts; do
  case $p in
    tests)
      timeout 240 ./build-gpu/citadel_gpu_tests --gtest_filter="${GPU_TEST_FILTER:-CudaDecoder.*:CudaEngine.*:CudaDevice*:DeepSeekCuda.*}" \
        > "$OUT/gpu_tests.log" 2>&1
      echo "gpu tests rc=$?"
      grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|mixed step|top-1" "$OUT/gpu_tests.log" | head -40;;
    mixed)
      CITADEL_BENCH_MIXED=1 timeout 240 ./build-gpu/bench/citadel_gpu_bench "$OUT/mixed_step.json" > /dev/null \
        2> "$OUT/mixed_step.log"
      echo "mixed bench rc=$?"; grep -E "mixed step|error" "$OUT/mixed_step.log";;
    serve)
      timeout 400 bash bench/gpu/serve_bench.sh default;;
  esac
done
