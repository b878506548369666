#!/usr/bin/env bash
# GPU metrics against the real NVIDIA driver (src/base/nvml_metrics.h): run on a GPU host.
#   1. builds citadel_nvml_tests with -DCITADEL_CUDA=OFF (NVML is dlopen'ed: no CUDA, no NVML header, and none of the
#      server's dependencies: the target needs base and GTest alone) and runs it: the fake-library tests and
#      NvmlReal.ReportsTheDevicesOfThisHost, which must pass here, not skip;
#   2. where the server's dependencies are installed (SQLite, OpenSSL, Boost, nlohmann_json), builds `citadel`, runs
#      `citadel serve --model debug:bytes --auth off` on a loopback port and greps GET /metrics for citadel:gpu_;
#      elsewhere it says so in one line and skips that part.
# Output goes to stdout and, when $OUT is set, to $OUT/nvml.txt. Exit status: 0 when every part that ran passed.
# Environment: BUILD (build directory, default build-nvml), JOBS (default nproc).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-nvml}
JOBS=${JOBS:-$(nproc)}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/nvml.txt") 2>&1
fi
status=0
echo "== host: $(hostname), commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
nvidia-smi -L 2>&1 || echo "(nvidia-smi not available)"

echo "== configure + build citadel_nvml_tests (CITADEL_CUDA=OFF)"
if ! cmake -S . -B "$BUILD" -DCITADEL_CUDA=OFF -DCITADEL_TESTS=ON -DCMAKE_BUILD_TYPE=Release -Wno-dev \
     --log-level=WARNING || ! cmake --build "$BUILD" -j "$JOBS" --target citadel_nvml_tests; then
  echo "FAIL: citadel_nvml_tests did not build"
  exit 1
fi

echo "== citadel_nvml_tests"
"$BUILD/citadel_nvml_tests" || status=1
# The real-driver test must have run, not skipped, on a GPU host.
if ! "$BUILD/citadel_nvml_tests" --gtest_filter='NvmlReal.*' 2>&1 | grep -q '^\[  PASSED  \] 1 test'; then
  echo "FAIL: NvmlReal.ReportsTheDevicesOfThisHost did not pass here (skipped: libnvidia-ml.so.1 does not load?)"
  status=1
fi

echo "== citadel serve --model debug:bytes --auth off; GET /metrics | grep citadel:gpu_"
targets=$(cmake --build "$BUILD" --target help 2>/dev/null)  # (not piped into grep -q: SIGPIPE under pipefail)
if ! grep -Eq '^(\.\.\. )?citadel(:|$)' <<<"$targets"; then
  echo "SKIP: the citadel binary is not a target here (the server's dependencies - SQLite3, OpenSSL 3, Boost," \
       "nlohmann_json - are missing; scripts/install-deps.sh installs them); the serve check did not run"
  [ $status -eq 0 ] && echo "== nvml_check: PASS (serve check skipped)" || echo "== nvml_check: FAIL"
  exit $status
fi
if ! cmake --build "$BUILD" -j "$JOBS" --target citadel; then
  echo "FAIL: citadel did not build"
  exit 1
fi
data=$(mktemp -d)
log="$data/serve.log"
"$BUILD/citadel" serve --model debug:bytes --auth off --host 127.0.0.1 --port 0 --data-dir "$data/state" \
  >"$log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's#^citadel serve: listening on http://127\.0\.0\.1:\([0-9]*\)$#\1#p' "$log" | head -1)
  if [ -n "$port" ] && grep -q '^citadel serve: ready$' "$log"; then break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$port" ]; then
  echo "FAIL: the server did not start:"; tail -20 "$log"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"
  exit 1
fi
grep 'gpu metrics' "$log"
metrics=$(curl -sS --max-time 30 "http://127.0.0.1:$port/metrics")
echo "$metrics" | grep '^citadel:gpu_'
for name in citadel:gpu_utilization_perc citadel:gpu_memory_usage_perc citadel:gpu_memory_total_bytes \
            citadel:gpu_memory_used_bytes citadel:gpu_temperature_celsius citadel:gpu_power_watts citadel:gpu_info; do
  if ! echo "$metrics" | grep -q "^$name{"; then
    echo "FAIL: /metrics has no $name series"
    status=1
  fi
done
kill -TERM "$pid"; wait "$pid" 2>/dev/null
rm -rf "$data"
[ $status -eq 0 ] && echo "== nvml_check: PASS" || echo "== nvml_check: FAIL"
exit $status
