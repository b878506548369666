"""Several models in one server (`--model` repeated) and the registry's admin API: /v1/models lists every model and
alias, an unknown model is the OpenAI 404 model_not_found, a version loads through the API while traffic runs, an
alias moves traffic to it (canary split, sticky per key, rollback in one call), the old version unloads, and no
request fails during any of it. Models: tiny synthetic llama files (different seeds answer differently) and a
DeepSeek-V3-shaped one."""
import concurrent.futures
import subprocess
import threading
import time

import openai
import pytest
import requests

from conftest import Server, _binary


def synth(tmp, preset, seed, arch="llama"):
    path = tmp / f"{preset}-{seed}.gguf"
    subprocess.run([_binary(), "synth", "--arch", arch, "--preset", preset, "--seed", str(seed), "--dtype", "f32",
                    "--out", str(path)], check=True, capture_output=True)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    return {"v1": synth(tmp, "tiny", 1), "v2": synth(tmp, "tiny", 2), "ds3": synth(tmp, "deepseek3-tiny", 3, "deepseek2")}


@pytest.fixture(scope="module")
def srv(files):
    s = Server(["--model", files["v1"], "--served-model-name", "chat@v1", "--model", files["ds3"],
                "--served-model-name", "ds3", "--max-context", "512", "--kv-memory-mb", "16"])
    yield s
    assert s.stop() == 0, "".join(s.stderr[-30:])


def sdk(s, key=None):
    return openai.OpenAI(base_url=s.base_url + "/v1", api_key=key or s.admin_key, max_retries=0, timeout=60)


def complete(s, model, key=None, prompt="Once upon a time"):
    r = sdk(s, key).completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
    return r.model, r.choices[0].text


def admin(s, method, path, body=None):
    return s.http.request(method, s.base_url + path, json=body, timeout=30)


