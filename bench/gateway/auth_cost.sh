#!/usr/bin/env bash
# What identity, access and the audit log cost per request (issues: < 1 ms p99 added at 1,000 requests/s on a
# 2-core machine). Three servers of the same binary on the fake debug:bytes model (microsecond forward passes, so
# server overhead shows): --auth off; API keys + quotas on SQLite with --audit off; the same with the audit log on
# (the default). The key has every limit set, so the quota stage really reserves and settles. `citadel bench` sends
# 1-token completions at a Poisson 1000 req/s to each, interleaved, REPEATS times; the JSON gets the e2e latency
# percentiles of all three and the differences.
#   bench/gateway/auth_cost.sh [BUILD_DIR]     env: REPEATS=3, PROMPTS=5000, RATE=1000, OUT=bench/results/...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
citadel=$build/citadel
repeats=${REPEATS:-3}
prompts=${PROMPTS:-5000}
rate=${RATE:-1000}
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
admin="ck-$(openssl rand -hex 6)-$(openssl rand 32 | base64 | tr '+/' '-_' | tr -d '=\n')"

start() {  # start NAME ARGS... -> sets base_NAME
  local name=$1; shift
  CITADEL_BOOTSTRAP_ADMIN_KEY=$admin "$citadel" serve --model debug:bytes --served-model-name dbg --port 0 \
    --max-queue 4096 --max-seqs 256 --data-dir "$work/$name-state" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 300); do grep -q "citadel serve: ready" "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "citadel serve: ready" "$work/$name.out" || { cat "$work/$name.err" >&2; exit 1; }
  printf -v "base_$name" '%s' "$(sed -n 's/^citadel serve: listening on \(http:[^ ]*\)$/\1/p' "$work/$name.out")"
}
start off --auth off
start on --auth on --audit off
start audit --auth on --audit on
# A non-admin key with every limit set (high enough never to refuse), so each request runs the full quota path.
make_key() {
  curl -s -H "Authorization: Bearer $admin" "$1/admin/v1/keys" -H 'content-type: application/json' \
    -d '{"name":"bench","role":"developer","limits":{"requests_per_minute":1000000,"tokens_per_minute":100000000,
         "concurrent_requests":100000,"max_tokens_per_request":16,"daily_tokens":1000000000}}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
key=$(make_key "$base_on")
key_audit=$(make_key "$base_audit")

run() {  # run NAME BASE KEY REPEAT
  "$citadel" bench --base-url "$2" --model dbg --endpoint /v1/completions --random-input-len 16 \
    --random-output-len 1 --token-id-low 32 --token-id-high 127 --num-prompts "$prompts" --request-rate "$rate" \
    --seed "$4" --api-key "$3" --result-file "$work/$1-r$4.json" >/dev/null 2>"$work/$1-r$4.log"
}
# Warm-up, then interleaved repeats.
PROMPTS_SAVE=$prompts; prompts=500
run off "$base_off" none 0; run on "$base_on" "$key" 0; run audit "$base_audit" "$key_audit" 0
prompts=$PROMPTS_SAVE
for r in $(seq 1 "$repeats"); do
  run off "$base_off" none "$r"
  run on "$base_on" "$key" "$r"
  run audit "$base_audit" "$key_audit" "$r"
done
out=${OUT:-$root/bench/results/gateway-$(lscpu | sed -n 's/^Model name: *//p' | head -1 | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-' | cut -c1-40)-$(date +%F).json}
python3 - "$work" "$repeats" "$rate" "$prompts" "$out" "$(git -C "$root" rev-parse --short HEAD)" <<'PY'
import json, statistics, subprocess, sys, datetime
work, repeats, rate, prompts, out, commit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
def load(name, r):
    return json.load(open(f"{work}/{name}-r{r}.json"))
runs = {n: [load(n, r) for r in range(1, repeats + 1)] for n in ("off", "on", "audit")}
def med(n, k):
    v = [x[k] for x in runs[n] if isinstance(x.get(k), (int, float))]
    return statistics.median(v) if v else None
fig = {}
for k in ("mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms", "request_throughput"):
    fig[f"auth_off_{k}"], fig[f"auth_on_{k}"], fig[f"auth_audit_on_{k}"] = med("off", k), med("on", k), med("audit", k)
fig["added_median_e2el_ms"] = fig["auth_on_median_e2el_ms"] - fig["auth_off_median_e2el_ms"]
fig["added_p99_e2el_ms"] = fig["auth_on_p99_e2el_ms"] - fig["auth_off_p99_e2el_ms"]
fig["audit_added_median_e2el_ms"] = fig["auth_audit_on_median_e2el_ms"] - fig["auth_on_median_e2el_ms"]
fig["audit_added_p99_e2el_ms"] = fig["auth_audit_on_p99_e2el_ms"] - fig["auth_on_p99_e2el_ms"]
for n in runs:
    fig[f"completed_{n}"] = [x.get("completed") for x in runs[n]]
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "cpu")
res = {"device": f"{model}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores",
       "commit": commit, "date": datetime.date.today().isoformat(), "model": "debug:bytes (fake, microsecond steps)",
       "command": "bench/gateway/auth_cost.sh", "request_rate_per_s": rate, "prompts_per_run": prompts,
       "repeats": repeats, "figures": fig,
       "runs": {n: [{k: x.get(k) for k in ("completed", "failed", "request_throughput", "median_e2el_ms", "p99_e2el_ms")}
                    for x in runs[n]] for n in runs}}
json.dump(res, open(out, "w"), indent=2)
print(json.dumps(res["figures"], indent=2))
print("wrote", out)
PY
