"""`citadel serve` over HTTPS: TLS 1.3 only, checked with Python's ssl module, the `openssl s_client` CLI and the
official openai SDK (httpx verifying against the test CA).

The certificates are made here with the `openssl` CLI. The whole module skips cleanly when the binary does not
offer `--tls-cert` (older builds) or the model is absent (see conftest.py).
"""
import shutil
import signal
import socket
import ssl
import subprocess
import time

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
    _make_server_cert(d, serial=2)
    return {"dir": d, "ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


def _make_server_cert(d, serial):
    """(Re)writes server.pem / server.key in d: a certificate for 127.0.0.1/localhost signed by the test CA."""
    ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    _openssl("genpkey", *ec, "-out", "server.key.new", cwd=d)
    _openssl("req", "-new", "-key", "server.key.new", "-config", "server.cnf", "-out", "server.csr", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", str(serial),
             "-days", "2", "-sha256", "-extfile", "server.ext", "-out", "server.pem.new", cwd=d)
    # Renamed into place so that a reload never sees a half-written pair.
    (d / "server.key.new").rename(d / "server.key")
    (d / "server.pem.new").rename(d / "server.pem")


@pytest.fixture(scope="module")
def tls_server(certs, model_spec):
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "2048",
                "--kv-memory-mb", "256", "--tls-cert", certs["cert"], "--tls-key", certs["key"]])
    yield s
    code = s.stop()
    assert code == 0, "server did not shut down cleanly:\n" + "".join(s.stderr[-20:])


def _client_context(ca, max_version):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = max_version
    return ctx


def _https_get(port, ctx, path="/health", info=None):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            version = s.version()
            if info is not None:
                info.update(s.getpeercert())
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    return version, data.decode(errors="replace")


def test_server_announces_https(tls_server):
    assert tls_server.base_url.startswith("https://"), "serve should print 'listening on https://...' under TLS"


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
    # The SDK's own HTTP client class (httpx, or httpx2 in newer SDKs) with the test CA as the trust store.
    client_cls = getattr(openai, "DefaultHttpxClient", None) or getattr(openai, "DefaultHttpx2Client")
    with client_cls(verify=ssl.create_default_context(cafile=certs["ca"]), timeout=60) as http_client:
        client = openai.OpenAI(base_url=f"https://127.0.0.1:{tls_server.port}/v1",
                               api_key=getattr(tls_server, "admin_key", None) or "unused", max_retries=0,
                               http_client=http_client)
        ids = [m.id for m in client.models.list().data]
    assert ids == ["smollm2"]


def test_sighup_reloads_the_certificate_for_new_connections(tls_server, certs):
    """Last in the module: it replaces the server's certificate (same CA, new serial) and sends SIGHUP."""
    ctx = _client_context(certs["ca"], ssl.TLSVersion.TLSv1_3)
    info = {}
    _https_get(tls_server.port, ctx, info=info)
    assert int(info["serialNumber"], 16) == 2
    _make_server_cert(certs["dir"], serial=3)
    tls_server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 30
    while time.time() < deadline:  # the signal is handled asynchronously
        info = {}
        version, resp = _https_get(tls_server.port, ctx, info=info)
        if int(info["serialNumber"], 16) == 3:
            break
        time.sleep(0.1)
    assert int(info["serialNumber"], 16) == 3
    assert resp.startswith("HTTP/1.1 200"), resp
    assert tls_server.proc.poll() is None
