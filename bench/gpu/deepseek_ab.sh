#!/usr/bin/env bash
# Batch-1 decode A/B of citadel_deepseek_bench binaries under env switches, rounds alternating the arms.
# Usage: OUT=dir bash bench/gpu/deepseek_ab.sh BINARY ROUNDS NAME='ENV=V ...' [NAME='ENV=V ...' ...]
# An arm whose env holds BIN=path runs that binary instead (a base commit's build against the head's).
# Writes $OUT/deepseek_ab.jsonl: one {"round", "arm", "env", "decode_bs1_..._tok_s", ...} line per run.
set -uo pipefail
BIN=$1 ROUNDS=$2
shift 2
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for arm in "$@"; do
    name=${arm%%=*} envs=${arm#*=}
    bin=$BIN
    for kv in $envs; do case $kv in BIN=*) bin=${kv#BIN=} ;; esac; done
    row=$(env $envs CITADEL_BENCH_BS1_ONLY=1 "$bin" 2>/dev/null | tail -1)
    rc=${PIPESTATUS[0]}
    case $row in \{*\}) ;; *) row="{\"error\": \"no result line (exit $rc)\"}";; esac  # a crashed arm stays valid JSON
    echo "{\"round\": $r, \"arm\": \"$name\", \"env\": \"$envs\", ${row#\{}" | tee -a "$OUT/deepseek_ab.jsonl"
  done
done
