"""The audit log on the real server: what gets recorded (and what never does), GET /admin/v1/audit for auditors,
`citadel audit verify` catching an edited database, export with its verification status, durability under kill -9,
and an encrypted model served from memory."""
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
import requests

from conftest import Server, _binary

CHAT = {"model": "dbg", "messages": [{"role": "user", "content": "my card 6222020200000000003 swordfish"}],
        "max_tokens": 2, "temperature": 0}


def cli(*args):
    return subprocess.run([_binary(), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture()
def dbg_server(tmp_path):
    s = Server(["--model", "debug:bytes", "--served-model-name", "dbg"], data_dir=str(tmp_path))
    yield s
    s.stop()


def records(server, key, **params):
    r = requests.get(server.base_url + "/admin/v1/audit", params=dict(limit=1000, order="oldest", **params),
                     headers={"Authorization": "Bearer " + key}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_what_is_recorded_and_who_may_read_it(dbg_server):
    s = dbg_server
    base = s.base_url
    auditor = s.http.post(base + "/admin/v1/keys", json={"name": "aud", "role": "auditor"}).json()["key"]
    guest = s.http.post(base + "/admin/v1/keys", json={"name": "g", "role": "guest",
                                                      "limits": {"requests_per_minute": 1000,
                                                                 "max_tokens_per_request": 2}}).json()
    g = {"Authorization": "Bearer " + guest["key"]}
    assert requests.post(base + "/v1/chat/completions", json=CHAT, headers=g).status_code == 200
    assert requests.post(base + "/v1/chat/completions", json=dict(CHAT, max_tokens=9), headers=g).status_code == 400
    assert requests.get(base + "/v1/models", headers={"Authorization": "Bearer ck-nope"}).status_code == 401
    assert requests.get(base + "/api/v1/stats", headers=g).status_code == 403
    assert requests.get(base + "/admin/v1/audit", headers=g).status_code == 403
    time.sleep(0.3)  # > the 100 ms group-commit bound
    recs = records(s, auditor)
    kinds = [r["kind"] for r in recs]
    for k in ("server.start", "model.load", "key.create", "inference", "auth.failure", "permission.denied"):
        assert k in kinds, kinds
    inf = [r for r in recs if r["kind"] == "inference" and r["status"] == 200][0]
    assert inf["principal"] == "key:" + guest["id"] and inf["tenant"] == "default" and inf["model"] == "dbg"
    assert inf["detail"]["completion_tokens"] == 2 and inf["detail"]["prompt_tokens"] > 0
    assert inf["request_id"] and inf["client"].startswith("127.0.0.1:")
    created = [r for r in recs if r["kind"] == "key.create" and r["detail"].get("key_id") == guest["id"]]
    assert created and created[0]["principal"] == "key:" + s.admin_key.split("-")[1]
    assert [r for r in recs if r["kind"] == "auth.failure"][0]["detail"]["error_code"] == "invalid_api_key"
    # Filters and paging.
    only = records(s, auditor, kind="inference", principal="key:" + guest["id"])
    assert only and all(r["kind"] == "inference" for r in only)
    page = requests.get(base + "/admin/v1/audit", params={"limit": 2}, headers={"Authorization": "Bearer " + auditor})
    assert len(page.json()["data"]) == 2 and page.json()["next_cursor"]
    # Never a prompt, a raw key or a card number in the log.
    blob = json.dumps(recs)
    for secret in ("swordfish", "6222020200000000003", guest["key"], s.admin_key, auditor):
        assert secret not in blob
    s.stop()
    out = cli("audit", "verify", "--data-dir", s.data_dir)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr


def test_verify_names_the_first_bad_record_and_export_says_so(dbg_server):
    s = dbg_server
    for _ in range(5):
        s.http.post(s.base_url + "/v1/chat/completions", json=CHAT)
    s.stop()
    assert cli("audit", "verify", "--data-dir", s.data_dir).returncode == 0
    db = sqlite3.connect(os.path.join(s.data_dir, "state.db"))
    seq = db.execute("SELECT seq FROM audit_records WHERE kind = 'inference' ORDER BY seq LIMIT 1").fetchone()[0]
    db.execute("UPDATE audit_records SET status = 500 WHERE seq = ?", (seq,))
    db.commit()
    db.close()
    out = cli("audit", "verify", "--data-dir", s.data_dir)
    assert out.returncode == 1 and f"record {seq}" in out.stdout, out.stdout + out.stderr
    exp = cli("audit", "export", "--data-dir", s.data_dir, "--format", "jsonl")
    assert exp.returncode == 0, exp.stderr
    lines = [json.loads(l) for l in exp.stdout.splitlines()]
    assert lines[-1]["verification"] == "broken" and lines[-1]["first_bad_seq"] == seq
    assert all("hash" in l for l in lines[:-1])


def test_records_survive_kill_9_under_load(tmp_path):
    """Every request completed more than the 100 ms commit bound before a SIGKILL has its record."""
    s = Server(["--model", "debug:bytes", "--served-model-name", "dbg"], data_dir=str(tmp_path))
    done = []  # (request id, completion time)
    stop = threading.Event()

    def load():
        sess = requests.Session()
        sess.headers["Authorization"] = "Bearer " + s.admin_key
        while not stop.is_set():
            try:
                r = sess.post(s.base_url + "/v1/completions",
                              json={"model": "dbg", "prompt": "x", "max_tokens": 1}, timeout=5)
            except requests.RequestException:
                return
            if r.status_code == 200:
                done.append((r.headers["x-request-id"], time.time()))
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    s.proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    stop.set()
    for t in threads:
        t.join()
    s.proc.wait()
    must = {rid for rid, t in done if t < killed_at - 0.25}
    assert len(must) > 50, len(must)
    db = sqlite3.connect(os.path.join(str(tmp_path), "state.db"))
    have = {r[0] for r in db.execute("SELECT request_id FROM audit_records WHERE kind = 'inference'")}
    db.close()
    assert must <= have, len(must - have)
    out = cli("audit", "verify", "--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_encrypted_model_served_from_memory(model_spec, tmp_path):
    if not os.path.isfile(model_spec):
        pytest.skip("needs the model file")
    enc = tmp_path / "model.gguf.enc"
    key = tmp_path / "model.key"
    out = cli("encrypt", "--in", model_spec, "--out", str(enc), "--new-key-file", str(key))
    assert out.returncode == 0, out.stderr
    # Make the key 40 days old: with key_max_age_days 30 the server warns at load, naming the key by its id only.
    text = key.read_text()
    key_id = [l.split("=", 1)[1] for l in text.splitlines() if l.startswith("id=")][0]
    key_hex = [l.split("=", 1)[1] for l in text.splitlines() if l.startswith("key=")][0]
    key.write_text("\n".join(l for l in text.splitlines() if not l.startswith("created=")) +
                   f"\ncreated={int(time.time()) - 40 * 86400}\n")
    plain_req = {"model": "m", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    answers = []
    for spec in (model_spec, str(enc)):
        extra = ["--key-file", str(key), "--key-max-age-days", "30"] if spec.endswith(".enc") else []
        s = Server(["--model", spec, "--served-model-name", "m", "--max-context", "256", "--kv-memory-mb", "32"]
                   + extra, data_dir=str(tmp_path / ("d" + str(len(answers)))))
        try:
            r = s.http.post(s.base_url + "/v1/completions", json=plain_req, timeout=60)
            assert r.status_code == 200, r.text
            answers.append(r.json()["choices"][0]["text"])
            if extra:  # the key's age on /metrics, by id (checked with an independent parser)
                from prometheus_client.parser import text_string_to_metric_families
                m = s.http.get(s.base_url + "/metrics", timeout=30)
                assert m.status_code == 200, m.text
                ages = [x for f in text_string_to_metric_families(m.text) for x in f.samples
                        if x.name == "citadel:encryption_key_age_seconds"]
                assert [x.labels for x in ages] == [{"key": "model key", "key_id": key_id}], ages
                assert abs(ages[0].value - 40 * 86400) < 600, ages
                assert key_hex not in m.text
        finally:
            s.stop()
        warned = [l for l in s.stderr if "model key" in l and "older than 30 days" in l]
        assert bool(warned) == bool(extra), "".join(s.stderr[-20:])
        if extra:
            assert key_id in warned[0] and key_hex not in "".join(s.stderr)
    assert answers[0] == answers[1]
    # No key, or a wrong one: one line, non-zero exit, no server.
    bad = tmp_path / "bad.key"
    bad.write_text("key=" + "00" * 32 + "\n")
    for extra in ([], ["--key-file", str(bad)]):
        r = subprocess.run([_binary(), "serve", "--model", str(enc), "--port", "0", "--data-dir", str(tmp_path / "x")]
                           + extra, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, CITADEL_BOOTSTRAP_ADMIN_KEY=""))
        assert r.returncode != 0 and ("encrypted" in r.stderr or "authentication failed" in r.stderr), r.stderr
