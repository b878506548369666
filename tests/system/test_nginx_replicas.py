"""Two Citadel replicas behind the real nginx (Debian's binary) on loopback, configured from
deploy/nginx/citadel.conf: requests spread over both (least_conn), keys made through the proxy work on both
(one shared state database), a draining replica's 503 is retried on the other, and killing one replica leaves
requests succeeding. Streaming: a slow model's stream passes through the example config as it is made, and the same
measurement through a buffering proxy sees it bunched (the negative control that keeps the check honest)."""
import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import Server

ROOT = pathlib.Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
FAIL_TIMEOUT_S = 2
CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2, "temperature": 0}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_conf(prefix, port, backends, buffering=None, http_extra=""):
    """deploy/nginx/citadel.conf with the example upstreams and listen port replaced, inside a minimal nginx.conf
    whose every path is under prefix (runs as the current user). buffering: None keeps the example's
    `proxy_buffering off`; "on" turns it on; "on-ignore" turns it on and ignores the upstream's X-Accel-Buffering
    header. http_extra: directives added to the http block (site-wide settings such as gzip)."""
    site = (ROOT / "deploy/nginx/citadel.conf").read_text()
    assert re.search(r"^\s*least_conn;", site, flags=re.M)
    if buffering is not None:
        edit = "proxy_buffering on;" + ("\n        proxy_ignore_headers X-Accel-Buffering;"
                                        if buffering == "on-ignore" else "")
        site, n = re.subn(r"proxy_buffering off;", edit, site)
        assert n == 1, "the example no longer says proxy_buffering off: update this test"
    site, n = re.subn(r"^\s*server 10\.0\.0\.\d+:8080 (.*);$", "", site, flags=re.M)
    assert n == 2, "the example upstream lines changed: update this test"
    # fail_timeout shorter than the example's 10 s: the drain test waits it out.
    ups = "".join(f"    server 127.0.0.1:{p} max_fails=2 fail_timeout={FAIL_TIMEOUT_S}s;\n" for p in backends)
    site = site.replace("    least_conn;\n", "    least_conn;\n" + ups)
    site, n = re.subn(r"^    listen 80;$", f"    listen 127.0.0.1:{port};", site, flags=re.M)
    assert n == 1
    (prefix / "citadel.conf").write_text(site)
    temp = "".join(f"    {d}_temp_path {prefix}/{d};\n" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = (f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {prefix}/access.log;\n{temp}{http_extra}    include {prefix}/citadel.conf;\n}}\n")
    (prefix / "nginx.conf").write_text(conf)
    return prefix / "nginx.conf"


def start_nginx(prefix, backends, **variant):
    """nginx from render_conf(prefix, ...) on a free loopback port, up once /health answers through it.
    Returns (process, base URL); stop it with stop_nginx."""
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = render_conf(prefix, port, backends, **variant)
    t = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                       capture_output=True, text=True)
    assert t.returncode == 0, t.stderr
    nginx = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
                              "-g", "daemon off;"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            if requests.get(base + "/health", timeout=2).status_code == 200:
                return nginx, base
        except requests.ConnectionError:
            pass
        if nginx.poll() is not None or time.time() > deadline:
            stop_nginx(nginx)
            raise AssertionError("nginx did not come up:\n" + (prefix / "error.log").read_text())
        time.sleep(0.1)


def stop_nginx(nginx):
    if nginx.poll() is None:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(20)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()


@pytest.fixture(scope="module")
def cluster(model_spec):
    if not NGINX:
        pytest.skip("nginx is not installed (apt-get install nginx-light; scripts/install-deps.sh test)")
    root = pathlib.Path(tempfile.mkdtemp(prefix="citadel-nginx-"))
    shared = root / "shared"
    shared.mkdir()
    replicas = []
    try:
        args = ["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "512", "--kv-memory-mb", "32",
                "--state-db", str(shared / "state.db"), "--audit-key", str(shared / "audit.key")]
        first = Server(args, data_dir=str(root / "a"))
        replicas.append(first)
        replicas.append(Server(args, data_dir=str(root / "b"), admin_key=first.admin_key))
        nginx, base = start_nginx(root, [r.port for r in replicas])
        yield base, replicas, first.admin_key
        stop_nginx(nginx)
    finally:
        for r in replicas:
            r.stop()
        shutil.rmtree(root, ignore_errors=True)


