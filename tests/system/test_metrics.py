"""GET /metrics against the real server (the session's shared one): who may scrape, the exposition parsed by
independent parsers (prometheus_client, promtool), counters that move by the exact counts of a request, the Grafana
dashboard and the alert rules naming only exported metrics, and the real Prometheus (Debian's binary) scraping it
with a metrics-reader key."""
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/citadel-dashboard.json"
RULES = ROOT / "deploy/prometheus/citadel-alerts.yml"
# Named by the rules and the dashboard, exported by the NVML collector (src/base/nvml_metrics.h) wherever
# libnvidia-ml.so.1 loads and reports a device: absent (never zero) on a host without a GPU, and only there.
GPU_RULE_METRICS = {"citadel:gpu_utilization_perc", "citadel:gpu_memory_usage_perc"}
# Series of embedding models (src/engine/engine_metrics.cc EmbedMetrics), registered when one is loaded: the shared
# server serves a chat model alone, so tests/system/test_embeddings.py checks these names against its MiniLM server.
EMBEDDING_PREFIX = "citadel:embedding_"
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def make_key(server, role):
    r = server.http.post(server.base_url + "/admin/v1/keys",
                         json={"name": f"metrics-{role}-{uuid.uuid4().hex[:6]}", "role": role}, timeout=30)
    assert r.status_code in (200, 201), r.text
    return r.json()


@pytest.fixture(scope="module")
def reader(server):
    """A metrics-reader key: role auditor holds stats.read (and audit.read), nothing else."""
    return make_key(server, "auditor")


