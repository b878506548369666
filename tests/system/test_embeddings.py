"""POST /v1/embeddings on the real all-MiniLM-L6-v2 (`citadel pull minilm-l6`) served with no new flag, through the
official openai SDK: embeddings equal sentence-transformers' (tests/golden/model/minilm-l6-embeddings.json, cosine >
0.9999) with the SDK's default base64 and with floats, dimensions (truncate + renormalise), token-id input, batches,
usage with truncation at 256 tokens, concurrent requests equal to solo ones, 429 when the queue is full, OpenAI-shaped
400s for bad input, and the model kinds kept apart (chat on an embedding model, embeddings on a decoder); the
citadel:embedding_* metrics moving by exactly what was sent (and /api/v1/stats reading them), and the Grafana
dashboard's embedding queries naming only those series; the per-request token cap (default and per model) and
embedding_truncate off, both refusing before anything is computed; the weights encrypted with `citadel encrypt` and
served from memory with --key-file."""
import concurrent.futures
import json
import math
import os
import pathlib
import re

import openai
import pytest
import requests

from conftest import ROOT, Server

MODEL_DIR = "all-MiniLM-L6-v2"
GOLDEN = json.loads((ROOT / "tests/golden/model/minilm-l6-embeddings.json").read_text(encoding="utf-8"))


def _models_dir():
    for d in (os.environ.get("CITADEL_MODELS"), pathlib.Path.home() / ".cache/citadel/models", "/tmp/models"):
        if d and (pathlib.Path(d) / MODEL_DIR / "model.safetensors").is_file():
            return str(d)
    pytest.skip(f"{MODEL_DIR} not found (run `citadel pull minilm-l6`)")


@pytest.fixture(scope="module")
def minilm():
    s = Server(["--model", "minilm-l6", "--models-dir", _models_dir(), "--threads", "2"])
    yield s
    assert s.stop() == 0, "".join(s.stderr[-20:])


def sdk(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.admin_key, max_retries=0, timeout=120)


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def assert_matches_golden(vectors, cases):
    assert len(vectors) == len(cases)
    for v, c in zip(vectors, cases):
        assert len(v) == GOLDEN["dim"]
        assert cosine(v, c["embedding"]) > 0.9999, c["text"]


def test_models_lists_the_embedding_model(minilm):
    models = sdk(minilm).models.list().data
    assert [m.id for m in models] == ["minilm-l6"]
    card = minilm.http.get(minilm.base_url + "/v1/models/minilm-l6").json()
    assert card["kind"] == "embedding" and card["max_model_len"] == GOLDEN["max_seq_length"]


def test_sdk_default_base64_and_float_match_sentence_transformers(minilm):
    c = sdk(minilm)
    cases = GOLDEN["cases"]
    texts = [k["text"] for k in cases]
    r64 = c.embeddings.create(model="minilm-l6", input=texts)  # the SDK asks for base64 and decodes it
    rf = c.embeddings.create(model="minilm-l6", input=texts, encoding_format="float")
    assert r64.object == "list" and r64.model == "minilm-l6"
    assert [d.index for d in r64.data] == list(range(len(texts)))
    assert all(d.object == "embedding" for d in r64.data)
    assert_matches_golden([d.embedding for d in r64.data], cases)
    assert [d.embedding for d in rf.data] == [d.embedding for d in r64.data]  # same float32 values either way
    # usage counts what the model read: the long text truncated to 256 tokens, [CLS] and [SEP] included
    assert rf.usage.prompt_tokens == rf.usage.total_tokens == sum(len(k["ids"]) for k in cases)
    assert max(k["untruncated_tokens"] for k in cases) > GOLDEN["max_seq_length"]


