"""Fixtures for the system tests: start the real `citadel serve` on a free loopback port and stop it.

Environment:
  CITADEL_BIN         the citadel binary (default: build/citadel)
  CITADEL_TEST_MODEL  model spec (default: the pulled SmolLM2 GGUF; `debug:bytes` runs the suite on the fake model)
The suite skips cleanly when the model file is absent.
"""
import base64
import os
import pathlib
import queue
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _model_spec():
    spec = os.environ.get("CITADEL_TEST_MODEL")
    if spec:
        return spec
    candidates = [
        pathlib.Path(os.environ.get("CITADEL_MODELS", pathlib.Path.home() / ".cache/citadel/models")) / MODEL_FILE,
        pathlib.Path("/tmp/models") / MODEL_FILE,
    ]
    for c in candidates:
        if c.is_file():
            return str(c)
    pytest.skip(f"model file {MODEL_FILE} not found (run `citadel pull smollm2-135m`)", allow_module_level=True)


def _binary():
    b = pathlib.Path(os.environ.get("CITADEL_BIN", ROOT / "build" / "citadel"))
    if not b.is_file():
        pytest.skip(f"{b} not built", allow_module_level=True)
    return str(b)


def make_api_key():
    """A well-formed Citadel API key (ck-<12 hex>-<43 base64url>) made here, for bootstrapping a test server."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"ck-{secrets.token_hex(6)}-{secret}"


class Server:
    """`citadel serve` on a free loopback port with its own state directory and a known bootstrap admin key
    (self.admin_key; self.http is a requests.Session that sends it). data_dir: share state between servers.
    admin_key="": no bootstrap key is given (the server mints and prints one); env: the whole environment."""

    def __init__(self, args, ready_timeout=180, data_dir=None, env=None, admin_key=None):
        import requests
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="citadel-test-")
        self.admin_key = make_api_key() if admin_key is None else admin_key
        self.args = [_binary(), "serve", "--port", "0", "--host", "127.0.0.1"] + args
        if "--data-dir" not in args:  # never the user's own ~/.local/share/citadel
            self.args += ["--data-dir", self.data_dir]
        full_env = dict(os.environ if env is None else env)
        if self.admin_key:
            full_env["CITADEL_BOOTSTRAP_ADMIN_KEY"] = self.admin_key
        self.http = requests.Session()
        if self.admin_key:
            self.http.headers["Authorization"] = "Bearer " + self.admin_key
        self.stdout_lines = []
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=full_env)
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()
        self.port = None
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "listening on http://" in line or "listening on https://" in line:
                self.port = int(line.rsplit(":", 1)[1])
                self.scheme = "https" if "https://" in line else "http"
            if line.strip() == "citadel serve: ready":
                break
        else:
            self.stop()
            raise RuntimeError("server not ready in time:\n" + "".join(self.stderr[-20:]))
        if self.proc.poll() is not None or self.port is None:
            time.sleep(0.2)
            err = "".join(self.stderr[-20:])
            raise RuntimeError(f"server failed to start ({self.proc.returncode}):\n{err}")
        self.base_url = f"{self.scheme}://127.0.0.1:{self.port}"

    def _pump(self, stream, is_stdout):
        for line in stream:
            if is_stdout:
                self.stdout_lines.append(line)
                self.lines.put(line)
            else:
                self.stderr.append(line)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.proc.returncode


@pytest.fixture(scope="session")
def model_spec():
    return _model_spec()


@pytest.fixture(scope="session")
def idp(tmp_path_factory):
    """The test identity provider whose JWKS file the shared server trusts (tests/system/jwt_util.py)."""
    import json
    from jwt_util import TestIdp
    p = TestIdp()
    p.jwks_path = tmp_path_factory.mktemp("idp") / "jwks.json"
    p.jwks_path.write_text(json.dumps(p.jwks()))
    return p


@pytest.fixture(scope="session")
def server(model_spec, idp):
    from jwt_util import AUDIENCE, ISSUER
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-queue", "64",
                "--max-context", "2048", "--kv-memory-mb", "256",
                "--oidc-issuer", ISSUER, "--oidc-audience", AUDIENCE, "--oidc-jwks", str(idp.jwks_path)])
    yield s
    code = s.stop()
    assert code == 0, "server did not shut down cleanly:\n" + "".join(s.stderr[-20:])


@pytest.fixture(scope="session")
def client(server):
    import openai
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.admin_key, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def model_name():
    return "smollm2"


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory):
    """A real PostgreSQL server (Debian's binaries) on loopback for the session, with one empty database; skips with
    the reason when it cannot start here. Run as the `postgres` user when the tests run as root."""
    import glob
    import socket
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = os.path.dirname(bins[-1])
    # Not under pytest's 0700 root-owned temp tree: the postgres user must reach the data directory.
    root = pathlib.Path(tempfile.mkdtemp(prefix="citadel-pg-"))
    data = root / "data"
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    def run(*cmd):
        return subprocess.run(as_user + list(cmd), capture_output=True, text=True, timeout=120)
    r = run(f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "citadel", "--no-sync")
    if r.returncode != 0:
        pytest.skip("initdb failed: " + r.stderr[-300:])
    r = run(f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(root / "log"), "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    if r.returncode != 0:
        pytest.skip("PostgreSQL did not start: " + r.stderr[-300:])
    try:
        subprocess.run(as_user + [f"{bindir}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "citadel", "-d",
                                  "postgres", "-c", "CREATE DATABASE citadel_test"], check=True, capture_output=True)
        yield f"postgresql://citadel@127.0.0.1:{port}/citadel_test"
    finally:
        run(f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)
