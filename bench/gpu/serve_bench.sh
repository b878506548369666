#!/usr/bin/env bash
# Issue 23's serving benchmark on the GPU machine: synthesises the DeepSeek-R1-Distill-Qwen-7B shape as an f16 GGUF
# (once, under /tmp/m), starts `citadel serve --device cuda` with the default configuration plus any extra flags,
# times the load (start to "citadel serve: ready"), then runs `citadel bench` (random token prompts, --ignore-eos):
#   512 in / 128 out at c = 1, 16, 64, 128; 16 in / 256 out at c = 128; a ShareGPT-like length mix at c = 64
# (lognormal prompt and reply lengths, median about 200 / 250 tokens, made here: no dataset can travel).
# Results: $OUT/serve-<label>.json (every run's summary, the load time, the server's engine stats).
# Usage (repository root, after scripts/gpu/build.sh): bash bench/gpu/serve_bench.sh LABEL [serve flags...]
#   SERVE_BENCH_RUNS="c128" limits the runs (names: c1 c16 c64 c128 short_c128 sharegpt_c64; users50: 512 in / 256
#   out at c = 50, the 70B tensor-parallel case; short_c128_topp: short_c128 at temperature 0.6 and top-p 0.95, the
#   settings DeepSeek's R1 models recommend). Every other run samples at temperature 0.7 alone. SERVE_BENCH_PRESET / SERVE_BENCH_DTYPE: the synthetic model.
#   STEP_TRACE=1: the server writes one line per engine step to $OUT/steps-LABEL.jsonl (CITADEL_STEP_TRACE).
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
LABEL=${1:-default}
shift || true
C=${CITADEL_BIN:-$PWD/build-gpu/citadel}
DEVICE=${SERVE_BENCH_DEVICE:-cuda}                      # cpu: a dry run of this script with a small preset
PRESET=${SERVE_BENCH_PRESET:-deepseek-r1-distill-qwen-7b}
mkdir -p "$OUT" /tmp/m
export CITADEL_DATA_DIR=$(mktemp -d)
export CITADEL_BOOTSTRAP_ADMIN_KEY="ck-$(openssl rand -hex 6)-$(openssl rand 32 | base64 | tr '+/' '-_' | tr -d '=\n')"
export CITADEL_API_KEY=$CITADEL_BOOTSTRAP_ADMIN_KEY
DTYPE=${SERVE_BENCH_DTYPE:-f16}                         # q8_0: the 70B shape's file (75 GB instead of 141)
M=/tmp/m/$PRESET-$DTYPE.gguf
if [ ! -f $M ]; then
  t0=$(date +%s%N)
  $C synth --preset $PRESET --dtype $DTYPE --seed 1 --out $M > "$OUT/synth.log" 2>&1 \
    || { tail -5 "$OUT/synth.log"; exit 1; }
  echo "synth: $(( ($(date +%s%N) - t0) / 1000000 )) ms, $(du -h $M | cut -f1)"
fi
PORT=18090
[ "${STEP_TRACE:-0}" = 1 ] && export CITADEL_STEP_TRACE=$OUT/steps-$LABEL.jsonl
t0=$(date +%s%N)
$C serve --device $DEVICE --model $M --served-model-name q7b --port $PORT "$@" > "$OUT/serve-$LABEL.log" 2>&1 &
pid=$!
for _ in $(seq 1 $(( ${SERVE_BENCH_READY_S:-120} * 10 ))); do grep -q "citadel serve: ready" "$OUT/serve-$LABEL.log" && break
  kill -0 $pid 2>/dev/null || break; sleep 0.1; done
load_s=$(python3 -c "print(round(($(date +%s%N) - $t0) / 1e9, 2))")
grep -q "citadel serve: ready" "$OUT/serve-$LABEL.log" || { echo "serve did not start"; tail -20 "$OUT/serve-$LABEL.log"; exit 1; }
echo "[$LABEL] ready after $load_s s"; grep -E "KV|engine steps|pool" "$OUT/serve-$LABEL.log" | head -5
python3 - <<'PY'
import json, random, math
rng = random.Random(3)
words = "the of and to in is was for on that with as by at from it an be this which or are were".split()
def text(n):
    return " ".join(rng.choice(words) for _ in range(n))
