#!/usr/bin/env bash
# One device call: build (CUDA on, portable host flags), run the GPU parity tests, the 7B-shape benchmark and the
# HF transformers logits check; everything lands in $OUT (logs, gpu_bench.json, hf_check.json, the merged result).
# Usage (from the repository root on the GPU machine):
#   OUT=/some/dir bash bench/gpu/run.sh [--no-hf] [--sanitize] [--quick] [--profile bf16|int8|int4|fp8|exact|exact_prefill]
# --quick: bs1 rows only (with their per-op attribution); --profile: also ncu kernel durations of one bs1 step;
# --ncu-gemv: ncu sections (throughput, stalls, instructions) of each M = 1 GEMV kernel alone, then stop.
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT"
HF=1; SAN=0; PROF=""; QUICK=""; NCU_GEMV=0
while [ $# -gt 0 ]; do
  case $1 in --no-hf) HF=0;; --sanitize) SAN=1;; --quick) QUICK=1;; --ncu-gemv) NCU_GEMV=1;; --profile) PROF=$2; shift;; esac; shift
done
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/nvidia_smi.txt"
t0=$(date +%s)
cmake -S . -B build-gpu -DCITADEL_CUDA=ON -DCITADEL_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
cmake --build build-gpu -j16 --target citadel_gpu_tests citadel_gpu_bench >> "$OUT/build.log" 2>&1 \
  || { grep -E "error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ "$NCU_GEMV" = 1 ]; then
  CITADEL_BENCH_NCU_GEMV=1 timeout 400 ncu --clock-control none --kernel-name regex:gemv --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section SchedulerStats --section WarpStateStats --section Occupancy \
    --section LaunchStats --section InstructionStats --section ComputeWorkloadAnalysis \
    ./build-gpu/bench/citadel_gpu_bench > "$OUT/ncu_gemv.txt" 2> "$OUT/ncu_gemv.log"
  echo "ncu gemv rc=$? ($(grep -c 'gemv' "$OUT/ncu_gemv.txt") kernel lines)"; tail -3 "$OUT/ncu_gemv.log"
  exit 0
fi
# The log first, then a summary: a pipe into head would kill the tests (SIGPIPE) once 60 lines matched.
./build-gpu/citadel_gpu_tests > "$OUT/gpu_tests.log" 2>&1
TEST_RC=$?
grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|nmse|error" "$OUT/gpu_tests.log" | head -60
echo "gpu tests rc=$TEST_RC"
if [ "$SAN" = 1 ]; then
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 ./build-gpu/citadel_gpu_tests \
    --gtest_filter='CudaKernels.*:Batch/GemvTest.*/0:CudaExact.*:CudaDecoder.Bf16*:CudaDecoder.F32*:*Fp8*:CudaSampling.LogitEdits*' \
    > "$OUT/memcheck.log" 2>&1
  echo "memcheck rc=$? ($(grep -c 'Invalid' "$OUT/memcheck.log") invalid accesses)"; tail -3 "$OUT/memcheck.log"
  # GemmXf32 is left out: its new cuBLASLt shapes (fp32 output, sm90 nvjet kernels synchronised through mbarriers)
  # draw racecheck reports inside cuBLAS's own kernels (r11); its split / combine kernels use no shared memory.
  timeout 240 compute-sanitizer --tool racecheck --error-exitcode 9 ./build-gpu/citadel_gpu_tests \
    --gtest_filter='CudaKernels.*:Batch/GemvTest.*/0:CudaExact.*:CudaSampling.LogitEdits*:CudaSampling.Greedy*:-CudaKernels.GemmXf32*' \
    > "$OUT/racecheck.log" 2>&1
  echo "racecheck rc=$?"; tail -2 "$OUT/racecheck.log"
fi
mkdir -p /tmp/citadel_hf
CITADEL_BENCH_QUICK=$QUICK ./build-gpu/bench/citadel_gpu_bench "$OUT/gpu_bench.json" /tmp/citadel_hf 2> "$OUT/bench.log"
echo "bench rc=$?"; cat "$OUT/bench.log" | tail -30
if [ -n "$PROF" ]; then  # every kernel of the profiled range; the last decode step is the tail of the list
  CITADEL_BENCH_PROFILE=$PROF timeout 300 ncu --profile-from-start off --clock-control none --graph-profiling node \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv ./build-gpu/bench/citadel_gpu_bench \
    > "$OUT/ncu_$PROF.csv" 2> "$OUT/ncu_$PROF.log"
  echo "ncu rc=$? ($(wc -l < "$OUT/ncu_$PROF.csv") lines)"; tail -3 "$OUT/ncu_$PROF.log"
fi
if [ "$HF" = 1 ]; then
  PYTHONUNBUFFERED=1 python3 bench/gpu/hf_check.py /tmp/citadel_hf "$OUT/hf_check.json" > "$OUT/hf_check.log" 2>&1
  echo "hf check rc=$?"; tail -12 "$OUT/hf_check.log"
fi
python3 - "$OUT" "$TEST_RC" <<'PY'
import json, os, subprocess, sys
out, test_rc = sys.argv[1], int(sys.argv[2])
r = json.load(open(f"{out}/gpu_bench.json"))
if os.path.exists(f"{out}/hf_check.json"):
    r.update(json.load(open(f"{out}/hf_check.json")))
r["gpu_tests_rc"] = test_rc
try:
    r["commit"] = open(".gpu_commit").read().strip()
except OSError:
    r["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
dev = r["device"].lower().replace("nvidia ", "").split()[0]
json.dump(r, open(f"{out}/gpu-{dev}-2026-11-22.json", "w"), indent=1)
print(json.dumps(r, indent=1))
PY
# The device tool brings back a limited number of files: the logs travel as one archive beside the JSON.
(cd "$OUT" && tar czf /tmp/citadel_logs.tgz --exclude='*.json' --exclude=bench.log . && \
  find . -maxdepth 1 -type f ! -name '*.json' ! -name bench.log -delete && mv /tmp/citadel_logs.tgz logs.tgz)
