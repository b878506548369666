#!/usr/bin/env bash
# End-to-end on the GPU machine with the real SmolLM2 GGUF: the GPU test suite (kernels, decoder, engine, SmolLM2
# parity vs HF and vs our CPU path), then `citadel generate` and `citadel serve` with --device cuda and cpu, and a
# serving benchmark on the GPU (sampling on the device vs on the host).
# The 98 MB GGUF exceeds one call's transfer: it arrives as .gpu-model/part-* over two calls (see smollm2.sh) and
# is reassembled under /tmp/m. CLI11 (header-only, not on that image) travels in .gpu-cli/.
# Usage (repository root on the GPU machine): bash bench/gpu/e2e.sh stage|run
# Access control is on: a throwaway state directory and a known admin key for the server, the bench and curl.
export CITADEL_DATA_DIR=$(mktemp -d)
export CITADEL_BOOTSTRAP_ADMIN_KEY="ck-$(openssl rand -hex 6)-$(openssl rand 32 | base64 | tr '+/' '-_' | tr -d '=\n')"
export CITADEL_API_KEY=$CITADEL_BOOTSTRAP_ADMIN_KEY
AUTH_HEADER="Authorization: Bearer $CITADEL_API_KEY"
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT" /tmp/m
for p in .gpu-model/part-*; do [ -f "$p" ] && cp "$p" /tmp/m/ && echo "staged $(basename "$p")"; done
t0=$(date +%s)
cmake -S . -B /tmp/bg -DCITADEL_CUDA=ON -DCITADEL_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DCMAKE_CXX_FLAGS="-I$PWD/.gpu-cli" > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
cmake --build /tmp/bg -j16 --target citadel_gpu_tests citadel >> "$OUT/build.log" 2>&1 \
  || { grep -E "error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
[ "${1:-run}" = stage ] && exit 0
cat /tmp/m/part-aa /tmp/m/part-ab > /tmp/m/SmolLM2.gguf && sha256sum /tmp/m/SmolLM2.gguf
export CITADEL_SMOLLM2_GGUF=/tmp/m/SmolLM2.gguf
/tmp/bg/citadel_gpu_tests > "$OUT/gpu_tests.log" 2>&1  # not piped into head: that would SIGPIPE the tests
rc=$?
grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|\[smollm2\].*:.*sequences|error" "$OUT/gpu_tests.log" \
  | head -60
echo "gpu tests rc=$rc"
C=/tmp/bg/citadel
for dev in cuda cpu; do
  echo "== generate --device $dev"
  $C generate --device $dev --model /tmp/m/SmolLM2.gguf --chat --prompt "What is the capital of France?" -n 48 \
    --temperature 0 2>&1 | tail -3
done
echo "== serve --device cuda"
$C serve --device cuda --model /tmp/m/SmolLM2.gguf --served-model-name smollm2 --port 18080 > "$OUT/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q "citadel serve: ready" "$OUT/serve.log" && break; sleep 0.2; done
curl -s -H "$AUTH_HEADER" http://127.0.0.1:18080/v1/chat/completions -H 'content-type: application/json' \
  -d '{"model":"smollm2","messages":[{"role":"user","content":"Name three colors."}],"max_tokens":32,"temperature":0}'
echo
curl -sN -H "$AUTH_HEADER" http://127.0.0.1:18080/v1/completions -H 'content-type: application/json' \
  -d '{"model":"smollm2","prompt":"The capital of France is","max_tokens":8,"temperature":0,"stream":true}' | head -4
kill $pid; wait $pid; echo "serve rc=$?"; tail -5 "$OUT/serve.log"
# Serving on the GPU: citadel bench (random 128-token prompts, 64 tokens each, temperature 0.8) at concurrency 1/16/64
# against `serve --sampling device` (only ids leave the GPU) and `--sampling host` (logits to the host Sampler), and
# the device server once more with --logprobs 5 (logprobs from the sampling kernel): what device sampling is worth.
bench() {  # NAME SEED ARGS... (a run's own seed: no prompt is a prefix-cache hit from an earlier run)
  local name=$1 seed=$2; shift 2
  $C bench --base-url http://127.0.0.1:18081 --model smollm2 --dataset random --random-input-len 128 \
    --random-output-len 64 --ignore-eos --temperature 0.8 --seed "$seed" --result-file "$OUT/bench-$name.json" "$@" \
    > "$OUT/bench-$name.log" 2>&1
  python3 -c "import json;d=json.load(open('$OUT/bench-$name.json'));print('$name: completed',d['completed'],'failed',d['failed'],'out_tok_s %.0f'%d['output_throughput'],'ttft_med %.1f ms'%d['median_ttft_ms'],'tpot_med %.2f ms'%d['median_tpot_ms'])"
}
for sampling in device host; do
  echo "== serving bench --device cuda --sampling $sampling"
  $C serve --device cuda --model /tmp/m/SmolLM2.gguf --served-model-name smollm2 --port 18081 --sampling $sampling \
    > "$OUT/serve-bench-$sampling.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do grep -q "citadel serve: ready" "$OUT/serve-bench-$sampling.log" && break; sleep 0.2; done
  bench "warmup-$sampling" 1000 --concurrency 64 --num-prompts 128 > /dev/null
  for c in 1 16 64; do
    curl -s -H "$AUTH_HEADER" http://127.0.0.1:18081/api/v1/stats > "$OUT/stats-before.json"
    bench "c$c-$sampling" $c --concurrency $c --num-prompts $((c * 4))
    curl -s -H "$AUTH_HEADER" http://127.0.0.1:18081/api/v1/stats > "$OUT/stats-c$c-$sampling.json"
    python3 - "$OUT/stats-before.json" "$OUT/stats-c$c-$sampling.json" <<'PY'  # the engine thread's time split
import json, sys
a, b = (json.load(open(f))["engine"] for f in sys.argv[1:3])
steps, step, fwd = b["steps"] - a["steps"], b["step_ms_total"] - a["step_ms_total"], b["forward_ms_total"] - a["forward_ms_total"]
print("  engine: %d steps, %.3f ms per step, forward %.3f ms (host share %.0f%%)" % (steps, step / steps, fwd / steps, 100 * (1 - fwd / step)))
PY
  done
  [ $sampling = device ] && bench "c64-device-logprobs" 65 --concurrency 64 --num-prompts 256 --logprobs 5
  kill $pid; wait $pid; echo "serve rc=$?"
done
# The device tool brings back a limited number of files: everything travels as one archive.
(cd "$OUT" && tar czf /tmp/e2e.tgz . && find . -mindepth 1 -delete && mv /tmp/e2e.tgz .)
