#!/usr/bin/env bash
# Device-fault check on a GPU machine (CUDA toolkit, g++, CMake, GoogleTest; SQLite not needed: without it only the
# engine, the kernels and the GPU tests are configured). Builds citadel_gpu_tests with -DCITADEL_CUDA=ON and runs
# the CudaFault tests (tests/gpu/fault_test.cc): an injected CUDA fault at step N (CITADEL_CUDA_FAULT_AFTER_STEPS).
# Out of memory: the step's requests fail with the CUDA error and a later request runs to completion. Sticky
# illegal address: the requests in flight fail, new ones are refused, the engine is marked failed. The process stays
# alive in both (each case runs in its own child process).
# Output goes to stdout and, when $OUT is set, to $OUT/fault.txt. BUILD=dir overrides the build directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-gpu}
log=/dev/null
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && log="$OUT/fault.txt"; fi
{
  echo "== fault_check $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown) on $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
} | tee "$log"
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$BUILD" -DCITADEL_CUDA=ON -DCITADEL_TESTS=ON -DCMAKE_BUILD_TYPE=Release -Wno-dev --log-level=WARNING \
  "${launcher[@]}" 2>&1 | tee -a "$log"
cmake --build "$BUILD" -j "$(nproc)" --target citadel_gpu_tests 2>&1 | tail -n 20 | tee -a "$log"
set +e
"$BUILD/citadel_gpu_tests" --gtest_filter='CudaFault.*' 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -eq 0 ]; then echo "fault_check: PASS" | tee -a "$log"; else echo "fault_check: FAIL ($rc)" | tee -a "$log"; fi
exit "$rc"
