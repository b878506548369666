"""The README's Quick start, run as written: the shell block under "## Quick start" against a real server (the
`make run` step is the server this test starts; the printed admin key is this server's bootstrap key)."""
import os
import pathlib
import re
import subprocess

from conftest import ROOT, Server, _binary


def quickstart_block():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m, "README: no sh block under Quick start"
    return m.group(1)


def test_quickstart_commands_work_as_written(model_spec, tmp_path):
    block = quickstart_block()
    assert "export CITADEL_ADMIN_KEY=ck-paste-the-printed-key-here" in block
    s = Server(["--model", model_spec, "--served-model-name", "smollm2-135m"])
    try:
        script = (block.replace("ck-paste-the-printed-key-here", s.admin_key)
                  .replace("build/citadel", _binary())
                  .replace("127.0.0.1:8080", f"127.0.0.1:{s.port}"))
        assert script.count(f"127.0.0.1:{s.port}") == 3
        env = dict(os.environ, CITADEL_DATA_DIR=s.data_dir)  # the CLI's default data dir is the server's
        env.pop("OPENAI_API_KEY", None)
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env,
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
