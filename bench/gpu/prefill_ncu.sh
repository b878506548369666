#!/usr/bin/env bash
# Per-kernel GPU time of (the first 300 kernels of) a bf16 512-token prefill (Nsight Compute, clocks left alone), for
# two builds of citadel_gpu_bench: where a prefill row differs between commits, this says whether the kernels or the gaps between
# them moved. Usage: prefill_ncu.sh OUT_DIR NAME=BENCH_BINARY...; writes OUT_DIR/prefill_ncu_NAME.csv and prints each
# build's kernel time by kernel family.
set -uo pipefail
out=$1; shift
for nb in "$@"; do
  name=${nb%%=*} bin=${nb#*=}
  CITADEL_BENCH_PROFILE=bf16_prefill ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum \
    --launch-count 300 --csv "$bin" > "$out/prefill_ncu_$name.csv" 2> "$out/prefill_ncu_$name.log"
  echo "$name: rc=$? $(grep -E 'prefill 512' "$out/prefill_ncu_$name.log")"
done
python3 - "$out" "$@" <<'PY'
import csv, collections, sys
out = sys.argv[1]
for nb in sys.argv[2:]:
    name = nb.split("=")[0]
    rows = [r for r in csv.reader(open(f"{out}/prefill_ncu_{name}.csv")) if len(r) > 10]
    head = rows[0]; ki, vi, ui = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
    fam = collections.Counter(); n = collections.Counter()
    for r in rows[1:]:
        if not r[vi].replace(",", "").replace(".", "").isdigit(): continue
        v = float(r[vi].replace(",", "")) * {"nsecond": 1e-3, "usecond": 1, "msecond": 1e3}.get(r[ui], 1)
        k = r[ki].split("(")[0].split("<")[0][:60]; fam[k] += v; n[k] += 1
    print(f"== {name}: {sum(fam.values()):.0f} us in {sum(n.values())} kernels")
    for k, v in fam.most_common(14): print(f"  {v:9.1f} us  {n[k]:4d}x  {k}")
PY
