"""Operations on the real server and model: readiness that tells the truth, the admin drain of a rolling update
(new generations 503 + Retry-After while the in-flight stream finishes), and the systemd notify / watchdog protocol
against unix datagram sockets this test owns (a path and an abstract '@' name)."""
import json
import os
import secrets
import signal
import socket
import tempfile
import threading
import time

import pytest
import requests

from conftest import Server

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Count from one to fifty in words."}],
        "max_tokens": 48, "temperature": 0}


@pytest.fixture(scope="module")
def srv(model_spec):
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "1024",
                "--kv-memory-mb", "64"])
    yield s
    assert s.stop() == 0


def test_drain_refuses_new_work_finishes_in_flight_and_ends(srv):
    base, h = srv.base_url, srv.http
    assert requests.get(base + "/ready", timeout=10).status_code == 200
    first_chunk = threading.Event()
    result = {}

    def stream():
        # Long enough (no stop at EOS) that generation is still running when the drain arrives; 48 tokens could
        # finish first on a busy machine (in_flight 0 while the stream was still open).
        body = {**CHAT, "stream": True, "max_tokens": 192, "ignore_eos": True}
        with h.post(base + "/v1/chat/completions", json=body, stream=True, timeout=120) as r:
            result["status"] = r.status_code
            lines = []
            for line in r.iter_lines():
                if line:
                    lines.append(line.decode())
                    first_chunk.set()
            result["lines"] = lines

    t = threading.Thread(target=stream)
    t.start()
    assert first_chunk.wait(60)
    d = h.post(base + "/admin/v1/drain", timeout=10)
    assert d.status_code == 200, d.text
    assert d.json()["draining"] is True and d.json()["in_flight"] >= 1, d.json()
    ready = requests.get(base + "/ready", timeout=10)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "draining"
    assert requests.get(base + "/health", timeout=10).status_code == 200
    refused = h.post(base + "/v1/chat/completions", json=CHAT, timeout=30)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert int(refused.headers["Retry-After"]) >= 1
    t.join(120)
    assert result["status"] == 200 and result["lines"][-1] == "data: [DONE]", result
    assert not any('"error"' in l for l in result["lines"])
    deadline = time.time() + 30
    while h.get(base + "/admin/v1/drain", timeout=10).json()["in_flight"] != 0:
        assert time.time() < deadline
        time.sleep(0.05)
    stats = h.get(base + "/api/v1/stats", timeout=10).json()
    assert stats["readiness"] == {"ready": False, "reason": "draining"}
    undrain = h.delete(base + "/admin/v1/drain", timeout=10)
    assert undrain.status_code == 200 and undrain.json()["draining"] is False
    assert requests.get(base + "/ready", timeout=10).status_code == 200
    assert h.post(base + "/v1/chat/completions", json={**CHAT, "max_tokens": 2}, timeout=60).status_code == 200
    # Only an admin drains; the acts are in the audit log.
    guest = h.post(base + "/admin/v1/keys", json={"name": "g", "role": "guest"}).json()["key"]
    r = requests.post(base + "/admin/v1/drain", headers={"Authorization": "Bearer " + guest}, timeout=10)
    assert r.status_code == 403
    deadline = time.time() + 20  # the audit writer commits in the background
    while True:
        recs = h.get(base + "/admin/v1/audit", params={"kind": "config.change", "limit": 100}).json()["data"]
        acts = {(r["detail"]["method"], r["detail"]["route"]) for r in recs}
        if {("POST", "/admin/v1/drain"), ("DELETE", "/admin/v1/drain")} <= acts:
            break
        assert time.time() < deadline, recs
        time.sleep(0.2)


class NotifySocket:
    """A unix datagram socket standing in for systemd's: collects every message with its arrival time."""

    def __init__(self, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "citadel-test-" + secrets.token_hex(6)
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="citadel-notify-")
            self.address = os.path.join(self.dir, "notify.sock")
            self.sock.bind(self.address)
        self.messages = []  # (time, {VAR: VALUE})
        self.cv = threading.Condition()
        threading.Thread(target=self._recv, daemon=True).start()

    def _recv(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self.cv:
                self.messages.append((time.monotonic(), fields))
                self.cv.notify_all()

    def wait_for(self, var, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for t, f in self.messages:
                    if var in f:
                        return t, f
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def times(self, var):
        with self.cv:
            return [t for t, f in self.messages if var in f]


def test_notify_ready_watchdog_stopping(model_spec):
    ns = NotifySocket(abstract=False)
    env = dict(os.environ, NOTIFY_SOCKET=ns.address, WATCHDOG_USEC="400000")
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "1024",
                "--kv-memory-mb", "64"], env=env)
    try:
        got = ns.wait_for("READY")
        assert got and got[1]["READY"] == "1", ns.messages
        # READY=1 only once the model is loaded and the port answers: /ready says 200 now, STATUS said loading before.
        assert requests.get(s.base_url + "/ready", timeout=10).status_code == 200
        loading = [t for t, f in ns.messages if f.get("STATUS", "").startswith("loading")]
        assert loading and loading[0] < got[0]
        # Idle engine: pings every ~200 ms (half of WATCHDOG_USEC) from the engine loop.
        time.sleep(1.5)
        idle = [t for t in ns.times("WATCHDOG") if t > got[0]]
        assert len(idle) >= 5, idle
        gaps = [b - a for a, b in zip(idle, idle[1:])]
        assert max(gaps) < 0.4, gaps  # within the 400 ms timeout: systemd would not fire
        assert min(gaps) > 0.1, gaps  # not a busy loop
        # Busy engine: still pinging between steps.
        t0 = time.monotonic()
        r = s.http.post(s.base_url + "/v1/chat/completions", json=CHAT, timeout=120)
        assert r.status_code == 200
        busy = [t for t in ns.times("WATCHDOG") if t >= t0]
        assert time.monotonic() - t0 < 0.5 or len(busy) >= 1
        s.proc.send_signal(signal.SIGTERM)
        stop = ns.wait_for("STOPPING", timeout=30)
        assert stop and stop[1]["STOPPING"] == "1"
        assert s.proc.wait(60) == 0
    finally:
        s.stop()


def test_notify_abstract_socket_without_watchdog(model_spec):
    ns = NotifySocket(abstract=True)
    # WATCHDOG_PID names another process: the watchdog is not meant for this one.
    env = dict(os.environ, NOTIFY_SOCKET=ns.address, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "512",
                "--kv-memory-mb", "32"], env=env)
    try:
        assert ns.wait_for("READY")
        time.sleep(0.6)
        assert ns.times("WATCHDOG") == []
        s.proc.send_signal(signal.SIGTERM)
        assert ns.wait_for("STOPPING", timeout=30)
        assert s.proc.wait(60) == 0
    finally:
        s.stop()


def test_systemd_unit_verifies():
    import shutil
    import subprocess
    unit = os.path.join(os.path.dirname(__file__), "../../deploy/systemd/citadel.service")
    text = open(unit).read()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "PrivateTmp=yes", "User=citadel"):
        assert line in text, line
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the unit was not verified")
    with tempfile.TemporaryDirectory() as d:
        # verify checks that ExecStart's binary exists: point it at one that does, nothing else changes.
        path = os.path.join(d, "citadel.service")
        open(path, "w").write(text.replace("/usr/local/bin/citadel", "/bin/true"))
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
