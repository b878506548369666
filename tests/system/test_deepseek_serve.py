"""A DeepSeek-V3-shaped model (MLA + MoE, `citadel synth --preset deepseek3-tiny`) served with no new flag: the
official openai SDK gets chat and completions (greedy, streamed and not), concurrent requests (continuous batching
over the latent KV cache) give exactly the solo answers, and /v1/models lists it."""
import concurrent.futures
import subprocess

import openai
import pytest

from conftest import Server, _binary


@pytest.fixture(scope="module")
def ds3(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds3") / "deepseek3-tiny.gguf"
    subprocess.run([_binary(), "synth", "--arch", "deepseek2", "--preset", "deepseek3-tiny", "--seed", "7",
                    "--dtype", "q8_0", "--out", str(path)], check=True, capture_output=True)
    s = Server(["--model", str(path), "--served-model-name", "ds3", "--max-context", "512", "--kv-memory-mb", "8"])
    yield s
    assert s.stop() == 0, "".join(s.stderr[-20:])


def sdk(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.admin_key, max_retries=0, timeout=60)


def test_models_lists_the_deepseek_model(ds3):
    assert [m.id for m in sdk(ds3).models.list().data] == ["ds3"]


def test_chat_stream_equals_non_stream(ds3):
    c = sdk(ds3)
    msgs = [{"role": "user", "content": "Tell me about latent attention."}]
    full = c.chat.completions.create(model="ds3", messages=msgs, max_tokens=24, temperature=0)
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 24
    text = "".join(ch.choices[0].delta.content or "" for ch in
                   c.chat.completions.create(model="ds3", messages=msgs, max_tokens=24, temperature=0, stream=True)
                   if ch.choices)
    assert text == full.choices[0].message.content and text


def test_concurrent_requests_equal_solo(ds3):
    c = sdk(ds3)
    prompts = [f"Item {i}: " + "the quick brown fox " * (1 + 3 * i) for i in range(6)]
    solo = [c.completions.create(model="ds3", prompt=p, max_tokens=20, temperature=0).choices[0].text
            for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        together = list(ex.map(lambda p: c.completions.create(model="ds3", prompt=p, max_tokens=20,
                                                              temperature=0).choices[0].text, prompts))
    assert together == solo
    assert len(set(solo)) > 1  # different prompts, different answers: the model is not degenerate
