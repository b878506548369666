#!/usr/bin/env bash
# CPU model benchmark: prompt/decode tokens/s of SmolLM2-135M (the real Q4_1 file + synthetic f16/q8_0 at its shape)
# and a synthetic Qwen2-0.5B, with the measured read bandwidth and the decode roofline. Writes
# bench/results/cpu-<cpu>-<date>.json (format: /work/shared/BENCHMARKS.md).
#   bench/cpu/run.sh [BUILD_DIR]        env: MODELS="smollm2-q4_1 smollm2-f16 ..." to pick, REPEATS=3
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
cmake -S "$root" -B "$build" -DCITADEL_CUDA=OFF >/dev/null
cmake --build "$build" --target cpu_model_bench citadel -j2 >/dev/null
work=${BENCH_DIR:-/tmp/citadel-bench}
mkdir -p "$work"
real=$(ls "${CITADEL_MODELS:-$HOME/.cache/citadel/models}/SmolLM2-135M-Instruct.Q4_1.gguf" \
          /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf 2>/dev/null | head -1 || true)
models=${MODELS:-"smollm2-q4_1 smollm2-f16 smollm2-q8_0 qwen2-0.5b-q8_0 qwen2-0.5b-f16"}
out="$work/lines.jsonl"
: > "$out"
for m in $models; do
  case $m in
    smollm2-q4_1) f=$real ;;
    smollm2-*) f=$work/smollm2-135m-${m#smollm2-}.gguf
               [ -f "$f" ] || "$build/citadel" synth --preset smollm2-135m --seed 1 --dtype "${m#smollm2-}" --out "$f" >/dev/null ;;
    qwen2-0.5b-*) f=$work/qwen2-0.5b-${m#qwen2-0.5b-}.gguf
               [ -f "$f" ] || "$build/citadel" synth --preset qwen2-0.5b --seed 1 --dtype "${m#qwen2-0.5b-}" --out "$f" >/dev/null ;;
    *) echo "unknown model $m" >&2; exit 2 ;;
  esac
  [ -n "$f" ] && [ -f "$f" ] || { echo "skip $m (no file)" >&2; continue; }
  echo "== $m: $(cat /proc/loadavg)" >&2
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  line=$("$build/bench/cpu_model_bench" --model "$f" --repeats "${REPEATS:-3}")
  echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); d['name']='$m'; d['loadavg_before']='$load'; print(json.dumps(d))" >> "$out"
  tail -1 "$out" >&2
done
stream=$work/stream.txt
if cmake --build "$build" --target kernels_bench -j2 >/dev/null 2>&1; then
  "$build/bench/kernels_bench" --benchmark_filter=Stream > "$stream" 2>&1 || true
fi
python3 "$root/bench/cpu/assemble.py" "$out" "$root" "$stream"