def finished(replica):
    return replica.http.get(replica.base_url + "/api/v1/stats", timeout=10).json()["engine"]["finished_total"]


def served_since(replicas, before, total):
    """Per-replica finished requests since `before`, once they add up to total (the engine counts a request just
    after its response is handed over, so poll briefly)."""
    deadline = time.time() + 10
    while True:
        got = [finished(r) - b for r, b in zip(replicas, before)]
        if sum(got) >= total or time.time() > deadline:
            return got
        time.sleep(0.05)


def test_requests_spread_and_keys_work_everywhere(cluster):
    base, replicas, admin = cluster
    h = {"Authorization": "Bearer " + admin}
    assert requests.get(base + "/ready", timeout=10).status_code == 200
    before = [finished(r) for r in replicas]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        codes = list(ex.map(lambda _: requests.post(base + "/v1/chat/completions", json=CHAT, headers=h,
                                                    timeout=120).status_code, range(24)))
    assert codes == [200] * 24
    served = served_since(replicas, before, 24)
    assert sum(served) == 24 and min(served) >= 4, served  # both took a real share
    # A key made through the proxy lands in the shared state: it works on each replica directly.
    key = requests.post(base + "/admin/v1/keys", json={"name": "via-nginx", "role": "developer"}, headers=h,
                        timeout=10).json()["key"]
    for r in replicas:
        got = requests.post(r.base_url + "/v1/chat/completions", json=CHAT,
                            headers={"Authorization": "Bearer " + key}, timeout=120)
        assert got.status_code == 200, got.text


def test_each_replica_compares_its_start_with_its_own(cluster):
    """The replicas share one state database but differ in data_dir: each records its own server.start (instance
    hostname:data_dir), and neither takes the other's start for its previous one (no config.change at start)."""
    base, replicas, admin = cluster
    h = {"Authorization": "Bearer " + admin}
    deadline = time.time() + 20  # the audit writer commits in the background
    while True:
        starts = requests.get(base + "/admin/v1/audit", params={"kind": "server.start", "limit": 100}, headers=h,
                              timeout=10).json()["data"]
        if len(starts) >= 2:
            break
        assert time.time() < deadline, starts
        time.sleep(0.2)
    instances = sorted(r["detail"]["instance"] for r in starts)
    assert len(instances) == 2 and instances[0] != instances[1], instances
    assert [i.rsplit("/", 1)[-1] for i in instances] == ["a", "b"], instances
    changes = requests.get(base + "/admin/v1/audit", params={"kind": "config.change", "limit": 100}, headers=h,
                           timeout=10).json()["data"]
    assert [c for c in changes if "changed" in c["detail"]] == [], changes


def test_drained_replica_is_retried_and_a_killed_one_is_skipped(cluster):
    base, replicas, admin = cluster
    h = {"Authorization": "Bearer " + admin}
    a, b = replicas
    # Drain b: its 503 is retried on a, every request succeeds and b runs none.
    assert requests.post(b.base_url + "/admin/v1/drain", headers=h, timeout=10).status_code == 200
    before, before_a = finished(b), finished(a)
    for _ in range(8):
        r = requests.post(base + "/v1/chat/completions", json=CHAT, headers=h, timeout=120)
        assert r.status_code == 200, r.text
    assert served_since([a], [before_a], 8) == [8] and finished(b) == before
    assert requests.delete(b.base_url + "/admin/v1/drain", headers=h, timeout=10).status_code == 200
    # Its 503s counted as failures (max_fails): nginx leaves b out for fail_timeout, then tries it again. nginx
    # compares whole seconds (now - checked <= fail_timeout), so b can stay out up to a second longer than that.
    time.sleep(FAIL_TIMEOUT_S + 1.5)
    # Kill a (no drain, no goodbye): nginx's connect fails and it retries on b.
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(30)
    before = finished(b)
    for _ in range(10):
        r = requests.post(base + "/v1/chat/completions", json=CHAT, headers=h, timeout=120)
        assert r.status_code == 200, r.text
    assert served_since([b], [before], 10) == [10]


