#!/usr/bin/env bash
# `make run`: installs what building the server needs, builds only the server binary, pulls the model if missing and
# serves it. Says what it is doing at each phase. $1 build dir, $2 model, $3 CUDA ON|OFF, $4 extra cmake flags, $5 jobs.
set -euo pipefail
BUILD=${1:-build}
MODEL=${2:-smollm2-135m}
CUDA=${3:-OFF}
FLAGS=${4:-}
JOBS=${5:-$(nproc)}
cd "$(dirname "$0")/.."
t0=$(date +%s)
say() { printf '== [%3ds] %s\n' $(( $(date +%s) - t0 )) "$*"; }
say "1/4 packages: checking what building the server needs (installs only what is missing)"
scripts/install-deps.sh run
say "2/4 configure: $BUILD (CUDA backend: $CUDA)"
# shellcheck disable=SC2086
# A unity build (each module's files batched into few translation units) builds the server ~30% faster from scratch.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCITADEL_TESTS=OFF -DCITADEL_CUDA="$CUDA" -DCMAKE_UNITY_BUILD=ON -Wno-dev \
  --log-level=WARNING $FLAGS >/dev/null
say "3/4 build: the citadel binary only, $JOBS jobs (about 3 minutes on 2 cores from scratch; seconds when built)"
log="$BUILD/make-run-build.log"
if ! cmake --build "$BUILD" -j "$JOBS" --target citadel >"$log" 2>&1; then
  tail -40 "$log" >&2
  echo "make run: the build failed; the whole log is $log" >&2
  exit 1
fi
say "4/4 model: $MODEL (pulled once into ${CITADEL_MODELS:-~/.cache/citadel/models}), then serving it"
"$BUILD/citadel" pull "$MODEL"
say "starting: citadel serve --model $MODEL (Ctrl-C stops it)"
exec "$BUILD/citadel" serve --model "$MODEL"
