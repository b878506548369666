#!/usr/bin/env bash
# Builds the CUDA targets on the GPU machine into build-gpu (kept between calls while the machine stays warm):
# the citadel binary (serve, bench, synth), the GPU tests and the GPU benchmarks. That machine lacks the SQLite,
# libyaml and CLI11 headers and libraries: they travel in .gpu-deps/ (include/, lib/ with the static libsqlite3.a
# and libyaml.a of this Debian machine; an ignored path, passed to the device tool's `carry`).
# Usage (repository root on the GPU machine): bash scripts/gpu/build.sh [targets...]; prints "build: N s".
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT"
D=$PWD/.gpu-deps
[ -f "$D/include/sqlite3.h" ] || { echo "no .gpu-deps: carry it (see this script's header)"; exit 1; }
targets=${*:-citadel citadel_gpu_tests citadel_gpu_bench citadel_deepseek_bench}
# Google Benchmark (the CPU benchmarks, e.g. bench/kernels_bench) where .gpu-deps/bm holds Debian's libbenchmark-dev
# (include/, lib/x86_64-linux-gnu/ with its cmake/benchmark config, in that layout).
BM=()
[ -d "$D/bm/lib/x86_64-linux-gnu/cmake/benchmark" ] && BM=(-Dbenchmark_DIR="$D/bm/lib/x86_64-linux-gnu/cmake/benchmark")
t0=$(date +%s)
cmake -S . -B build-gpu "${BM[@]}" -DCITADEL_CUDA=ON -DCITADEL_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -Wno-dev -DSQLite3_INCLUDE_DIR="$D/include" -DSQLite3_LIBRARY="$D/lib/libsqlite3.a" -DYAML_INCLUDE_DIR="$D/include" \
  -DYAML_LIBRARY="$D/lib/libyaml.a" -DCMAKE_CXX_FLAGS="-I$D/include" > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
for t in $targets; do
  cmake --build build-gpu -j16 --target "$t" >> "$OUT/build.log" 2>&1 \
    || { grep -E "error|undefined" "$OUT/build.log" | head -30; echo "build of $t failed"; exit 1; }
done
echo "build: $(( $(date +%s) - t0 )) s ($targets)"
