#!/usr/bin/env bash
# Runs every test: unit tests (ctest), then the suites that need built binaries.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
# Real-model tests need the default model, Gemma-3 (253 MB) and the embedding model (~90 MB); pull is idempotent
# (a present file is kept).
"$BUILD/citadel" pull smollm2-135m
"$BUILD/citadel" pull gemma3-270m  # the Gemma-3 parity test (253 MB)
"$BUILD/citadel" pull minilm-l6
ctest --test-dir "$BUILD" --output-on-failure -j "$(nproc)"
for t in scripts/test.d/*.sh; do
  [ -e "$t" ] || continue
  echo "== $t"
  "$t" "$BUILD"
done
