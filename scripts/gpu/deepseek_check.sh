#!/usr/bin/env bash
# deepseek2 on the GPU (issue 16 part 2), after scripts/gpu/before_after.sh has built build-gpu and run the GPU tests:
# the MLA / MoE / DeepSeek test lines of $OUT/gpu_tests.log, then the DeepSeek-V2-Lite-shape benchmark
# ($OUT/deepseek_bench.json; its log in $OUT/deepseek_bench.log).
set -uo pipefail
OUT=${OUT:-/tmp/citadel_deepseek}
mkdir -p "$OUT"
grep -E "^\[ +(OK|FAILED|SKIPPED) +\] .*(Mla|MLA|mla|Moe|MoE|moe|DeepSeek)|NMSE|top-1" "$OUT/gpu_tests.log" | head -40
[ -x build-gpu/bench/citadel_deepseek_bench ] || { echo "no citadel_deepseek_bench"; exit 1; }
timeout 240 build-gpu/bench/citadel_deepseek_bench "$OUT/deepseek_bench.json" > /dev/null 2> "$OUT/deepseek_bench.log"
echo "deepseek bench rc=$?"; tail -3 "$OUT/deepseek_bench.log"; cat "$OUT/deepseek_bench.json" 2>/dev/null
