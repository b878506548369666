"""--log-format json: every stderr line of the server is one JSON object; each exchange has an access line with its
request id; no prompt text and no key reaches the log."""
import json
import secrets
import time

import requests

from conftest import Server


def test_json_logs_carry_request_id_and_no_prompt(model_spec):
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "512",
                "--kv-memory-mb", "64", "--log-format", "json", "--log-level", "debug"])
    marker = "zebrafinch" + secrets.token_hex(4)
    rid, rid_stream, rid_denied = ("logtest-" + secrets.token_hex(6) for _ in range(3))
    bad_key = s.admin_key[:-4] + "abcd"
    try:
        chat = {"model": "smollm2", "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": f"Repeat the word {marker} please."}]}
        r = s.http.post(s.base_url + "/v1/chat/completions", json=chat, headers={"x-request-id": rid}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == rid
        r = s.http.post(s.base_url + "/v1/chat/completions", json=dict(chat, stream=True),
                        headers={"x-request-id": rid_stream}, timeout=60)
        assert r.status_code == 200 and "[DONE]" in r.text
        r = requests.get(s.base_url + "/v1/models", timeout=10,
                         headers={"Authorization": "Bearer " + bad_key, "x-request-id": rid_denied})
        assert r.status_code == 401
    finally:
        assert s.stop() == 0
    lines = [json.loads(line) for line in s.stderr]  # every line parses
    assert lines and all(isinstance(l, dict) for l in lines)
    for l in lines:
        assert l["level"] in ("debug", "info", "warn", "error") and isinstance(l["msg"], str)
        assert l["ts"].endswith("Z") and len(l["ts"]) == 24, l["ts"]

    def access(request_id):
        found = [l for l in lines if l.get("component") == "access" and l.get("request_id") == request_id]
        assert len(found) == 1, (request_id, found)
        return found[0]

    a = access(rid)
    assert a["level"] == "info" and a["method"] == "POST" and a["route"] == "/v1/chat/completions"
    assert a["status"] == 200 and a["duration_ms"] >= 0 and a["model"] == "smollm2"
    assert a["prompt_tokens"] > 0 and 0 < a["completion_tokens"] <= 4 and a["principal"] != "-"
    assert access(rid_stream)["streamed"] == 1
    denied = access(rid_denied)
    assert denied["status"] == 401 and denied["principal"] == "-"
    raw = "".join(s.stderr)
    assert marker not in raw  # no prompt text, in any line
    assert s.admin_key not in raw and bad_key not in raw and bad_key[-20:] not in raw


def test_lines_written_off_the_handling_thread_carry_the_request_id(tmp_path):
    """A client that disconnects mid-stream: the generation's line (written on the connection's executor when the
    close is seen) and the engine's cancel line (on the engine thread) both carry the request's id. debug:slow
    (5 ms per token) makes 2000 tokens take 10 s, so the disconnect always lands mid-generation."""
    s = Server(["--model", "debug:slow", "--served-model-name", "dbg", "--log-format", "json",
                "--log-level", "debug"], data_dir=str(tmp_path))
    rid = "logtest-gone-" + secrets.token_hex(6)
    try:
        body = {"model": "dbg", "prompt": "x", "max_tokens": 2000, "stream": True, "logit_bias": {"256": -100}}
        before = s.http.get(s.base_url + "/api/v1/stats", timeout=10).json()["engine"]["cancelled_total"]
        with s.http.post(s.base_url + "/v1/completions", json=body, headers={"x-request-id": rid}, stream=True,
                         timeout=60) as r:
            assert r.status_code == 200
            n = 0
            for line in r.iter_lines():
                n += line.startswith(b"data: {")
                if n >= 3:
                    break
        deadline = time.time() + 20
        while s.http.get(s.base_url + "/api/v1/stats", timeout=10).json()["engine"]["cancelled_total"] == before:
            assert time.time() < deadline, "the engine request was not cancelled"
            time.sleep(0.05)
    finally:
        assert s.stop() == 0
    lines = [json.loads(line) for line in s.stderr]
    mine = [l for l in lines if l.get("request_id") == rid]
    by = {l.get("component"): l for l in mine}
    assert set(by) >= {"access", "generation", "engine"}, mine
    assert by["generation"]["msg"].startswith("client disconnected") and by["generation"]["streamed"] == 1
    assert by["engine"]["finish"] == "cancelled" and by["engine"]["level"] == "debug"
    assert by["engine"]["engine_request"].startswith("cmpl-") and by["engine"]["generated_tokens"] >= 3
    assert by["access"]["client_disconnected"] == 1
