"""Identity and access on the real server: every route x every role x every credential state, the official openai
SDK's error classes, quotas that hold under concurrency (429 + Retry-After + x-ratelimit-*), key lifecycle through
the admin API and the CLI, and no secret or prompt in any log."""
import concurrent.futures as cf
import json
import os
import subprocess
import time
import uuid

import openai
import pytest
import requests

from conftest import Server, _binary, make_api_key

ERROR_FIELDS = {"message", "type", "param", "code"}
CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 1, "temperature": 0}


def hdr(cred):
    return {} if cred is None else {"Authorization": cred}


def admin_post(server, path, body):
    r = server.http.post(server.base_url + path, json=body, timeout=30)
    assert r.status_code in (200, 201), r.text
    return r.json()


def make_key(server, role, **extra):
    body = {"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role}
    body.update(extra)
    return admin_post(server, "/admin/v1/keys", body)


@pytest.fixture(scope="module")
def principals(server, idp):
    """Credentials of every role (API keys and OIDC tokens) and of every bad state."""
    good = {"admin": "Bearer " + server.admin_key}
    for role in ("developer", "auditor", "guest"):
        good[role] = "Bearer " + make_key(server, role)["key"]
    for role in ("admin", "developer", "auditor", "guest"):
        good["oidc-" + role] = "Bearer " + idp.token(role)
    good["oidc-es256-guest"] = "Bearer " + idp.token("guest", alg="ES256")

    rotated = make_key(server, "guest")
    admin_post(server, f"/admin/v1/keys/{rotated['id']}/rotate", {"grace_seconds": 0})
    revoked = make_key(server, "developer")
    assert server.http.delete(f"{server.base_url}/admin/v1/keys/{revoked['id']}").status_code == 200
    tenant = "off-" + uuid.uuid4().hex[:6]
    admin_post(server, "/admin/v1/tenants", {"id": tenant})
    in_off_tenant = make_key(server, "developer", tenant=tenant)
    r = server.http.patch(f"{server.base_url}/admin/v1/tenants/{tenant}", json={"disabled": True})
    assert r.status_code == 200, r.text
    bad = {  # name -> (credential, expected status)
        "none": (None, 401),
        "empty-bearer": ("Bearer ", 401),
        "basic-scheme": ("Basic YWRtaW46YWRtaW4=", 401),
        "malformed-key": ("Bearer ck-123-abc", 401),
        "sql-ish": ("Bearer ' OR 1=1 --", 401),
        "unknown-key": ("Bearer " + make_api_key(), 401),
        "wrong-secret": ("Bearer " + server.admin_key[:16] + make_api_key()[16:], 401),
        "expired-key": ("Bearer " + rotated["key"], 401),
        "revoked-key": ("Bearer " + revoked["key"], 401),
        "disabled-tenant-key": ("Bearer " + in_off_tenant["key"], 403),
        "oidc-expired": ("Bearer " + idp.token("admin", exp=int(time.time()) - 3600, iat=int(time.time()) - 7200,
                                               nbf=None), 401),
        "oidc-wrong-audience": ("Bearer " + idp.token("admin", aud="someone-else"), 401),
        "oidc-wrong-issuer": ("Bearer " + idp.token("admin", iss="https://evil.test"), 401),
        "oidc-alg-none": ("Bearer " + idp.token("admin", alg="none"), 401),
        "oidc-hs256-confusion": ("Bearer " + idp.token("admin", alg="HS256"), 401),
        "oidc-unknown-kid": ("Bearer " + idp.token("admin", header={"kid": "nope"}), 401),
        "oidc-tampered": ("Bearer " + idp.token("guest")[:-8] + "AAAAAAAA", 401),
        "oidc-disabled-tenant": ("Bearer " + idp.token("admin", tenant=tenant), 403),
    }
    return good, bad


ALLOWED = {  # permission -> roles that hold it (the role table of the issue)
    "public": {"admin", "developer", "auditor", "guest"},
    "inference": {"admin", "developer", "guest"},
    "models.read": {"admin", "developer", "guest"},
    "stats.read": {"admin", "auditor"},
    "audit.read": {"admin", "auditor"},
    "keys.own": {"admin", "developer"},
    "admin": {"admin"},
}


def request_for(route):
    """A concrete request for a route pattern: ids that do not exist, small valid bodies."""
    path = route["path"].replace("{id}", "000000000000")
    if path == "/v1/models/000000000000":
        path = "/v1/models/smollm2"
    body = None
    if route["method"] in ("POST", "PATCH"):
        body = {"/v1/chat/completions": CHAT,
                "/v1/completions": {"model": "smollm2", "prompt": "Hi", "max_tokens": 1},
                "/api/v1/infer": {"prompt": "Hi", "max_tokens": 1},
                "/v1/embeddings": {"model": "smollm2", "input": "Hi"},
                "/admin/v1/keys": {"name": "matrix", "role": "guest"},
                "/admin/v1/tenants": {"id": "mx-" + uuid.uuid4().hex[:8]}}.get(path, {"limits": {}})
    return route["method"], path, body


def test_every_route_every_role_every_credential(server, principals):
    good, bad = principals
    routes = server.http.get(server.base_url + "/admin/v1/routes").json()["data"]
    assert {(r["method"], r["path"]) for r in routes if r["permission"] == "public"} == {
        ("GET", "/health"), ("GET", "/ready")}
    assert all(r["permission"] in ALLOWED for r in routes), routes
    assert len(routes) >= 18
    checked = 0
    for route in routes:
        method, path, body = request_for(route)
        url = server.base_url + path
        for name, cred in good.items():
            role = name.split("-")[-1]
            r = requests.request(method, url, json=body, headers=hdr(cred), timeout=60)
            if role in ALLOWED[route["permission"]]:
                assert r.status_code not in (401, 403), (name, method, path, r.status_code, r.text)
                assert r.status_code < 500, (name, method, path, r.text)
            else:
                assert r.status_code == 403, (name, method, path, r.status_code, r.text)
                assert r.json()["error"]["code"] == "permission_denied"
            checked += 1
        for name, (cred, want) in bad.items():
            r = requests.request(method, url, json=body, headers=hdr(cred), timeout=60)
            if route["permission"] == "public":
                assert r.status_code == 200, (name, path, r.text)
                continue
            assert r.status_code == want, (name, method, path, r.status_code, r.text)
            err = r.json()["error"]
            assert set(err) == ERROR_FIELDS
            assert err["code"] == ("invalid_api_key" if want == 401 else "tenant_disabled")
            checked += 1
    assert checked > 400


def test_sdk_raises_its_auth_error_classes(server, principals):
    good, bad = principals
    def client(cred):
        return openai.OpenAI(base_url=server.base_url + "/v1", api_key=cred.split(" ", 1)[1], max_retries=0,
                             timeout=60)
    with pytest.raises(openai.AuthenticationError):
        client(bad["unknown-key"][0]).models.list()
    with pytest.raises(openai.AuthenticationError):
        client(bad["revoked-key"][0]).chat.completions.create(**CHAT)
    with pytest.raises(openai.PermissionDeniedError):
        client(good["auditor"]).chat.completions.create(**CHAT)
    with pytest.raises(openai.PermissionDeniedError):
        client(bad["disabled-tenant-key"][0]).models.list()
    r = client(good["oidc-guest"]).chat.completions.create(**CHAT)
    assert r.usage.completion_tokens == 1
    assert client(good["guest"]).models.list().data[0].id == "smollm2"


def wait_for_fresh_minute(margin=4):
    """Rate windows are UTC minutes: start a window-sensitive test away from the boundary."""
    s = time.time() % 60
    if s > 60 - margin:
        time.sleep(60 - s + 0.2)


def test_requests_per_minute_429_with_headers(server):
    key = make_key(server, "guest", limits={"requests_per_minute": 2})["key"]
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=60)
    wait_for_fresh_minute()
    raw = c.chat.completions.with_raw_response.create(**CHAT)
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "1"
    assert h["x-ratelimit-reset-requests"].endswith("s")
    assert int(h["x-ratelimit-limit-tokens"]) > 0 and "x-ratelimit-remaining-tokens" in h
    c.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(**CHAT)
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    assert e.value.code == "rate_limit_exceeded"
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_token_budget_holds_under_concurrency(server):
    budget = 400
    key = make_key(server, "guest", limits={"daily_tokens": budget, "requests_per_minute": 1000,
                                           "tokens_per_minute": 100000, "concurrent_requests": 100})["key"]
    body = dict(CHAT, max_tokens=16)

    def one(_):
        r = requests.post(server.base_url + "/v1/chat/completions", json=body,
                          headers={"Authorization": "Bearer " + key}, timeout=120)
        return r.status_code, r.json()
    with cf.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(one, range(24)))
    ok = [j for s, j in results if s == 200]
    refused = [j for s, j in results if s == 429]
    assert ok and refused, [s for s, _ in results]
    assert len(ok) + len(refused) == len(results)
    assert all(j["error"]["code"] == "insufficient_quota" for j in refused)
    assert sum(j["usage"]["total_tokens"] for j in ok) <= budget


