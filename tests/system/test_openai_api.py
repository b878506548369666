"""The real `citadel serve` driven by the official openai SDK (and plain HTTP where the SDK hides details)."""
import concurrent.futures as cf
import json
import time

import openai
import pytest
import requests

MSG = [{"role": "user", "content": "Name three colours."}]


def stats(server):
    return server.http.get(server.base_url + "/api/v1/stats", timeout=10).json()


def test_health_ready_models(server, client, model_name):
    assert server.http.get(server.base_url + "/health").status_code == 200
    r = server.http.get(server.base_url + "/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    ids = [m.id for m in client.models.list().data]
    assert ids == [model_name]
    assert client.models.retrieve(model_name).id == model_name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_non_streaming(client, model_name):
    r = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=12, temperature=0)
    assert r.object == "chat.completion"
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_equals_non_streaming_and_usage(client, model_name):
    ref = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model=model_name, messages=MSG, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    body = [c for c in chunks if c.choices]
    assert all(c.choices[0].finish_reason is None for c in body[:-1])
    assert body[-1].choices[0].finish_reason == ref.choices[0].finish_reason
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == ref.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == ref.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == ref.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_streaming_and_not(client, model_name):
    ref = client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=8,
                                    temperature=0)
    assert ref.object == "text_completion"
    assert ref.usage.completion_tokens <= 8
    parts = list(client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=8,
                                           temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts) == ref.choices[0].text
    assert parts[-1].choices[0].finish_reason == ref.choices[0].finish_reason


def test_stop_strings(client, model_name):
    prompt = "Count: 1, 2, 3,"
    full = client.completions.create(model=model_name, prompt=prompt, max_tokens=24, temperature=0).choices[0].text
    assert len(full) > 6, full
    stop = full[3:6]
    want = full[:full.index(stop)]
    r = client.completions.create(model=model_name, prompt=prompt, max_tokens=24, temperature=0, stop=[stop, "@@@"])
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == "stop"
    s = client.completions.create(model=model_name, prompt=prompt, max_tokens=24, temperature=0, stop=stop,
                                  stream=True)
    assert "".join(p.choices[0].text for p in s) == want


def test_seed_reproducible(client, model_name):
    kw = dict(model=model_name, messages=MSG, max_tokens=16, temperature=0.8, seed=1234)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_n_choices(client, model_name):
    r = client.completions.create(model=model_name, prompt="Once upon a time", max_tokens=6, temperature=1.0,
                                  seed=5, n=2)
    assert sorted(c.index for c in r.choices) == [0, 1]


def test_logprobs(client, model_name):
    r = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert content and len(content) <= 4
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        assert t.top_logprobs[0].token == t.token  # greedy picks the most likely
    c = client.completions.create(model=model_name, prompt="Hello", max_tokens=3, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)


def test_errors_map_to_sdk_exceptions(server, client, model_name):
    with pytest.raises(openai.NotFoundError) as e:  # as the OpenAI API answers an unknown model
        client.chat.completions.create(model="gpt-nope", messages=MSG, max_tokens=2)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_name, messages=MSG, max_tokens=10_000_000)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_name, messages=MSG, temperature="hot")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_name, messages=[{"role": "wizard", "content": "x"}])
    r = server.http.post(server.base_url + "/v1/chat/completions", data="{not json",
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert server.http.get(server.base_url + "/v1/nothing").status_code == 404
    r = server.http.get(server.base_url + "/v1/chat/completions")
    assert r.status_code == 405 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = server.http.post(server.base_url + "/v1/completions", data=b"x" * (9 << 20))
    assert r.status_code == 413


def test_invalid_utf8_is_a_400_naming_the_byte_offset(server, model_name):
    """Raw bytes no SDK would send: every JSON route answers 400 in the OpenAI error shape with the offset of the
    first bad byte, before any parsing, model lookup or generation."""
    import http.client
    cases = [  # (path, body prefix before the bad bytes, bad bytes)
        ("/v1/chat/completions", '{"model":"%s","messages":[{"role":"user","content":"caf\u00e9 ' % model_name,
         b"\xc3\x28"),                                             # truncated 2-byte sequence
        ("/v1/completions", '{"model":"%s","prompt":"hi","stop":["' % model_name, b"\xed\xa0\x80"),  # surrogate
        ("/v1/embeddings", '{"model":"%s","input":"' % model_name, b"\xc0\xaf"),                     # overlong '/'
        ("/api/v1/infer", '{"prompt":"', b"\xf4\x90\x80\x80"),                                  # above U+10FFFF
        ("/admin/v1/keys", '{"name":"', b"\xff"),
    ]
    for path, prefix, bad in cases:
        body = prefix.encode() + "é ".encode() + bad + b'"}'
        offset = len(prefix.encode()) + len("é ".encode())
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                           "Authorization": "Bearer " + server.admin_key})
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        finally:
            conn.close()
        assert status == 400, (path, status, raw)
        err = json.loads(raw)["error"]
        assert set(err) == {"message", "type", "param", "code"}, (path, err)
        assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json", (path, err)
        assert err["message"] == f"request body is not valid UTF-8 at byte offset {offset}", (path, err)


