#!/usr/bin/env bash
# Device-side SmolLM2 parity (tests/gpu/smollm2_test.cc) plus the GPU kernel/decoder tests, in one or two calls.
# The 98 MB GGUF exceeds one call's 64 MiB transfer: it arrives as .gpu-model/part-* pieces over two calls and is
# reassembled under /tmp/m (kept between warm calls). Builds into /tmp/bg (outside the carried tree, so a second
# call with the same sources rebuilds nothing).
# Usage (repository root on the GPU machine): bash bench/gpu/smollm2.sh stage|run
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT" /tmp/m
MODEL_DIR=${MODEL_DIR:-../.gpu-model}
for p in "$MODEL_DIR"/part-*; do [ -f "$p" ] && cp "$p" /tmp/m/ && echo "staged $(basename "$p")"; done
t0=$(date +%s)
cmake -S . -B /tmp/bg -DCITADEL_CUDA=ON -DCITADEL_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
cmake --build /tmp/bg -j16 --target citadel_gpu_tests >> "$OUT/build.log" 2>&1 \
  || { grep -E "error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ "${1:-run}" = stage ]; then
  /tmp/bg/citadel_gpu_tests --gtest_filter='CudaKernels.*:CudaDecoder.*' 2>&1 | tee "$OUT/gpu_tests_stage.log" \
    | grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|error" | head -40
  exit 0
fi
if [ -f /tmp/m/part-aa ] && [ -f /tmp/m/part-ab ]; then
  cat /tmp/m/part-aa /tmp/m/part-ab > /tmp/m/SmolLM2.gguf
  ls -l /tmp/m/SmolLM2.gguf; sha256sum /tmp/m/SmolLM2.gguf
fi
export CITADEL_SMOLLM2_GGUF=/tmp/m/SmolLM2.gguf
/tmp/bg/citadel_gpu_tests 2>&1 | tee "$OUT/gpu_tests.log" \
  | grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|smollm2|error" | head -80
echo "gpu tests rc=${PIPESTATUS[0]}"