def test_concurrency_limit_and_disconnect_settles(server):
    key = make_key(server, "guest", limits={"concurrent_requests": 1, "requests_per_minute": 1000})["key"]
    h = {"Authorization": "Bearer " + key}
    body = {"model": "smollm2", "prompt": "Write a long story about the sea.", "max_tokens": 1500,
            "temperature": 0.8, "seed": 3, "stream": True, "ignore_eos": True}
    with requests.post(server.base_url + "/v1/completions", json=body, headers=h, stream=True, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # kept: a dropped generator closes the connection
        next(lines)
        second = requests.post(server.base_url + "/v1/completions", json=dict(body, stream=False, max_tokens=1),
                               headers=h, timeout=60)
        assert second.status_code == 429 and second.headers["retry-after"] == "1", second.text
    # The stream's client went away: its lease is settled, so the slot frees without waiting for the lease TTL.
    deadline = time.time() + 20
    while time.time() < deadline:
        r = requests.post(server.base_url + "/v1/completions", json=dict(body, stream=False, max_tokens=1),
                          headers=h, timeout=60)
        if r.status_code == 200:
            break
        time.sleep(0.05)
    assert r.status_code == 200, r.text


def test_max_tokens_per_request(server):
    key = make_key(server, "guest", limits={"max_tokens_per_request": 4})["key"]
    h = {"Authorization": "Bearer " + key}
    r = requests.post(server.base_url + "/v1/chat/completions", json=dict(CHAT, max_tokens=5), headers=h, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
    body = {k: v for k, v in CHAT.items() if k != "max_tokens"}
    body["messages"] = [{"role": "user", "content": "Count from one to one hundred."}]
    r = requests.post(server.base_url + "/v1/chat/completions", json=body, headers=h, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4, r.text


def test_key_lifecycle_and_developer_scope(server):
    dev = make_key(server, "developer")
    dh = {"Authorization": "Bearer " + dev["key"]}
    base = server.base_url
    listed = server.http.get(base + "/admin/v1/keys").json()["data"]
    assert any(k["id"] == dev["id"] for k in listed)
    blob = json.dumps(listed)
    assert dev["key"] not in blob and server.admin_key not in blob and "secret" not in blob
    # A developer makes guest keys in its own tenant, sees only its own, may not escalate.
    mine = requests.post(base + "/admin/v1/keys", json={"name": "mine", "role": "guest"}, headers=dh).json()
    assert requests.post(base + "/admin/v1/keys", json={"name": "x", "role": "admin"}, headers=dh).status_code == 403
    seen = {k["id"] for k in requests.get(base + "/admin/v1/keys", headers=dh).json()["data"]}
    assert seen == {mine["id"]}
    assert requests.get(base + f"/admin/v1/keys/{dev['id']}", headers=dh).status_code == 404
    assert requests.delete(base + f"/admin/v1/keys/{dev['id']}", headers=dh).status_code == 404
    assert requests.get(base + "/admin/v1/tenants", headers=dh).status_code == 403
    # Rotation with grace: both keys work, then the old one stops when revoked.
    new = requests.post(base + f"/admin/v1/keys/{mine['id']}/rotate", json={"grace_seconds": 600}, headers=dh).json()
    assert new["rotated_from"] == mine["id"] and new["key"] != mine["key"]
    for k in (mine["key"], new["key"]):
        assert requests.get(base + "/v1/models", headers={"Authorization": "Bearer " + k}).status_code == 200
    assert requests.delete(base + f"/admin/v1/keys/{mine['id']}", headers=dh).status_code == 200
    assert requests.get(base + "/v1/models", headers={"Authorization": "Bearer " + mine["key"]}).status_code == 401
    assert requests.get(base + "/v1/models", headers={"Authorization": "Bearer " + new["key"]}).status_code == 200


def test_allowed_models(server):
    key = make_key(server, "guest", allowed_models=["other-model"])["key"]
    h = {"Authorization": "Bearer " + key}
    r = requests.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=h, timeout=60)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert requests.get(server.base_url + "/v1/models", headers=h).json()["data"] == []


def test_cli_keys_against_a_running_server(server):
    cli = [_binary(), "keys"]
    out = subprocess.run(cli + ["create", "--role", "guest", "--name", "from-cli", "--data-dir", server.data_dir],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert out.stdout == key + "\n" and key.startswith("ck-")
    h = {"Authorization": "Bearer " + key}
    assert requests.get(server.base_url + "/v1/models", headers=h).status_code == 200
    listed = subprocess.run(cli + ["list", "--json", "--data-dir", server.data_dir], capture_output=True, text=True)
    assert listed.returncode == 0 and key not in listed.stdout and key.split("-")[1] in listed.stdout
    rev = subprocess.run(cli + ["revoke", key.split("-")[1], "--data-dir", server.data_dir], capture_output=True,
                         text=True)
    assert rev.returncode == 0, rev.stderr
    deadline = time.time() + 10  # the server's key cache lives 2 s
    while time.time() < deadline and requests.get(server.base_url + "/v1/models", headers=h).status_code == 200:
        time.sleep(0.1)
    assert requests.get(server.base_url + "/v1/models", headers=h).status_code == 401
    bad = subprocess.run(cli + ["create", "--role", "root", "--name", "x", "--data-dir", server.data_dir],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "role" in bad.stderr


def test_hostile_input_never_5xx(server):
    base = server.base_url
    for cred in ["Bearer " + "A" * 20000, "Bearer \x7f\x01", "Bearer ck-" + "g" * 12 + "-" + "x" * 43,
                 "Bearer a.b.c", "Bearer ..", "Bearer e30.e30.", "bearer  " + server.admin_key + "x"]:
        try:
            r = requests.get(base + "/v1/models", headers={"Authorization": cred}, timeout=30)
        except (ValueError, requests.exceptions.InvalidHeader):
            continue  # the client library refused to send it
        assert r.status_code in (400, 401, 431), (cred[:40], r.status_code, r.text)  # 400: bad header bytes
    r = requests.get(base + "/v1/models", headers={"X-Big": "x" * (1 << 20)}, timeout=30)
    assert r.status_code == 431
    for name in ["'; DROP TABLE api_keys; --", "Robert'); DELETE FROM tenants;--", "名字 ✓"]:
        made = server.http.post(base + "/admin/v1/keys", json={"name": name, "role": "guest"})
        assert made.status_code == 201 and made.json()["name"] == name
    for tid in ["a'; DROP TABLE tenants; --", "../etc", "", "A" * 100, None, 7]:
        r = server.http.post(base + "/admin/v1/tenants", json={"id": tid})
        assert r.status_code == 400, (tid, r.text)
    for body in ["", "[]", "{", '{"name": 5, "role": "guest"}', '{"name": "x", "role": "root"}',
                 '{"name": "x", "role": "guest", "limits": {"bogus": 1}}', '{"name": "x", "role": "guest", "tenant": "nope"}']:
        r = server.http.post(base + "/admin/v1/keys", data=body, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500 and set(r.json()["error"]) == ERROR_FIELDS, (body, r.text)
    assert server.http.get(base + "/admin/v1/keys").status_code == 200  # the tables survived


def test_bootstrap_key_printed_once_and_no_secret_in_logs(model_spec, tmp_path, idp):
    from jwt_util import AUDIENCE, ISSUER
    args = ["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "512", "--kv-memory-mb", "64",
            "--log-level", "debug", "--oidc-issuer", ISSUER, "--oidc-audience", AUDIENCE,
            "--oidc-jwks", str(idp.jwks_path)]
    env = {k: v for k, v in os.environ.items() if k != "CITADEL_BOOTSTRAP_ADMIN_KEY"}
    s = Server(args, data_dir=str(tmp_path), admin_key="", env=env)
    secrets_seen = []
    try:
        line = [l for l in s.stdout_lines if "admin API key" in l]
        assert len(line) == 1, s.stdout_lines
        admin = line[0].rsplit(" ", 1)[1].strip()
        h = {"Authorization": "Bearer " + admin}
        assert requests.get(s.base_url + "/v1/models", headers=h).status_code == 200
        made = requests.post(s.base_url + "/admin/v1/keys", json={"name": "k", "role": "developer"}, headers=h).json()
        token = idp.token("guest")
        prompt = "The secret launch code is swordfish-4471."
        for cred in (made["key"], token):
            r = requests.post(s.base_url + "/v1/chat/completions", headers={"Authorization": "Bearer " + cred},
                              json=dict(CHAT, messages=[{"role": "user", "content": prompt}]), timeout=60)
            assert r.status_code == 200, r.text
        requests.get(s.base_url + "/v1/models", headers={"Authorization": "Bearer " + made["key"] + "x"})
        requests.get(s.base_url + "/v1/models", headers={"Authorization": "Bearer " + token[:-3] + "abc"})
        secrets_seen = [admin, made["key"], made["key"].split("-", 2)[2], token, token.split(".")[2], "swordfish"]
    finally:
        assert s.stop() == 0
    logs = "".join(s.stderr) + "".join(s.stdout_lines)
    for secret in secrets_seen[1:]:
        assert secret not in logs, secret[:12]
    assert logs.count(secrets_seen[0]) == 1  # the one-time bootstrap line on stdout
    # A restart on the same state does not mint another admin key.
    s2 = Server(args, data_dir=str(tmp_path), admin_key="", env=env)
    try:
        assert not [l for l in s2.stdout_lines if "admin API key" in l]
    finally:
        assert s2.stop() == 0


def test_role_defaults_are_configurable(server):
    key = make_key(server, "guest")["key"]  # no limits of its own: the guest role's apply
    h = {"Authorization": "Bearer " + key}
    url = server.base_url + "/admin/v1/roles/guest"
    before = server.http.get(url).json()
    assert before["effective_limits"]["requests_per_minute"] == 60
    wait_for_fresh_minute()
    try:
        r = server.http.patch(url, json={"limits": {"requests_per_minute": 1}})
        assert r.status_code == 200 and r.json()["effective_limits"]["requests_per_minute"] == 1, r.text
        codes = [requests.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=h, timeout=60).status_code
                 for _ in range(2)]
        assert codes == [200, 429], codes
    finally:
        r = server.http.patch(url, json={"limits": {"requests_per_minute": None}})
        assert r.json()["effective_limits"]["requests_per_minute"] == 60
    assert server.http.get(server.base_url + "/admin/v1/roles/root").status_code == 404
    assert requests.get(url, headers=h).status_code == 403


def test_oidc_keys_from_a_jwks_url_rotate_by_kid(tmp_path):
    """The JWKS served over HTTP (as Keycloak's certs endpoint): a token signed by a key added later verifies once
    the server refetches on the unknown kid (at most once per 10 s)."""
    import http.server
    import threading
    from jwt_util import AUDIENCE, ISSUER, TestIdp
    first, second = TestIdp(), TestIdp()
    served = {"body": json.dumps(first.jwks()).encode()}

    class Certs(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = 200 if self.path == "/realms/bank/protocol/openid-connect/certs" else 404
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(served["body"]) if code == 200 else 0))
            self.end_headers()
            if code == 200:
                self.wfile.write(served["body"])

        def log_message(self, *a):
            pass
    idp_http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    threading.Thread(target=idp_http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{idp_http.server_address[1]}/realms/bank/protocol/openid-connect/certs"
    s = Server(["--model", "debug:bytes", "--served-model-name", "dbg", "--oidc-issuer", ISSUER,
                "--oidc-audience", AUDIENCE, "--oidc-jwks", url, "--oidc-role-claim", "realm_access.roles"],
               data_dir=str(tmp_path))
    try:
        def models(token):
            return requests.get(s.base_url + "/v1/models", headers={"Authorization": "Bearer " + token}, timeout=30)
        ok = first.token("guest", citadel_role=None, realm_access={"roles": ["offline_access", "developer"]})
        assert models(ok).status_code == 200
        # Rotation at the IdP: a new key (kid rsa-2) joins the set.
        keys = second.jwks()["keys"]
        keys[0]["kid"] = "rsa-2"
        served["body"] = json.dumps({"keys": first.jwks()["keys"] + keys[:1]}).encode()
        rotated = second.token("guest", citadel_role=None, realm_access={"roles": ["guest"]}, header={"kid": "rsa-2"})
        deadline = time.time() + 25
        while time.time() < deadline and models(rotated).status_code != 200:
            time.sleep(0.5)
        assert models(rotated).status_code == 200
        assert models(ok).status_code == 200
        # A token naming no recognised role is refused (no default role configured).
        assert models(first.token("guest", citadel_role=None)).status_code == 401
    finally:
        assert s.stop() == 0
        idp_http.shutdown()