def scrape(server, key=None):
    headers = {"Authorization": "Bearer " + (key or server.admin_key)}
    r = requests.get(server.base_url + "/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r


def parse(text):
    """{(name, frozenset(labels)): value} via prometheus_client's parser (independent of the server's code)."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def host_gpu_count():
    """The devices NVML reports on this host, asked through ctypes (not the server's loader); 0 without a driver."""
    import ctypes
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return 0
    if nvml.nvmlInit_v2() != 0:
        return 0
    n = ctypes.c_uint(0)
    try:
        return n.value if nvml.nvmlDeviceGetCount_v2(ctypes.byref(n)) == 0 else 0
    finally:
        nvml.nvmlShutdown()


def exported_names(text):
    """Every sample name the exposition can hold: the # TYPE names, with _bucket/_sum/_count for histograms."""
    names = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = m.groups()
        names.add(name)
        if kind == "histogram":
            names.update(name + s for s in HIST_SUFFIXES)
    return names


def test_who_may_scrape(server, reader):
    base = server.base_url + "/metrics"
    assert requests.get(base, timeout=10).status_code == 401
    for role in ("guest", "developer"):
        key = make_key(server, role)["key"]
        r = requests.get(base, headers={"Authorization": "Bearer " + key}, timeout=10)
        assert r.status_code == 403, (role, r.text)
        assert r.json()["error"]["code"] == "permission_denied"
    r = scrape(server, reader["key"])
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE citadel:prompt_tokens_total counter" in r.text


def test_exposition_parses_with_independent_parsers(server, reader):
    text = scrape(server, reader["key"]).text
    samples = parse(text)
    assert value(samples, "citadel:build_info") == 1
    build = [dict(ls) for (n, ls) in samples if n == "citadel:build_info"][0]
    assert build["version"] and build["commit"]
    assert value(samples, "citadel:process_resident_memory_bytes") > 10 * 2**20
    assert value(samples, "citadel:process_open_fds") >= 3
    assert 0 < value(samples, "citadel:host_memory_usage_perc") < 1
    assert value(samples, "citadel:kv_cache_blocks", state="total", model_name="smollm2") > 0
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        # promtool parses first (a parse error is fatal) and then lints names; the only lint finding allowed is the
        # one about colons, which the citadel: prefix (vLLM's convention) has by design.
        problems = [l for l in (r.stdout + r.stderr).splitlines()
                    if l.strip() and "should not contain ':'" not in l]
        assert "error while linting" not in (r.stdout + r.stderr), r.stdout + r.stderr
        assert not problems, "\n".join(problems)


def test_counters_move_by_the_exact_counts_of_a_request(server, reader):
    before = parse(scrape(server, reader["key"]).text)
    r = server.http.post(server.base_url + "/v1/completions",
                         json={"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 5,
                               "temperature": 0, "ignore_eos": True}, timeout=120)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    bad = requests.post(server.base_url + "/v1/completions", json={"model": "smollm2"},
                        headers={"Authorization": "Bearer " + server.admin_key}, timeout=30)
    assert bad.status_code == 400
    unauth = requests.post(server.base_url + "/v1/completions", json={}, timeout=30)
    assert unauth.status_code == 401

    m = dict(model_name="smollm2")
    route = dict(route="/v1/completions")
    want = {
        ("citadel:prompt_tokens_total", frozenset(m.items())): usage["prompt_tokens"],
        ("citadel:generation_tokens_total", frozenset(m.items())): usage["completion_tokens"],
        ("citadel:request_success_total", frozenset(dict(m, finished_reason="length").items())): 1,
        ("citadel:time_to_first_token_seconds_count", frozenset(m.items())): 1,
        ("citadel:request_queue_time_seconds_count", frozenset(m.items())): 1,
        ("citadel:e2e_request_latency_seconds_count", frozenset(m.items())): 1,
        ("citadel:inter_token_latency_seconds_count", frozenset(m.items())): usage["completion_tokens"] - 1,
        ("citadel:http_requests_total", frozenset(dict(route, method="POST", status="200").items())): 1,
        ("citadel:request_failures_total", frozenset(dict(route, reason="invalid").items())): 1,
        ("citadel:request_failures_total", frozenset(dict(route, reason="auth").items())): 1,
        ("citadel:tenant_prompt_tokens_total", frozenset(dict(tenant="default").items())): usage["prompt_tokens"],
        ("citadel:tenant_generation_tokens_total", frozenset(dict(tenant="default").items())):
            usage["completion_tokens"],
    }
    # The exchange is recorded as its last byte is queued: a scrape on another connection may come a moment first.
    deadline = time.time() + 10
    while True:
        after = parse(scrape(server, reader["key"]).text)
        got = {k: value(after, k[0], **dict(k[1])) - value(before, k[0], **dict(k[1])) for k in want}
        if got == want or time.time() > deadline:
            break
        time.sleep(0.1)
    assert got == want
    # /api/v1/stats reads the same series.
    stats = server.http.get(server.base_url + "/api/v1/stats", timeout=10).json()
    now = parse(scrape(server, reader["key"]).text)
    assert stats["engine"]["generated_tokens_total"] == value(now, "citadel:generation_tokens_total", **m)
    assert stats["engine"]["prompt_tokens_total"] == value(now, "citadel:prompt_tokens_total", **m)
    assert stats["server"]["responses_2xx"] >= 1 and stats["server"]["responses_4xx"] >= 2


def promql_metric_names(expr):
    """The citadel: metric names and `up` an expression selects (label values in quotes stripped first)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = set(re.findall(r"citadel:[A-Za-z0-9_:]+", bare))
    if re.search(r"(?<![A-Za-z0-9_:])up\s*\{", bare):
        names.add("up")
    return names


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    exprs = []
    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    return exprs


def rule_exprs():
    import yaml
    rules = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_dashboard_and_alert_rules_name_only_exported_metrics(server, reader):
    exported = exported_names(scrape(server, reader["key"]).text)
    gpu_families = {n for n in exported if n.startswith("citadel:gpu_")}
    if host_gpu_count() > 0 or os.environ.get("CITADEL_NVML_LIBRARY"):
        pending = set()  # a GPU host (or a driver named for the test): the NVML series must be there
    else:
        pending = GPU_RULE_METRICS
        assert not gpu_families, f"GPU series on a host without a GPU: {sorted(gpu_families)}"
    for source, exprs in (("dashboard", dashboard_exprs()), ("alert rules", rule_exprs())):
        assert len(exprs) >= 12, source
        used = set().union(*(promql_metric_names(e) for e in exprs))
        embedding = {n for n in used if n.startswith(EMBEDDING_PREFIX)}
        if source == "dashboard":
            assert len(embedding) >= 8, sorted(embedding)  # the Embeddings row (checked in test_embeddings.py)
        missing = used - exported - pending - embedding - {"up"}
        assert not missing, f"{source} names metrics the server does not export: {sorted(missing)}"
        assert len(used) >= 8, (source, used)
    # The checker itself sees through label values and suffixes.
    assert promql_metric_names('rate(citadel:x_bucket{route="citadel:not_a_metric"}[5m])') == {"citadel:x_bucket"}


def test_gpu_series_through_a_fake_nvml_driver():
    """The whole path on any host: `citadel serve` dlopens the fake libnvidia-ml the build makes for the tests
    (CITADEL_NVML_LIBRARY), and /metrics carries its canned values, parsed by prometheus_client; with it every
    metric the dashboard and the rules name is exported."""
    from conftest import Server
    lib = pathlib.Path(os.environ.get("CITADEL_BIN", ROOT / "build" / "citadel")).parent / "libcitadel_fake_nvml.so"
    if not lib.is_file():
        pytest.skip(f"{lib} not built (target citadel_fake_nvml)")
    s = Server(["--model", "debug:bytes", "--served-model-name", "dbg"],
               env=dict(os.environ, CITADEL_NVML_LIBRARY=str(lib)))
    try:
        text = scrape(s).text
        samples = parse(text)
        gpu0, gpu1 = frozenset({("gpu", "0")}), frozenset({("gpu", "1")})
        assert samples[("citadel:gpu_utilization_perc", gpu0)] == 0.37
        assert samples[("citadel:gpu_utilization_perc", gpu1)] == 1.0
        assert samples[("citadel:gpu_memory_used_bytes", gpu0)] == 20 * 2**30
        assert samples[("citadel:gpu_memory_total_bytes", gpu0)] == 80 * 2**30
        assert samples[("citadel:gpu_memory_usage_perc", gpu0)] == 0.25
        assert samples[("citadel:gpu_memory_usage_perc", gpu1)] == 0.95
        assert samples[("citadel:gpu_temperature_celsius", gpu1)] == 81
        assert samples[("citadel:gpu_power_watts", gpu0)] == 123.456
        info = {dict(ls)["gpu"]: dict(ls) for (n, ls), v in samples.items() if n == "citadel:gpu_info" and v == 1}
        assert info["0"]["name"] == "Fake H100 80GB HBM3"
        assert info["1"]["name"] == 'Fake "quoted" GPU'
        assert info["1"]["uuid"] == "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        deadline = time.time() + 10  # stderr is pumped by another thread
        while not any("gpu metrics: NVML from" in ln and "2 device(s)" in ln for ln in s.stderr):
            assert time.time() < deadline, s.stderr[-5:]
            time.sleep(0.05)
        exported = exported_names(text)
        for exprs in (dashboard_exprs(), rule_exprs()):
            used = set().union(*(promql_metric_names(e) for e in exprs))
            used = {n for n in used if not n.startswith(EMBEDDING_PREFIX)}
            assert not used - exported - {"up"}, sorted(used - exported - {"up"})  # embedding series: test_embeddings.py
    finally:
        assert s.stop() == 0, "".join(s.stderr[-20:])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_prometheus_scrapes_citadel_with_a_reader_key(server, reader):
    prom = shutil.which("prometheus")
    if not prom:
        pytest.skip("Debian's prometheus is not installed (scripts/install-deps.sh installs it)")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="citadel-prom-"))
    try:
        token = tmp / "token"
        token.write_text(reader["key"] + "\n")
        token.chmod(0o600)
        shutil.copy(RULES, tmp / "citadel-alerts.yml")
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [citadel-alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: citadel\n"
            "    metrics_path: /metrics\n"
            f"    authorization: {{type: Bearer, credentials_file: {token}}}\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n")
        port = free_port()
        log = open(tmp / "log", "w")
        p = subprocess.Popen([prom, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                              f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        api = f"http://127.0.0.1:{port}/api/v1"
        try:
            def query(q):
                try:
                    r = requests.get(api + "/query", params={"query": q}, timeout=5)
                except requests.ConnectionError:
                    return None
                return r.json()["data"]["result"] if r.status_code == 200 else None

            deadline = time.time() + 60
            while time.time() < deadline and not query('up{job="citadel"} == 1'):
                assert p.poll() is None, (tmp / "log").read_text()[-2000:]
                time.sleep(0.3)
            assert query('up{job="citadel"} == 1'), (tmp / "log").read_text()[-2000:]

            before = query('citadel:prompt_tokens_total{model_name="smollm2"}')
            base = float(before[0]["value"][1]) if before else 0.0
            r = server.http.post(server.base_url + "/v1/completions",
                                 json={"model": "smollm2", "prompt": "One two three", "max_tokens": 2}, timeout=120)
            assert r.status_code == 200, r.text
            n = r.json()["usage"]["prompt_tokens"]
            deadline = time.time() + 30
            seen = 0.0
            while time.time() < deadline:
                res = query('citadel:prompt_tokens_total{model_name="smollm2"}')
                seen = float(res[0]["value"][1]) if res else 0.0
                if seen >= base + n:
                    break
                time.sleep(0.3)
            assert seen >= base + n, (base, n, seen)
            series = requests.get(api + "/label/__name__/values", timeout=5).json()["data"]
            for name in ("citadel:time_to_first_token_seconds_bucket", "citadel:http_requests_total",
                         "citadel:process_resident_memory_bytes", "citadel:build_info", "citadel:kv_cache_usage_perc"):
                assert name in series, name
            # The alert rules load and evaluate against the live series.
            groups = requests.get(api + "/rules", timeout=5).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert len(rules) == len(rule_exprs()) and all(r["health"] in ("ok", "unknown") for r in rules), rules
        finally:
            p.terminate()
            p.wait(timeout=30)
            log.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