def wait_loaded(s, name, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in admin(s, "GET", "/admin/v1/models").json()["data"]:
            if m["id"] == name and m["state"] != "loading":
                return m
        time.sleep(0.05)
    raise AssertionError(name + " did not finish loading")


def test_models_listed_and_unknown_is_404(srv):
    assert {m.id for m in sdk(srv).models.list().data} == {"chat@v1", "ds3"}
    with pytest.raises(openai.NotFoundError) as e:
        complete(srv, "gpt-9")
    assert e.value.body["code"] == "model_not_found"
    assert complete(srv, "chat@v1")[0] == "chat@v1"
    assert complete(srv, "ds3")[0] == "ds3"
    assert complete(srv, "chat@v1")[1] != complete(srv, "ds3")[1]
    # /api/v1/infer with no model: the first (default) one.
    r = srv.http.post(srv.base_url + "/api/v1/infer", json={"prompt": "Hi", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text


def test_load_fails_clearly(srv, files):
    r = admin(srv, "POST", "/admin/v1/models", {"model": "/nonexistent/model.gguf", "served_model_name": "broken"})
    assert r.status_code == 202
    m = wait_loaded(srv, "broken")
    assert m["state"] == "failed" and "/nonexistent/model.gguf" in m["error"]
    assert admin(srv, "DELETE", "/admin/v1/models/broken").status_code == 200
    r = admin(srv, "POST", "/admin/v1/models", {"model": files["v2"], "served_model_name": "pinned", "sha256": "0" * 64})
    assert r.status_code == 202
    assert "is not the pinned" in wait_loaded(srv, "pinned")["error"]
    admin(srv, "DELETE", "/admin/v1/models/pinned")
    r = admin(srv, "POST", "/admin/v1/models", {"model": files["v2"], "served_model_name": "tight", "memory_mb": 4})
    assert r.status_code == 202
    assert "exceed the model's memory budget of 4 MiB" in wait_loaded(srv, "tight")["error"]
    admin(srv, "DELETE", "/admin/v1/models/tight")
    assert admin(srv, "POST", "/admin/v1/models", {"model": files["v2"], "served_model_name": "ds3"}).status_code == 409
    assert admin(srv, "POST", "/admin/v1/models", {"served_model_name": "x"}).status_code == 400
    assert admin(srv, "PUT", "/admin/v1/aliases/a", {"targets": [{"model": "nope", "weight": 1}]}).status_code == 404
    assert admin(srv, "PUT", "/admin/v1/aliases/a", {"targets": [{"model": "ds3", "weight": 0}]}).status_code == 400
    assert admin(srv, "PUT", "/admin/v1/aliases/ds3", {"targets": [{"model": "chat@v1"}]}).status_code == 400


def test_swap_canary_rollback_with_zero_failures(srv, files):
    assert admin(srv, "PUT", "/admin/v1/aliases/chat", {"targets": [{"model": "chat@v1", "weight": 1}]}).ok
    v1 = complete(srv, "chat")
    assert v1[0] == "chat@v1"
    failures, served, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                served.append(complete(srv, "chat")[0])
            except Exception as e:  # noqa: BLE001 - every failure is the test's business
                failures.append(repr(e))

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert admin(srv, "POST", "/admin/v1/models", {"model": files["v2"], "served_model_name": "chat@v2"}).status_code == 202
        assert wait_loaded(srv, "chat@v2")["state"] == "ready"
        v2 = complete(srv, "chat@v2")
        assert v2[1] != v1[1]
        # Canary: half and half (a weighted round robin shared by every caller of the alias, the traffic threads
        # included: over all requests since the change both versions answer); sticky: one key, one version.
        mark = len(served)
        r = admin(srv, "PUT", "/admin/v1/aliases/chat",
                  {"targets": [{"model": "chat@v1", "weight": 50}, {"model": "chat@v2", "weight": 50}]})
        assert r.ok, r.text
        mine = [complete(srv, "chat")[0] for _ in range(12)]
        assert set(mine + served[mark:]) == {"chat@v1", "chat@v2"}
        admin(srv, "PUT", "/admin/v1/aliases/chat",
              {"targets": [{"model": "chat@v1", "weight": 50}, {"model": "chat@v2", "weight": 50}], "sticky": True})
        assert len({complete(srv, "chat")[0] for _ in range(8)}) == 1
        # All on v2; rollback restores the sticky split, and again the all-v2 alias.
        admin(srv, "PUT", "/admin/v1/aliases/chat", {"targets": [{"model": "chat@v2", "weight": 1}]})
        assert {complete(srv, "chat")[0] for _ in range(4)} == {"chat@v2"}
        assert admin(srv, "POST", "/admin/v1/aliases/chat/rollback").json()["sticky"] is True
        assert admin(srv, "POST", "/admin/v1/aliases/chat/rollback").json()["targets"] == [{"model": "chat@v2", "weight": 1}]
        # The old version leaves while requests run; an alias target cannot.
        assert admin(srv, "DELETE", "/admin/v1/models/chat@v2").status_code == 409
        r = admin(srv, "DELETE", "/admin/v1/models/chat@v1")
        assert r.status_code == 200 and r.json()["state"] == "unloading"
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert "chat@v1" in served and served[-1] == "chat@v2"
    assert complete(srv, "chat") == v2[0:1] + (complete(srv, "chat@v2")[1],)
    with pytest.raises(openai.NotFoundError):
        complete(srv, "chat@v1")
    assert {m.id for m in sdk(srv).models.list().data} == {"ds3", "chat@v2", "chat"}
    assert [a["name"] for a in admin(srv, "GET", "/admin/v1/aliases").json()["data"]] == ["chat"]
    card = srv.http.get(srv.base_url + "/v1/models/chat", timeout=10).json()
    assert (card["root"], card["version"], card["kind"]) == ("chat@v2", "v2", "chat")


def test_yaml_config_lists_the_models(files, tmp_path):
    conf = tmp_path / "citadel.yaml"
    conf.write_text(f"""# two models from the config file
max_context: 512
kv_memory_mb: 16
models:
  - model: "{files['v1']}"
    served_model_name: chat@v1
  - model: "{files['ds3']}"
    served_model_name: ds3
    max_context: 256
    threads: 1
    memory_mb: 64
""")
    s = Server(["--config", str(conf)])
    try:
        assert {m.id: m.model_extra["max_model_len"] for m in sdk(s).models.list().data} == {"chat@v1": 512, "ds3": 256}
        assert complete(s, "ds3")[0] == "ds3"
        assert "models:" in "".join(s.stderr) and "served_model_name: \"ds3\"" in "".join(s.stderr)
    finally:
        assert s.stop() == 0


def test_models_cli(srv, files):
    env = {"CITADEL_API_KEY": srv.admin_key, "PATH": "/usr/bin:/bin"}

    def cli(*args):
        return subprocess.run([_binary(), "models", *args, "--url", srv.base_url], env=env, capture_output=True,
                              text=True, timeout=60)

    r = cli("load", files["v1"], "--name", "cli@1", "--threads", "1")
    assert r.returncode == 0 and r.stdout.strip() == "cli@1 ready", r.stderr
    assert cli("alias", "cli", "cli@1=3", "--sticky").returncode == 0
    listed = cli("list").stdout
    assert "cli@1" in listed and "cli@1=3 (sticky)" in listed, listed
    assert complete(srv, "cli")[0] == "cli@1"
    r = cli("unload", "cli@1")
    assert r.returncode == 1 and "routes to 'cli@1'" in r.stderr  # the alias still points at it
    assert cli("alias", "cli", "nope=1").returncode == 1
    r = cli("load", "/nonexistent.gguf", "--name", "cli@2")
    assert r.returncode == 1 and "/nonexistent.gguf" in r.stderr
    env["CITADEL_API_KEY"] = "ck-000000000000-" + "A" * 43
    r = cli("list")
    assert r.returncode == 1 and "HTTP 401" in r.stderr