def test_single_string_and_raw_json_shape(minilm):
    case = GOLDEN["cases"][0]
    r = minilm.http.post(minilm.base_url + "/v1/embeddings",
                         json={"model": "minilm-l6", "input": case["text"], "user": "someone"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["usage"] == {"prompt_tokens": len(case["ids"]), "total_tokens": len(case["ids"])}
    assert set(body["data"][0]) == {"object", "index", "embedding"}
    assert cosine(body["data"][0]["embedding"], case["embedding"]) > 0.9999


def test_dimensions_truncate_and_renormalise(minilm):
    c = sdk(minilm)
    text = GOLDEN["cases"][1]["text"]
    full = c.embeddings.create(model="minilm-l6", input=text, encoding_format="float").data[0].embedding
    for dims in (1, 64, 384):
        short = c.embeddings.create(model="minilm-l6", input=text, dimensions=dims).data[0].embedding
        assert len(short) == dims
        assert abs(math.sqrt(sum(x * x for x in short)) - 1.0) < 1e-5
        norm = math.sqrt(sum(x * x for x in full[:dims]))
        assert all(abs(a - b / norm) < 1e-6 for a, b in zip(short, full[:dims]))


def test_token_id_input_equals_text_input(minilm):
    c = sdk(minilm)
    cases = GOLDEN["cases"][:5]
    by_text = [d.embedding for d in c.embeddings.create(model="minilm-l6", input=[k["text"] for k in cases]).data]
    one = c.embeddings.create(model="minilm-l6", input=cases[0]["ids"]).data[0].embedding  # one array of ids
    assert cosine(one, by_text[0]) > 0.999999
    with_specials = c.embeddings.create(model="minilm-l6", input=[k["ids"] for k in cases])
    pieces_only = c.embeddings.create(model="minilm-l6", input=[k["ids"][1:-1] for k in cases])
    for a, b, t in zip(with_specials.data, pieces_only.data, by_text):
        assert cosine(a.embedding, t) > 0.999999 and cosine(b.embedding, t) > 0.999999
    assert pieces_only.usage.prompt_tokens == sum(len(k["ids"]) for k in cases)  # [CLS]/[SEP] added and counted


def test_concurrent_requests_equal_solo(minilm):
    c = sdk(minilm)
    texts = [k["text"] for k in GOLDEN["cases"]]
    solo = [c.embeddings.create(model="minilm-l6", input=t).data[0].embedding for t in texts]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        together = list(ex.map(lambda t: c.embeddings.create(model="minilm-l6", input=t).data[0].embedding, texts))
    for a, b in zip(solo, together):
        assert cosine(a, b) > 0.999999


@pytest.mark.parametrize("body, param", [
    ({"model": "minilm-l6"}, "input"),
    ({"model": "minilm-l6", "input": ""}, "input"),
    ({"model": "minilm-l6", "input": []}, "input"),
    ({"model": "minilm-l6", "input": [""]}, "input"),
    ({"model": "minilm-l6", "input": [[]]}, "input"),
    ({"model": "minilm-l6", "input": ["a", 1]}, "input"),
    ({"model": "minilm-l6", "input": [1, "a"]}, "input"),
    ({"model": "minilm-l6", "input": [[1], "a"]}, "input"),
    ({"model": "minilm-l6", "input": [-1]}, "input"),
    ({"model": "minilm-l6", "input": [1.5]}, "input"),
    ({"model": "minilm-l6", "input": [99999999]}, "input"),
    ({"model": "minilm-l6", "input": {"text": "a"}}, "input"),
    ({"model": "minilm-l6", "input": 42}, "input"),
    ({"model": "minilm-l6", "input": ["x"] * 2049}, "input"),
    ({"model": "minilm-l6", "input": "a", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "minilm-l6", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "minilm-l6", "input": "a", "dimensions": 385}, "dimensions"),
    ({"model": "minilm-l6", "input": "a", "dimensions": "8"}, "dimensions"),
    ({"model": "minilm-l6", "input": "a", "user": 7}, "user"),
    ({"input": "a"}, "model"),
])
def test_bad_requests_are_openai_400s(minilm, body, param):
    r = minilm.http.post(minilm.base_url + "/v1/embeddings", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_unknown_model_is_an_openai_404(minilm):
    with pytest.raises(openai.NotFoundError) as e:
        sdk(minilm).embeddings.create(model="text-embedding-3-small", input="a")
    assert e.value.code == "model_not_found"


def test_2048_inputs_are_accepted_and_the_sdk_raises_beyond(minilm):
    c = sdk(minilm)
    r = c.embeddings.create(model="minilm-l6", input=["ok"] * 2048, encoding_format="float")
    assert len(r.data) == 2048 and r.data[2047].index == 2047
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="minilm-l6", input=["ok"] * 2049)
    assert "2048" in e.value.message


def test_chat_on_an_embedding_model_is_a_400(minilm):
    with pytest.raises(openai.BadRequestError) as e:
        sdk(minilm).chat.completions.create(model="minilm-l6", messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in e.value.message
    with pytest.raises(openai.BadRequestError):
        sdk(minilm).completions.create(model="minilm-l6", prompt="hi", max_tokens=1)


def test_full_queue_answers_429_and_the_directory_path_serves_too():
    path = str(pathlib.Path(_models_dir()) / MODEL_DIR)
    s = Server(["--model", path, "--threads", "2", "--max-queue", "1"])
    try:
        assert [m["id"] for m in s.http.get(s.base_url + "/v1/models").json()["data"]] == [MODEL_DIR]
        long_text = next(k["text"] for k in GOLDEN["cases"] if k["untruncated_tokens"] > 256)
        body = {"model": MODEL_DIR, "input": [long_text] * 16, "encoding_format": "base64"}
        hdr = {"Authorization": "Bearer " + s.admin_key}

        def one(_):
            return requests.post(s.base_url + "/v1/embeddings", json=body, headers=hdr, timeout=300)
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            results = list(ex.map(one, range(12)))
        codes = [r.status_code for r in results]
        assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
        busy = next(r for r in results if r.status_code == 429)
        assert busy.json()["error"]["type"] and int(busy.headers["retry-after"]) >= 1
    finally:
        assert s.stop() == 0


def test_embeddings_on_a_decoder_model_is_a_400(server):
    r = server.http.post(server.base_url + "/v1/embeddings", json={"model": "smollm2", "input": "hi"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "model" and "not an embedding model" in r.json()["error"]["message"]


def test_device_cuda_serves_it_on_the_gpu_or_refuses_clearly(tmp_path):
    """--device cuda on the embedding model: a build without CUDA (or a machine without a GPU) refuses the load with
    the reason, and the process exits non-zero; where a GPU serves it, its vectors equal sentence-transformers'."""
    models = _models_dir()
    try:
        s = Server(["--model", "minilm-l6", "--models-dir", models, "--device", "cuda", "--data-dir", str(tmp_path)])
    except RuntimeError as e:
        msg = str(e)
        code = re.match(r"server failed to start \((-?\d+)\)", msg)
        assert code and int(code.group(1)) != 0, msg
        assert "this build has no CUDA backend" in msg or "no CUDA device on this machine" in msg, msg
        assert "all-MiniLM-L6-v2" in msg, msg  # the error names the model
        return
    try:
        cases = GOLDEN["cases"]
        r = sdk(s).embeddings.create(model="minilm-l6", input=[c["ids"] for c in cases], encoding_format="float")
        assert_matches_golden([d.embedding for d in r.data], cases)
    finally:
        assert s.stop() == 0


def test_a_chat_model_and_an_embedding_model_from_yaml_with_per_model_limits(model_spec, tmp_path):
    """Both kinds in one server from the config file's models: list; the embedding model's own limits there
    (embedding_truncate off, embedding_max_request_tokens) apply to it."""
    conf = tmp_path / "citadel.yaml"
    conf.write_text(f"""models_dir: "{_models_dir()}"
threads: 2
max_context: 512
kv_memory_mb: 64
models:
  - model: "{model_spec}"
    served_model_name: smollm2
  - model: minilm-l6
    served_model_name: minilm
    embedding_truncate: "off"
    embedding_max_request_tokens: 40
""")
    s = Server(["--config", str(conf)])
    try:
        c = sdk(s)
        kinds = {m["id"]: m["kind"] for m in s.http.get(s.base_url + "/v1/models").json()["data"]}
        assert kinds == {"smollm2": "chat", "minilm": "embedding"}
        case = GOLDEN["cases"][2]
        e = c.embeddings.create(model="minilm", input=case["text"]).data[0].embedding
        assert cosine(e, case["embedding"]) > 0.9999
        chat = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert chat.usage.completion_tokens >= 1
        with pytest.raises(openai.BadRequestError):
            c.embeddings.create(model="smollm2", input="hi")
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "hi"}])
        # embedding_truncate off: an input past the model's 256 tokens is refused, naming its length and the limit.
        long_case = next(k for k in GOLDEN["cases"] if k["untruncated_tokens"] > GOLDEN["max_seq_length"])
        r = s.http.post(s.base_url + "/v1/embeddings", json={"model": "minilm", "input": ["ok", long_case["text"]]})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", "input", "context_length_exceeded")
        assert f"'input[1]' is {long_case['untruncated_tokens']} tokens" in err["message"], err["message"]
        assert f"at most {GOLDEN['max_seq_length']} tokens per input" in err["message"], err["message"]
        # embedding_max_request_tokens 40: 13 x "ok" ([CLS] ok [SEP]) is 39 tokens, 14 is 42.
        assert c.embeddings.create(model="minilm", input=["ok"] * 13).usage.prompt_tokens == 39
        with pytest.raises(openai.BadRequestError) as e:
            c.embeddings.create(model="minilm", input=["ok"] * 14)
        assert e.value.code == "too_many_tokens"
        assert "holds 42 tokens" in e.value.message and "at most 40 tokens per request" in e.value.message
    finally:
        assert s.stop() == 0


def test_the_default_request_token_cap_refuses_before_computing(minilm):
    """The default cap (300000 tokens a request): 2048 inputs of 256 tokens (524288) are refused with the OpenAI
    400 naming both numbers, and nothing is embedded."""
    m = frozenset({("model_name", "minilm-l6")})
    long_text = next(k["text"] for k in GOLDEN["cases"] if k["untruncated_tokens"] > GOLDEN["max_seq_length"])
    before = _scrape(minilm)
    r = minilm.http.post(minilm.base_url + "/v1/embeddings",
                         json={"model": "minilm-l6", "input": [long_text] * 2048}, timeout=120)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", "input", "too_many_tokens")
    assert "holds 524288 tokens" in err["message"] and "at most 300000 tokens per request" in err["message"]
    after = _scrape(minilm)
    for n in ("citadel:embedding_tokens_total", "citadel:embedding_batch_size_count"):
        assert after.get((n, m), 0) == before.get((n, m), 0), n


def _scrape(server):
    """{(name, frozenset(labels)): value} of GET /metrics, parsed by prometheus_client (not the server's code)."""
    from prometheus_client.parser import text_string_to_metric_families
    r = server.http.get(server.base_url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def test_dashboard_embedding_queries_name_exported_metrics(minilm):
    """The Grafana dashboard's citadel:embedding_* queries (test_metrics.py checks the others against the shared
    chat server, which has no embedding model) name only series this server exports."""
    from test_metrics import EMBEDDING_PREFIX, dashboard_exprs, exported_names, promql_metric_names
    r = minilm.http.get(minilm.base_url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    exported = exported_names(r.text)
    used = {n for e in dashboard_exprs() for n in promql_metric_names(e) if n.startswith(EMBEDDING_PREFIX)}
    assert len(used) >= 8, sorted(used)
    missing = used - exported
    assert not missing, f"the dashboard names embedding metrics the server does not export: {sorted(missing)}"


def test_metrics_move_by_exactly_what_was_sent(minilm):
    m = frozenset({("model_name", "minilm-l6")})
    names = ["citadel:embedding_requests_total", "citadel:embedding_inputs_total", "citadel:embedding_tokens_total",
             "citadel:embedding_request_latency_seconds_count", "citadel:embedding_queue_time_seconds_count",
             "citadel:embedding_request_errors_total", "citadel:embedding_cancelled_total"]
    before = _scrape(minilm)
    c = sdk(minilm)
    texts = [k["text"] for k in GOLDEN["cases"]]
    sent_inputs = sent_tokens = 0
    for batch in (texts[:1], texts, texts[2:5]):
        r = c.embeddings.create(model="minilm-l6", input=batch)
        sent_inputs += len(batch)
        sent_tokens += r.usage.prompt_tokens
    bad = minilm.http.post(minilm.base_url + "/v1/embeddings", json={"model": "minilm-l6", "input": [""]})
    assert bad.status_code == 400  # refused by the API before the engine: counted nowhere here
    after = _scrape(minilm)
    moved = {n: after.get((n, m), 0) - before.get((n, m), 0) for n in names}
    assert moved == {"citadel:embedding_requests_total": 3, "citadel:embedding_inputs_total": sent_inputs,
                     "citadel:embedding_tokens_total": sent_tokens,
                     "citadel:embedding_request_latency_seconds_count": 3,
                     "citadel:embedding_queue_time_seconds_count": 3,
                     "citadel:embedding_request_errors_total": 0, "citadel:embedding_cancelled_total": 0}
    for n in ("citadel:embedding_requests_running", "citadel:embedding_requests_waiting"):
        assert after[(n, m)] == 0
    assert after[("citadel:embedding_batch_size_count", m)] >= before.get(("citadel:embedding_batch_size_count", m),
                                                                          0) + 3
    assert ("citadel:embedding_rejected_total", m | {("reason", "busy")}) in after
    # /api/v1/stats reads the same series.
    stats = minilm.http.get(minilm.base_url + "/api/v1/stats", timeout=10).json()
    entry = next(e for e in stats["models"] if e["id"] == "minilm-l6")
    assert entry["kind"] == "embedding"
    assert entry["inputs_total"] == after[("citadel:embedding_inputs_total", m)]
    assert entry["tokens_total"] == after[("citadel:embedding_tokens_total", m)]
    assert entry["requests_total"] == after[("citadel:embedding_requests_total", m)]
    assert entry["running"] == 0 and entry["waiting"] == 0


def test_encrypted_embedding_model_is_served_from_memory(tmp_path):
    """The real all-MiniLM-L6-v2 with its weights encrypted by `citadel encrypt` (model.safetensors.enc beside the
    clear config and tokenizer files, no model.safetensors): served by `--model DIR --key-file K` with the
    sentence-transformers embeddings, nothing written to the model directory; a wrong key or one modified byte is a
    one-line error and no server."""
    import shutil
    import subprocess
    from conftest import _binary
    src = pathlib.Path(_models_dir()) / MODEL_DIR
    model = tmp_path / MODEL_DIR
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("model.safetensors"))
    enc, key = model / "model.safetensors.enc", tmp_path / "model.key"
    out = subprocess.run([_binary(), "encrypt", "--in", str(src / "model.safetensors"), "--out", str(enc),
                          "--new-key-file", str(key), "--key-id", "embed-key@1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert b"model.embeddings" not in enc.read_bytes()[:4096]  # the safetensors header is not in clear
    files_before = sorted(p.relative_to(model) for p in model.rglob("*"))
    s = Server(["--model", str(model), "--key-file", str(key), "--threads", "2"])
    try:
        assert [m["id"] for m in s.http.get(s.base_url + "/v1/models").json()["data"]] == [MODEL_DIR]
        cases = GOLDEN["cases"][:6]
        r = sdk(s).embeddings.create(model=MODEL_DIR, input=[k["text"] for k in cases])
        assert_matches_golden([d.embedding for d in r.data], cases)
    finally:
        assert s.stop() == 0, "".join(s.stderr[-20:])
    assert any("decrypted" in l and "embed-key@1" in l for l in s.stderr), "".join(s.stderr[-20:])
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == files_before  # no plaintext written beside it

    def refused(extra):
        r = subprocess.run([_binary(), "serve", "--model", str(model), "--port", "0", "--data-dir",
                            str(tmp_path / "x")] + extra, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, CITADEL_BOOTSTRAP_ADMIN_KEY=""))
        assert r.returncode != 0, r.stderr
        errors = [l for l in r.stderr.splitlines()
                  if l.startswith("citadel serve: ") and l != "citadel serve: effective configuration"]
        assert len(errors) == 1, r.stderr
        return errors[0]

    bad_key = tmp_path / "bad.key"
    bad_key.write_text("key=" + "00" * 32 + "\n")
    assert "model.safetensors.enc" in refused(["--key-file", str(bad_key)])
    assert "--key-file" in refused([])
    data = bytearray(enc.read_bytes())
    data[len(data) // 2] ^= 0x01
    enc.write_bytes(bytes(data))
    assert "model.safetensors.enc" in refused(["--key-file", str(key)])
