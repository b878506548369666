#!/usr/bin/env bash
# Model load on the GPU machine (issue 23: a 15 GB GGUF ready in <= 10 s): build the load benchmark and the GPU tests,
# run the load parity tests (CudaLoad.*), then citadel_load_bench on the 7B-shape f16 GGUF (written to $MODEL first if
# absent, ~15.2 GB), fast vs reference path, warm and cold page cache. Results: $OUT/load.json (+ logs).
# Usage (repository root): OUT=/some/dir MODEL=/tmp/r1-7b-f16.gguf bash bench/gpu/load.sh [extra citadel_load_bench args]
set -uo pipefail
OUT=${OUT:-/tmp/citadel_load_out}
MODEL=${MODEL:-/tmp/citadel-r1-distill-qwen-7b-f16.gguf}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/nvidia_smi.txt"
echo "host: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; disk: $(df -h "$(dirname "$MODEL")" | tail -1)"
bash scripts/gpu/build.sh citadel_gpu_tests citadel_load_bench || exit 1
./build-gpu/citadel_gpu_tests --gtest_filter='CudaLoad.*' > "$OUT/load_tests.log" 2>&1
echo "load tests rc=$?"; grep -E "^\[  (FAILED|PASSED|SKIPPED|     OK) |Failure" "$OUT/load_tests.log" | head -20
COMMIT=$(cat .gpu_commit 2>/dev/null || git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
./build-gpu/bench/citadel_load_bench --model "$MODEL" --commit "$COMMIT" --out "$OUT/load.json" "$@" \
  > /dev/null 2> "$OUT/load_bench.log"
echo "load bench rc=$?"; tail -8 "$OUT/load_bench.log"; cat "$OUT/load.json"
