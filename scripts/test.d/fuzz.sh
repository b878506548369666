#!/usr/bin/env bash
# Fuzzes the GGUF and safetensors parsers for a fixed number of runs (well under a minute each) from the seed
# corpus in tests/golden/format/. Uses its own clang build (build-fuzz/, libFuzzer + ASan + UBSan); the argument
# (the main build dir) is ignored. RUNS=N overrides the run count. Any crash or sanitizer report fails the suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-20000}
if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz.sh: SKIP: clang++ not installed (scripts/install-deps.sh installs clang and libclang-rt-14-dev)"
  exit 0
fi
BUILD_FUZZ=build-fuzz
if [ ! -f "$BUILD_FUZZ/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_FUZZ" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCITADEL_FUZZ=ON \
    -DCITADEL_CUDA=OFF -DCITADEL_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD_FUZZ" -j "${JOBS:-2}" --target gguf_fuzz safetensors_fuzz >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {  # run TARGET SEED_DIR
  local target=$1 seeds=$2
  mkdir -p "$tmp/$target" "$tmp/$target-artifacts"
  cp "$seeds"/*.bin "$tmp/$target/"
  if ! "$BUILD_FUZZ/tests/fuzz/$target" -runs="$RUNS" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$tmp/$target-artifacts/" -print_final_stats=1 "$tmp/$target" >"$tmp/$target.log" 2>&1; then
    tail -n 40 "$tmp/$target.log"
    mkdir -p "$BUILD_FUZZ/crashes" && cp "$tmp/$target-artifacts"/* "$BUILD_FUZZ/crashes/" 2>/dev/null || true
    echo "fuzz.sh: FAIL: $target (reproducer under $BUILD_FUZZ/crashes/)"
    return 1
  fi
  local execs speed
  execs=$(grep -m1 'stat::number_of_executed_units' "$tmp/$target.log" | awk '{print $2}')
  speed=$(grep -m1 'stat::average_exec_per_sec' "$tmp/$target.log" | awk '{print $2}')
  echo "fuzz.sh: $target: $execs runs, $speed exec/s, no crashes"
}
run gguf_fuzz tests/golden/format/corpus
run safetensors_fuzz tests/golden/format/corpus_safetensors
