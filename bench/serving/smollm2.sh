#!/usr/bin/env bash
# Serving benchmark of the CPU engine on the real SmolLM2-135M Q4_1 (issue 6): citadel serve + citadel bench on one
# machine (loopback). Writes bench/results/serving-<cpu>-<date>-smollm2.json (format: /work/shared/BENCHMARKS.md).
#   bench/serving/smollm2.sh [BUILD_DIR]     env: REPEATS=3, RPS_PROMPTS=3000 (the 1k req/s run: 3 s of arrivals)
# Closed loop: random dataset, 128 prompt tokens, 64 output tokens with --ignore-eos, concurrency 1/4/16
# (8/16/48 prompts), plus a prefix-repetition run; each REPEATS times on one server after a warm-up.
# Open loop: 1-token completions at 1000 req/s (Poisson), each repeat on a fresh server so that GET /api/v1/stats
# (received->submitted, received->first-step) covers that run only.
set -euo pipefail
# Access control is on: a throwaway state directory and a known admin key for the server, the bench and curl.
export CITADEL_DATA_DIR=$(mktemp -d)
export CITADEL_BOOTSTRAP_ADMIN_KEY="ck-$(openssl rand -hex 6)-$(openssl rand 32 | base64 | tr '+/' '-_' | tr -d '=\n')"
export CITADEL_API_KEY=$CITADEL_BOOTSTRAP_ADMIN_KEY
AUTH_HEADER="Authorization: Bearer $CITADEL_API_KEY"
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
citadel=$build/citadel
work=${BENCH_DIR:-/tmp/citadel-serving-bench}
repeats=${REPEATS:-3}
rps_prompts=${RPS_PROMPTS:-3000}
mkdir -p "$work"
rm -f "$work"/*.json "$work"/*.log
server_pid=
base=

start_server() {  # $1: log name
  "$citadel" serve --model smollm2-135m --port 0 >"$work/$1.out" 2>"$work/$1.err" &
  server_pid=$!
  for _ in $(seq 600); do
    grep -q "citadel serve: ready" "$work/$1.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/$1.err" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "citadel serve: ready" "$work/$1.out" || { echo "server not ready" >&2; exit 1; }
  base=$(sed -n 's/^citadel serve: listening on \(http:[^ ]*\)$/\1/p' "$work/$1.out" | head -1)
  echo "server $server_pid at $base" >&2
}
stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
}
# run NAME ARGS...: one citadel bench run; saves the result and the load averages around it.
run() {
  local name=$1; shift
  local before; before=$(cut -d' ' -f1-3 /proc/loadavg)
  "$citadel" bench --base-url "$base" --model smollm2-135m --seed "$seed" --result-file "$work/$name.json" "$@" \
    >"$work/$name.log" 2>&1
  local after; after=$(cut -d' ' -f1-3 /proc/loadavg)
  python3 - "$work/$name.json" "$name" "$before" "$after" "$*" <<'EOF'
import json, sys
p, name, before, after, args = sys.argv[1:]
d = json.load(open(p))
d.update(name=name, loadavg_before=before, loadavg_after=after, bench_args=args)
json.dump(d, open(p, "w"))
EOF
  echo "$name: $(python3 -c "import json;d=json.load(open('$work/$name.json'));print('completed',d['completed'],'failed',d['failed'],'out_tok_s %.1f'%d['output_throughput'],'ttft_med %.1f ms'%d['median_ttft_ms'],'tpot_med %.2f ms'%d['median_tpot_ms'])") load $before -> $after" >&2
}

closed="--dataset random --random-input-len 128 --random-output-len 64 --ignore-eos"
start_server closed
seed=0
run warmup $closed --concurrency 2 --num-prompts 4
for rep in $(seq "$repeats"); do
  seed=$rep
  run "c1-r$rep" $closed --concurrency 1 --num-prompts 8
  run "c4-r$rep" $closed --concurrency 4 --num-prompts 16
  run "c16-r$rep" $closed --concurrency 16 --num-prompts 48
  # 4 shared 96-token prefixes + 32 random tokens: 3 of 4 prompts after the first of each prefix hit the cache.
  run "prefix-c4-r$rep" --dataset prefix-repetition --prefix-len 96 --num-prefixes 4 --random-input-len 32 \
    --random-output-len 64 --ignore-eos --concurrency 4 --num-prompts 16
done
curl -s -H "$AUTH_HEADER" "$base/api/v1/stats" >"$work/stats-closed.json"
stop_server

for rep in $(seq "$repeats"); do
  start_server "rps-r$rep"
  seed=100
  run "rps-warmup-r$rep" --dataset random --random-input-len 16 --random-output-len 1 --concurrency 1 --num-prompts 20
  seed=$((100 + rep))
  run "rps1000-r$rep" --dataset random --random-input-len 16 --random-output-len 1 --request-rate 1000 \
    --num-prompts "$rps_prompts"
  curl -s -H "$AUTH_HEADER" "$base/api/v1/stats" >"$work/stats-rps-r$rep.json"
  stop_server
done
python3 "$root/bench/serving/assemble.py" "$work" "$root" "$repeats"