# A site-wide setting many nginx hosts carry. gzip holds what it is given until its buffers fill unless each write is
# flushed, and nginx flushes each write only when it does not buffer the response: behind a buffering proxy the
# stream comes out at the end in one piece. (Buffering alone does not show here: with a chunked upstream, nginx 1.22
# passes each complete chunk on to a client that keeps up, buffered or not.)
SITE_GZIP = "    gzip on;\n    gzip_types text/event-stream;\n"
SLOW_TOKENS = 300  # debug:slow takes 5 ms per engine step: about 1.5 s of stream


@pytest.fixture(scope="module")
def slow_streams():
    """One debug:slow replica behind three nginx, each with SITE_GZIP: the example config as it is, the example with
    proxy_buffering on (Citadel's X-Accel-Buffering: no still applies), and with buffering on and that header
    ignored (the negative control). Yields ({variant: base URL}, admin key)."""
    if not NGINX:
        pytest.skip("nginx is not installed (apt-get install nginx-light; scripts/install-deps.sh test)")
    root = pathlib.Path(tempfile.mkdtemp(prefix="citadel-nginx-slow-"))
    replica, proxies = None, {}
    try:
        replica = Server(["--model", "debug:slow", "--served-model-name", "dbg", "--max-context", "1024",
                          "--kv-memory-mb", "16"], data_dir=str(root / "replica"))
        variants = (("example", None), ("buffering-on", "on"), ("buffering-on-header-ignored", "on-ignore"))
        for name, buffering in variants:
            proxies[name] = start_nginx(root / name, [replica.port], buffering=buffering, http_extra=SITE_GZIP)
        yield {name: base for name, (_, base) in proxies.items()}, replica.admin_key
    finally:
        for proc, _ in proxies.values():
            stop_nginx(proc)
        if replica:
            replica.stop()
        shutil.rmtree(root, ignore_errors=True)


def stream_timing(base, key):
    """Streams SLOW_TOKENS tokens from the slow model through base. Returns the arrival time of each chunk that
    carries text (seconds since the request was sent), the time the stream ended, and the response's encoding."""
    body = {"model": "dbg", "prompt": "x", "max_tokens": SLOW_TOKENS, "stream": True, "temperature": 0,
            "logit_bias": {"256": -100}}  # no <eos>: every token is generated
    t0 = time.monotonic()
    texts = []
    with requests.post(base + "/v1/completions", json=body, headers={"Authorization": "Bearer " + key,
                       "Accept-Encoding": "gzip"}, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        encoding = r.headers.get("Content-Encoding", "identity")
        for line in r.iter_lines():
            if not line:
                continue
            if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["text"]:
                texts.append(time.monotonic() - t0)
            last = (time.monotonic() - t0, line)
    assert last[1] == b"data: [DONE]", last
    assert len(texts) >= SLOW_TOKENS // 2, len(texts)
    return texts, last[0], encoding


def assert_streamed(texts, total, what):
    # The first text long before the end, and the texts spread over the stream (a quarter of them in its first half)
    # rather than bunched at the end.
    early = sum(t < total / 2 for t in texts) / len(texts)
    assert texts[0] < 0.3 * total and early >= 0.25, (what, texts[0], total, early)


def test_slow_stream_passes_through_unbuffered_and_a_buffering_proxy_bunches_it(slow_streams):
    bases, key = slow_streams
    got = {name: stream_timing(base, key) for name, base in bases.items()}
    for name, (texts, total, encoding) in got.items():
        print(f"{name}: {len(texts)} texts, first at {texts[0]:.3f} s, stream {total:.3f} s, "
              f"{sum(t < total / 2 for t in texts)} in its first half")
        assert total > 1.0, (name, total)  # slow enough for arrival times to mean something
        assert encoding == "gzip", (name, encoding)  # SITE_GZIP is on the path
    assert_streamed(*got["example"][:2], "example config")
    # Buffering on, but Citadel's X-Accel-Buffering: no turns it off for the stream.
    assert_streamed(*got["buffering-on"][:2], "buffering on, header honoured")
    # Negative control: the same measurement through a proxy that really buffers sees every text at the end.
    texts, total, _ = got["buffering-on-header-ignored"]
    assert texts[0] > 0.7 * total, ("the buffering proxy did not bunch the stream: the check cannot fail",
                                    texts[0], total)
