#!/usr/bin/env bash
# Runs Citadel on its default model: pulls it if missing, then serves it (or the most a build can do today).
set -euo pipefail
BUILD=${1:-build}
MODEL=${2:-smollm2-135m}
cd "$(dirname "$0")/.."
CITADEL="$BUILD/citadel"
if "$CITADEL" --help 2>&1 | grep -q ' pull'; then
  "$CITADEL" pull "$MODEL"
fi
for cmd in serve generate inspect; do
  if "$CITADEL" --help 2>&1 | grep -qE "^  $cmd( |$)"; then
    case $cmd in
      # exact: the default model is small enough to serve with f32 weights, which answer like the reference.
      serve) exec "$CITADEL" serve --model "$MODEL" --cpu-precision exact ;;
      generate) exec "$CITADEL" generate --model "$MODEL" --chat --prompt "What is a citadel?" -n 64 ;;
      inspect) exec "$CITADEL" inspect --model "$MODEL" ;;
    esac
  fi
done
exec "$CITADEL" version
