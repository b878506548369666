"""`citadel bench` against the shared server with the sampling settings users send (temperature and top_p): every
request completes, the result file carries the run's numbers, and a top_p outside (0, 1] is refused before any
request goes out."""
import json
import subprocess

from conftest import _binary


def _bench(server, model_name, tmp_path, *extra):
    out = tmp_path / "bench.json"
    cmd = [_binary(), "bench", "--base-url", server.base_url, "--model", model_name, "--api-key", server.admin_key,
           "--endpoint", "/v1/completions", "--dataset", "random", "--random-input-len", "16",
           "--random-output-len", "8", "--ignore-eos", "--num-prompts", "4", "--concurrency", "2", "--seed", "1",
           "--result-file", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120), out


def test_bench_with_top_p_completes_every_request(server, model_name, tmp_path):
    r, out = _bench(server, model_name, tmp_path, "--temperature", "0.6", "--top-p", "0.95")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["completed"] == 4 and res["failed"] == 0, res["errors"]
    assert res["total_output_tokens"] == 4 * 8


def test_bench_refuses_top_p_outside_its_range(server, model_name, tmp_path):
    for bad in ("0", "1.5"):
        r, out = _bench(server, model_name, tmp_path, "--top-p", bad)
        assert r.returncode != 0
        assert "--top-p" in r.stderr, r.stderr
        assert not out.exists()
