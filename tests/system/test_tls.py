"""`citadel serve` over HTTPS: TLS 1.3 only, checked with Python's ssl module, the `openssl s_client` CLI and the
official openai SDK (httpx verifying against the test CA).

The certificates are made here with the `openssl` CLI. The whole module skips cleanly when the binary does not
offer `--tls-cert` (older builds) or the model is absent (see conftest.py).
"""
import re
import shutil
import socket
import ssl
import subprocess

import pytest

from conftest import Server, _binary

CA_CNF = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = Citadel Test
CN = Citadel Test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

SERVER_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
O = Citadel Test
CN = localhost
"""

SERVER_EXT = """\
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""

LISTENING = re.compile(r"listening on https?://\S+:(\d+)")


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)} failed:\n{r.stderr}"


@pytest.fixture(scope="module")
def tls_binary():
    binary = _binary()
    r = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=60)
    if "--tls-cert" not in r.stdout + r.stderr:
        pytest.skip("this citadel build has no `serve --tls-cert` flag yet")
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    return binary


@pytest.fixture(scope="module")
def certs(tls_binary, tmp_path_factory):
    """A CA (ca.pem) and a server certificate for 127.0.0.1/localhost signed by it (server.pem, server.key)."""
    d = tmp_path_factory.mktemp("tls")
    (d / "ca.cnf").write_text(CA_CNF)
    (d / "server.cnf").write_text(SERVER_CNF)
    (d / "server.ext").write_text(SERVER_EXT)
    ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    _openssl("genpkey", *ec, "-out", "ca.key", cwd=d)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-config", "ca.cnf",
             "-out", "ca.pem", cwd=d)
    _openssl("genpkey", *ec, "-out", "server.key", cwd=d)
    _openssl("req", "-new", "-key", "server.key", "-config", "server.cnf", "-out", "server.csr", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2",
             "-days", "2", "-sha256", "-extfile", "server.ext", "-out", "server.pem", cwd=d)
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


class TlsServer(Server):
    """conftest's Server, but ready on the "listening on https://HOST:PORT" line that a TLS server prints."""

    def __init__(self, args, ready_timeout=180):
        import queue
        import threading
        import time
        self.args = [_binary(), "serve", "--port", "0", "--host", "127.0.0.1"] + args
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()
        self.port = None
        self.scheme = None
        deadline = time.time() + ready_timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(1))
                self.scheme = "https" if "https://" in line else "http"
            if line.strip() == "citadel serve: ready":
                break
        if self.proc.poll() is not None or self.port is None:
            self.stop()
            time.sleep(0.2)
            raise RuntimeError(f"TLS server failed to start ({self.proc.returncode}):\n" + "".join(self.stderr[-20:]))
        self.base_url = f"https://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def tls_server(certs, model_spec):
    s = TlsServer(["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "2048",
                   "--kv-memory-mb", "256", "--tls-cert", certs["cert"], "--tls-key", certs["key"]])
    yield s
    code = s.stop()
    assert code == 0, "server did not shut down cleanly:\n" + "".join(s.stderr[-20:])


def _client_context(ca, max_version):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = max_version
    return ctx


def _https_get(port, ctx, path="/health"):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            version = s.version()
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    return version, data.decode(errors="replace")


def test_server_announces_https(tls_server):
    assert tls_server.scheme == "https", "the serve command should print 'listening on https://...' under TLS"


def test_python_ssl_tls12_is_refused(tls_server, certs):
    with pytest.raises(ssl.SSLError):
        _https_get(tls_server.port, _client_context(certs["ca"], ssl.TLSVersion.TLSv1_2))


def test_python_ssl_tls13_works(tls_server, certs):
    version, resp = _https_get(tls_server.port, _client_context(certs["ca"], ssl.TLSVersion.TLSv1_3))
    assert version == "TLSv1.3"
    assert resp.startswith("HTTP/1.1 200"), resp


def test_plain_http_to_the_tls_port_gets_no_http_response(tls_server):
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=30) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/" not in data


def _s_client(port, ca, version_flag):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version_flag, "-CAfile", ca,
                           "-verify_return_error"],
                          input="", capture_output=True, text=True, timeout=60)


def test_openssl_s_client_tls12_fails_tls13_succeeds(tls_server, certs):
    old = _s_client(tls_server.port, certs["ca"], "-tls1_2")
    assert old.returncode != 0, old.stdout + old.stderr
    new = _s_client(tls_server.port, certs["ca"], "-tls1_3")
    assert new.returncode == 0, new.stdout + new.stderr
    assert "TLSv1.3" in new.stdout
    assert "Verify return code: 0 (ok)" in new.stdout


def test_openai_sdk_lists_models_over_https(tls_server, certs):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    with httpx.Client(verify=certs["ca"], timeout=60) as http_client:
        client = openai.OpenAI(base_url=f"https://127.0.0.1:{tls_server.port}/v1", api_key="unused",
                               max_retries=0, http_client=http_client)
        ids = [m.id for m in client.models.list().data]
    assert ids == ["smollm2"]
