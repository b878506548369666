#!/usr/bin/env bash
# Engine step overhead of two engine_bench binaries, interleaved (before, after, before, after, ...) so that the load
# of a shared machine falls on both alike. Prints one JSON object: per BM_StepOverhead case the median over the rounds
# of each binary's median-of-repetitions, every round's value, and the load average before and after.
#   bench/cpu/step_before_after.sh BEFORE_BIN AFTER_BIN     env: ROUNDS=5, REPS=3, FILTER=BM_StepOverhead
set -euo pipefail
before_bin=$1
after_bin=$2
rounds=${ROUNDS:-5}
reps=${REPS:-3}
filter=${FILTER:-BM_StepOverhead}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$rounds"); do
  for which in before after; do
    bin=$before_bin
    [ "$which" = after ] && bin=$after_bin
    "$bin" --benchmark_filter="$filter" --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
      --benchmark_format=json >"$work/$which-$r.json" 2>/dev/null
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$work" "$rounds" "$load_before" "$load_after" <<'EOF'
import json, statistics, sys
work, rounds, load_before, load_after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = {"before": {}, "after": {}}
for which in runs:
    for r in range(1, rounds + 1):
        for b in json.load(open(f"{work}/{which}-{r}.json"))["benchmarks"]:
            if b.get("aggregate_name") == "median":
                runs[which].setdefault(b["run_name"], []).append(round(b["real_time"], 3))
cases = {}
for name in runs["before"]:
    if name not in runs["after"]:
        continue
    bm, af = runs["before"][name], runs["after"][name]
    cases[name.split("/", 1)[1]] = {"before_us": statistics.median(bm), "after_us": statistics.median(af),
                                    "before_rounds_us": bm, "after_rounds_us": af,
                                    "after_over_before": round(statistics.median(af) / statistics.median(bm), 3)}
print(json.dumps({"rounds": rounds, "loadavg_before": load_before, "loadavg_after": load_after, "cases": cases},
                 indent=2))
EOF
