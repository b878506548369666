"""Two Citadel replicas on one PostgreSQL state database: keys made on one work on the other, revocation reaches
both, and quota limits hold across them (the limit is shared, not per replica)."""
import concurrent.futures as cf
import time

import pytest
import requests

import subprocess

from conftest import Server, _binary

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}


@pytest.fixture(scope="module")
def replicas(model_spec, pg_url, tmp_path_factory):
    # Each replica has its own data directory (and audit head file); they share the database and the audit key.
    key = str(tmp_path_factory.mktemp("audit-key") / "audit.key")
    args = ["--model", model_spec, "--served-model-name", "smollm2", "--max-context", "512", "--kv-memory-mb", "64",
            "--state-db", pg_url, "--audit-key", key]
    a = Server(args)
    b = Server(args, admin_key=a.admin_key)  # the bootstrap key is already in the shared store
    yield a, b
    # One chain written by both replicas, verified against either one's head file.
    for s in (a, b):
        v = subprocess.run([_binary(), "audit", "verify", "--data-dir", s.data_dir, "--state-db", pg_url,
                            "--key", key], capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
    assert a.stop() == 0 and b.stop() == 0


def test_keys_are_shared_and_limits_hold_across_replicas(replicas):
    a, b = replicas
    made = a.http.post(a.base_url + "/admin/v1/keys", json={
        "name": "shared", "role": "guest", "limits": {"requests_per_minute": 1000, "daily_tokens": 10000,
                                                      "concurrent_requests": 100}}).json()
    h = {"Authorization": "Bearer " + made["key"]}
    assert requests.get(b.base_url + "/v1/models", headers=h).status_code == 200
    # A daily token budget spent from both replicas at once: the sum never passes it.
    limited = a.http.post(a.base_url + "/admin/v1/keys", json={
        "name": "budget", "role": "guest", "limits": {"daily_tokens": 300, "requests_per_minute": 1000,
                                                      "concurrent_requests": 100}}).json()
    hl = {"Authorization": "Bearer " + limited["key"]}

    def one(i):
        srv = (a, b)[i % 2]
        r = requests.post(srv.base_url + "/v1/chat/completions", json=dict(CHAT, max_tokens=8), headers=hl,
                          timeout=120)
        return r.status_code, r.json()
    with cf.ThreadPoolExecutor(12) as ex:
        results = list(ex.map(one, range(24)))
    ok = [j for s, j in results if s == 200]
    assert ok and any(s == 429 for s, _ in results), [s for s, _ in results]
    assert all(s in (200, 429) for s, _ in results)
    assert sum(j["usage"]["total_tokens"] for j in ok) <= 300
    # Requests per minute: 3 in total across both replicas.
    s = time.time() % 60
    if s > 55:
        time.sleep(60 - s + 0.2)
    rpm = a.http.post(a.base_url + "/admin/v1/keys", json={"name": "rpm", "role": "guest",
                                                          "limits": {"requests_per_minute": 3}}).json()
    hr = {"Authorization": "Bearer " + rpm["key"]}
    codes = [requests.post((a, b)[i % 2].base_url + "/v1/chat/completions", json=CHAT, headers=hr,
                           timeout=60).status_code for i in range(6)]
    assert codes == [200, 200, 200, 429, 429, 429], codes
    # Revoked on one replica: refused by the other within its key cache lifetime (2 s).
    assert a.http.delete(a.base_url + f"/admin/v1/keys/{made['id']}").status_code == 200
    deadline = time.time() + 10
    while time.time() < deadline and requests.get(b.base_url + "/v1/models", headers=h).status_code == 200:
        time.sleep(0.1)
    assert requests.get(b.base_url + "/v1/models", headers=h).status_code == 401