def test_streams_ask_proxies_not_to_buffer(server):
    """A stream carries X-Accel-Buffering: no (a proxy that buffers by default passes it through as it comes); a
    plain JSON answer does not. test_nginx_replicas.py shows nginx honouring it."""
    body = {"model": "smollm2", "prompt": "Hello", "max_tokens": 2, "temperature": 0}
    with server.http.post(server.base_url + "/v1/completions", json=dict(body, stream=True), stream=True,
                          timeout=60) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["X-Accel-Buffering"] == "no"
        assert r.headers["Cache-Control"] == "no-cache"
        assert b"data: [DONE]" in b"".join(r.iter_content(None))
    r = server.http.post(server.base_url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200 and "X-Accel-Buffering" not in r.headers


def test_x_request_id(server):
    r = server.http.get(server.base_url + "/health", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r1 = server.http.get(server.base_url + "/nope")
    r2 = server.http.get(server.base_url + "/nope")
    assert r1.headers["x-request-id"] and r1.headers["x-request-id"] != r2.headers["x-request-id"]


def test_native_infer(server):
    r = server.http.post(server.base_url + "/api/v1/infer", json={"prompt": "Hello", "max_tokens": 4,
                                                                "temperature": 0})
    assert r.status_code == 200, r.text
    j = r.json()
    assert isinstance(j["text"], str) and j["usage"]["completion_tokens"] <= 4


def test_concurrent_streams(client, model_name):
    def one(i):
        text, finish = "", None
        for ch in client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": f"Say {i}"}],
                                                 max_tokens=8, temperature=0, stream=True):
            if ch.choices:
                text += ch.choices[0].delta.content or ""
                finish = ch.choices[0].finish_reason or finish
        return text, finish
    with cf.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(one, range(16)))
    assert all(f in ("stop", "length") for _, f in results)


def test_cancel_on_disconnect(server, model_spec):
    if model_spec == "debug:bytes":
        pytest.skip("the fake model finishes before a client can disconnect (use debug:slow)")
    before = stats(server)["engine"]
    body = {"model": "smollm2", "prompt": "Write a long story about the sea.", "max_tokens": 1500,
            "temperature": 0.7, "seed": 1, "stream": True}
    with server.http.post(server.base_url + "/v1/completions", json=body, stream=True, timeout=60) as r:
        assert r.status_code == 200
        n = 0
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                n += 1
            if n >= 3:
                break
    # The connection is closed: the engine request must be cancelled and stop generating.
    deadline = time.time() + 20
    while time.time() < deadline and stats(server)["engine"]["cancelled_total"] <= before["cancelled_total"]:
        time.sleep(0.05)
    after = stats(server)["engine"]
    assert after["cancelled_total"] == before["cancelled_total"] + 1
    time.sleep(0.5)
    later = stats(server)["engine"]
    assert later["generated_tokens_total"] == after["generated_tokens_total"]
    assert later["generated_tokens_total"] - before["generated_tokens_total"] < 1500
    assert stats(server)["server"]["client_disconnects"] >= 1


def test_rate_limited_when_queue_is_full(model_spec):
    from conftest import Server
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-queue", "1", "--max-seqs", "1",
                "--max-context", "1024", "--kv-memory-mb", "64"])
    try:
        c = openai.OpenAI(base_url=s.base_url + "/v1", api_key=s.admin_key, max_retries=0, timeout=120)

        def one(i):
            try:
                c.completions.create(model="smollm2", prompt=f"Number {i}:", max_tokens=16, temperature=0)
                return "ok"
            except openai.RateLimitError as e:
                assert e.response.headers.get("retry-after") == "1"
                return "429"
        with cf.ThreadPoolExecutor(24) as ex:
            outcomes = list(ex.map(one, range(24)))
        assert "429" in outcomes and "ok" in outcomes, outcomes
    finally:
        assert s.stop() == 0


def test_graceful_shutdown_finishes_running_requests(model_spec):
    from conftest import Server
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "1024",
                "--kv-memory-mb", "64", "--drain-timeout-s", "30"])
    c = openai.OpenAI(base_url=s.base_url + "/v1", api_key=s.admin_key, max_retries=0, timeout=120)
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(lambda: c.completions.create(model="smollm2", prompt="Hello", max_tokens=24, temperature=0))
        deadline = time.time() + 20
        while (time.time() < deadline and not fut.done() and
               s.http.get(s.base_url + "/api/v1/stats").json()["engine"]["running"] == 0):
            time.sleep(0.01)
        code = s.stop()
        r = fut.result()
    assert code == 0
    assert r.choices[0].finish_reason in ("stop", "length")