convs = []
for _ in range(400):
    p = max(4, min(1000, int(math.exp(rng.gauss(math.log(200), 0.9)))))
    r = max(4, min(1000, int(math.exp(rng.gauss(math.log(250), 0.7)))))
    convs.append({"conversations": [{"from": "human", "value": text(p)}, {"from": "gpt", "value": "abcd" * r}]})
json.dump(convs, open("/tmp/m/sharegpt_like.json", "w"))
PY
RUNS=${SERVE_BENCH_RUNS:-"c1 c16 c64 c128 short_c128 sharegpt_c64"}
common="--base-url http://127.0.0.1:$PORT --model q7b --endpoint /v1/completions --ignore-eos --seed 1 --token-id-low 100 --token-id-high ${SERVE_BENCH_TOKEN_HIGH:-30000}"
for r in $RUNS; do
  sampling="--temperature 0.7"
  case $r in
    c1) args="--dataset random --random-input-len 512 --random-output-len 128 --concurrency 1 --num-prompts 6";;
    c16) args="--dataset random --random-input-len 512 --random-output-len 128 --concurrency 16 --num-prompts 64";;
    c64) args="--dataset random --random-input-len 512 --random-output-len 128 --concurrency 64 --num-prompts 256";;
    c128) args="--dataset random --random-input-len 512 --random-output-len 128 --concurrency 128 --num-prompts 512";;
    short_c128) args="--dataset random --random-input-len 16 --random-output-len 256 --concurrency 128 --num-prompts 512";;
    short_c128_topp) args="--dataset random --random-input-len 16 --random-output-len 256 --concurrency 128 --num-prompts 512"
                     sampling="--temperature 0.6 --top-p 0.95";;
    users50) args="--dataset random --random-input-len 512 --random-output-len 256 --concurrency 50 --num-prompts 200";;
    sharegpt_c64) args="--dataset sharegpt --dataset-path /tmp/m/sharegpt_like.json --concurrency 64 --num-prompts 256";;
    *) echo "unknown run $r"; continue;;
  esac
  timeout 300 $C bench $common $args $sampling --result-file "$OUT/run-$LABEL-$r.json" > "$OUT/run-$LABEL-$r.log" 2>&1
  echo "[$LABEL] $r rc=$?: $(grep -iE "output token throughput|Output token" "$OUT/run-$LABEL-$r.log" | head -1)"
  grep -E "P99 (ttft|tpot)" "$OUT/run-$LABEL-$r.log" | head -2
done
curl -s -H "Authorization: Bearer $CITADEL_API_KEY" http://127.0.0.1:$PORT/api/v1/stats > "$OUT/stats-$LABEL.json"
# Issue 20's GPU metrics from the real driver (NVML) on the same server.
curl -s -H "Authorization: Bearer $CITADEL_API_KEY" http://127.0.0.1:$PORT/metrics | grep -E "^citadel:gpu_" \
  > "$OUT/gpu_metrics-$LABEL.txt"
echo "[$LABEL] /metrics: $(wc -l < "$OUT/gpu_metrics-$LABEL.txt") citadel:gpu_ series"; head -4 "$OUT/gpu_metrics-$LABEL.txt"
kill $pid; wait $pid 2>/dev/null
python3 - "$OUT" "$LABEL" "$load_s" "$RUNS" <<'PY'
import json, os, subprocess, sys
out, label, load_s, runs = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].split()
r = {"label": label, "load_to_ready_s": load_s, "runs": {}}
for n in runs:
    p = f"{out}/run-{label}-{n}.json"
    if os.path.exists(p):
        r["runs"][n] = json.load(open(p))
        os.remove(p)
try:
    r["engine_stats"] = json.load(open(f"{out}/stats-{label}.json"))
except Exception as e:
    r["engine_stats"] = str(e)
r["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
if not r["commit"] and os.path.exists(".gpu_commit"):
    r["commit"] = open(".gpu_commit").read().strip()
json.dump(r, open(f"{out}/serve-{label}.json", "w"), indent=1)
keys = ["output_throughput", "median_ttft_ms", "p95_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms"]
for n, v in r["runs"].items():
    print(label, n, {k: v.get(k) for k in keys if k in v} or list(v)[:12])
e = r["engine_stats"] if isinstance(r["engine_stats"], dict) else {}
e = e.get("engine", e)
print(label, "engine:", {k: e.get(k) for k in ["steps", "pipelined_steps", "step_ms_total", "forward_ms_total"]})
PY
