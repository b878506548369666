#!/usr/bin/env bash
# System tests of `citadel serve`: the pytest suite (official openai SDK against the real server and model), then
# schemathesis against docs/openapi.yaml (no 5xx, every response matches the schema). $1: the build directory.
# CITADEL_TEST_MODEL overrides the model (e.g. debug:bytes); without a model file the suite skips cleanly.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/../.."
export CITADEL_BIN="$PWD/$BUILD/citadel"
python3 -m pytest -q tests/system

MODEL=${CITADEL_TEST_MODEL:-}
if [ -z "$MODEL" ]; then
  for f in "${CITADEL_MODELS:-$HOME/.cache/citadel/models}/SmolLM2-135M-Instruct.Q4_1.gguf" \
           /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf; do
    [ -f "$f" ] && MODEL="$f" && break
  done
fi
if [ -z "$MODEL" ]; then echo "schemathesis: skipped (no model file)"; exit 0; fi
if ! python3 -c "import schemathesis" 2>/dev/null; then echo "schemathesis: not installed" >&2; exit 1; fi

tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
# A known bootstrap admin key (ck-<12 hex>-<43 base64url>) so that schemathesis can authenticate.
KEY="ck-$(openssl rand -hex 6)-$(openssl rand 32 | base64 | tr '+/' '-_' | tr -d '=\n')"
# A small context bounds every generation (requests without max_tokens run to the end of the context).
CITADEL_BOOTSTRAP_ADMIN_KEY="$KEY" "$CITADEL_BIN" serve --model "$MODEL" --served-model-name smollm2 --port 0 \
  --max-context 96 --kv-memory-mb 64 --data-dir "$tmp/state" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 1 600); do
  grep -q "citadel serve: ready" "$tmp/out" 2>/dev/null && break
  if ! kill -0 $pid 2>/dev/null; then
    cat "$tmp/err" >&2; exit 1
  fi
  sleep 0.2
done
port=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$tmp/out" | sed 's/.*://')
# This deployment's instance of the schema: the one model id it accepts.
python3 - "$tmp/openapi.yaml" <<'PY'
import sys, yaml
spec = yaml.safe_load(open("docs/openapi.yaml"))
spec["components"]["schemas"]["SamplingFields"]["properties"]["model"]["enum"] = ["smollm2"]
spec["components"]["schemas"]["CreateEmbeddingRequest"]["properties"]["model"]["enum"] = ["smollm2"]
yaml.safe_dump(spec, open(sys.argv[1], "w"))
PY
# Run from $tmp: schemathesis keeps a .schemathesis/ cache in the working directory.
(cd "$tmp" && schemathesis run "$tmp/openapi.yaml" --url "http://127.0.0.1:$port" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,fuzzing --max-examples 30 --seed 1 --generation-database none --request-timeout 120 --no-color -w 1 \
  -H "Authorization: Bearer $KEY")
kill -TERM $pid
wait $pid
echo "server exited cleanly"

# The same on the embedding model (citadel pull minilm-l6), for /v1/embeddings and /v1/models.
EMB="${CITADEL_MODELS:-$HOME/.cache/citadel/models}/all-MiniLM-L6-v2"
if [ ! -f "$EMB/model.safetensors" ]; then echo "schemathesis (embeddings): skipped (no minilm-l6)"; exit 0; fi
CITADEL_BOOTSTRAP_ADMIN_KEY="$KEY" "$CITADEL_BIN" serve --model "$EMB" --served-model-name minilm --port 0 \
  --data-dir "$tmp/state-emb" >"$tmp/out-emb" 2>"$tmp/err-emb" &
pid=$!
for _ in $(seq 1 600); do
  grep -q "citadel serve: ready" "$tmp/out-emb" 2>/dev/null && break
  if ! kill -0 $pid 2>/dev/null; then
    cat "$tmp/err-emb" >&2; exit 1
  fi
  sleep 0.2
done
port=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$tmp/out-emb" | sed 's/.*://')
python3 - "$tmp/openapi-emb.yaml" <<'PY'
import sys, yaml
spec = yaml.safe_load(open("docs/openapi.yaml"))
spec["components"]["schemas"]["CreateEmbeddingRequest"]["properties"]["model"]["enum"] = ["minilm"]
yaml.safe_dump(spec, open(sys.argv[1], "w"))
PY
(cd "$tmp" && schemathesis run "$tmp/openapi-emb.yaml" --url "http://127.0.0.1:$port" \
  --include-path /v1/embeddings --include-path /v1/models \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,fuzzing --max-examples 60 --seed 1 --generation-database none --request-timeout 120 --no-color -w 1 \
  -H "Authorization: Bearer $KEY")
kill -TERM $pid
wait $pid
echo "embedding server exited cleanly"
