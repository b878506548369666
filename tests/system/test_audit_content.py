"""Stored content (audit_store_content on): prompts and outputs of chat and completions, streamed or not, stored
AES-256-GCM encrypted and read back with `citadel audit content`; no plaintext in the database files or the logs;
a wrong key or a modified blob is one line and exit 1, and verify catches it. Also server.start's configuration
digest, config.change on a changed restart, model.unload at stop, and the start-up errors of the option."""
import glob
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import time

import pytest
import requests

from conftest import Server, _binary

MARK = "zq" + secrets.token_hex(6)  # unique per run: must never appear in clear on disk or in logs


def cli(*args):
    return subprocess.run([_binary(), *args], capture_output=True, text=True, timeout=120)


def write_key(path, ident, fill):
    with open(path, "w") as f:
        f.write(f"id={ident}\nkey={fill * 64}\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("content")
    data = str(d / "data")
    key = write_key(str(d / "content.key"), "content@1", "a")
    wrong = write_key(str(d / "wrong.key"), "content@1", "b")
    s = Server(["--model", "debug:bytes", "--served-model-name", "dbg", "--audit-store-content", "on",
                "--audit-content-key", key], data_dir=data)
    yield {"server": s, "data": data, "key": key, "wrong": wrong, "dir": str(d)}
    s.stop()


def send(s, path, body, rid, stream=False):
    r = s.http.post(s.base_url + path, json=dict(body, stream=stream), headers={"x-request-id": rid}, stream=stream,
                    timeout=60)
    assert r.status_code == 200, r.text
    if not stream:
        j = r.json()
        ch = j["choices"][0]
        return ch["message"]["content"] if "message" in ch else ch["text"]
    text = ""
    for line in r.iter_lines():
        if not line or not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        for ch in json.loads(line[6:]).get("choices", []):
            text += (ch.get("delta") or {}).get("content") or ch.get("text") or ""
    return text


CASES = [
    ("chat", "/v1/chat/completions", False),
    ("chat-stream", "/v1/chat/completions", True),
    ("cmpl", "/v1/completions", False),
    ("cmpl-stream", "/v1/completions", True),
]


@pytest.fixture(scope="module")
def exchanged(env):
    s = env["server"]
    out = {}
    for name, path, stream in CASES:
        marker = f"{MARK}-{name}"
        if "chat" in path:
            body = {"model": "dbg", "messages": [{"role": "user", "content": f"hello {marker}"}], "max_tokens": 4}
        else:
            body = {"model": "dbg", "prompt": f"hello {marker}", "max_tokens": 4}
        rid = f"content-{name}-{secrets.token_hex(4)}"
        out[name] = {"rid": rid, "marker": marker, "text": send(s, path, body, rid, stream), "body": body}
    time.sleep(0.4)  # > the 100 ms group-commit bound
    return out


def read_content(env, rid, key=None):
    return cli("audit", "content", "--data-dir", env["data"], "--request-id", rid, "--content-key", key or env["key"])


def test_prompt_and_output_read_back(env, exchanged):
    for name, _, _ in CASES:
        e = exchanged[name]
        r = read_content(env, e["rid"])
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 1, r.stdout
        got = json.loads(lines[0])
        assert got["request_id"] == e["rid"]
        want_prompt = e["body"]["messages"] if "messages" in e["body"] else e["body"]["prompt"]
        assert got["prompt"] == want_prompt, (name, got["prompt"])
        assert got["output"][0]["text"] == e["text"], (name, got["output"], e["text"])


def test_audit_record_names_key_and_digest_not_text(env, exchanged):
    s = env["server"]
    r = s.http.get(s.base_url + "/admin/v1/audit", params={"kind": "inference", "limit": 1000})
    assert r.status_code == 200
    recs = {x["request_id"]: x for x in r.json()["data"]}
    for e in exchanged.values():
        rec = recs[e["rid"]]
        assert rec["detail"]["content"]["key_id"] == "content@1"
        assert len(rec["detail"]["content"]["sha256"]) == 64
        assert MARK not in json.dumps(rec)


def test_no_plaintext_in_database_files_or_logs(env, exchanged):
    files = glob.glob(os.path.join(env["data"], "*"))
    assert any(f.endswith("state.db") for f in files), files
    for f in files:
        with open(f, "rb") as fh:
            assert MARK.encode() not in fh.read(), f
    assert MARK not in "".join(env["server"].stderr)
    assert MARK not in "".join(env["server"].stdout_lines)


def test_wrong_key_is_one_line_exit_1(env, exchanged):
    r = read_content(env, exchanged["chat"]["rid"], key=env["wrong"])
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "wrong content key or modified content" in r.stderr
    assert MARK not in r.stdout + r.stderr


def test_zz_modified_or_deleted_blob_is_detected(env, exchanged):
    """Runs last in the module: edits a copy of the database, so the live server is left alone."""
    s = env["server"]
    assert s.stop() == 0
    copy = os.path.join(env["dir"], "tampered")
    shutil.copytree(env["data"], copy)
    ok = cli("audit", "verify", "--data-dir", copy)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    db = sqlite3.connect(os.path.join(copy, "state.db"))
    rid = exchanged["cmpl"]["rid"]
    (ct,) = db.execute("SELECT ciphertext FROM audit_content WHERE request_id = ?", (rid,)).fetchone()
    flipped = ("1" if ct[10] == "0" else "0")
    db.execute("UPDATE audit_content SET ciphertext = ? WHERE request_id = ?", (ct[:10] + flipped + ct[11:], rid))
    db.execute("DELETE FROM audit_content WHERE request_id = ?", (exchanged["chat"]["rid"],))
    db.commit()
    db.close()
    r = read_content(dict(env, data=copy), rid)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "modified" in r.stderr
    r = read_content(dict(env, data=copy), exchanged["chat"]["rid"])
    assert r.returncode == 1 and "missing" in r.stderr, r.stderr
    v = cli("audit", "verify", "--data-dir", copy)
    assert v.returncode == 1, v.stdout
    assert "BROKEN" in v.stdout and "stored content" in v.stdout, v.stdout

    # The same data directory, restarted with another configuration: config.change names what changed, and the
    # stop before it left model.unload and server.stop.
    s2 = Server(["--model", "debug:bytes", "--served-model-name", "dbg", "--max-queue", "77"],
                data_dir=env["data"], admin_key=s.admin_key)
    try:
        time.sleep(0.3)
        recs = s2.http.get(s2.base_url + "/admin/v1/audit", params={"limit": 1000, "order": "oldest"}).json()["data"]
    finally:
        s2.stop()
    kinds = [x["kind"] for x in recs]
    starts = [x for x in recs if x["kind"] == "server.start"]
    assert len(starts) == 2, kinds
    assert starts[0]["detail"]["config"]["max_queue"] == "256"
    assert starts[0]["detail"]["config"]["audit_content_key"] == env["key"]  # the path, never key bytes
    assert len(starts[0]["detail"]["config_sha256"]) == 64
    assert starts[0]["detail"]["config_sha256"] != starts[1]["detail"]["config_sha256"]
    first_stop = kinds.index("server.stop")
    assert "model.unload" in kinds[:first_stop], kinds
    changes = [x for x in recs if x["kind"] == "config.change"]
    assert len(changes) == 1, kinds
    changed = {c["key"]: (c["old"], c["new"]) for c in changes[0]["detail"]["changed"]}
    assert changed["max_queue"] == ("256", "77")
    assert changed["audit_store_content"] == ("on", "off")
    assert changed["audit_content_key"] == (env["key"], "")
    assert "port" not in changed and "data_dir" not in changed
    assert "a" * 32 not in json.dumps(recs)  # key bytes never recorded


def test_start_errors_are_one_line(tmp_path):
    args = [_binary(), "serve", "--model", "debug:bytes", "--port", "0", "--data-dir", str(tmp_path / "d")]
    r = subprocess.run(args + ["--audit-store-content", "on"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "audit_content_key" in r.stderr and len([l for l in r.stderr.splitlines() if "citadel serve:" in l]) == 1
    r = subprocess.run(args + ["--audit-store-content", "on", "--audit-content-key", str(tmp_path / "nope.key")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "audit_content_key" in r.stderr and "nope.key" in r.stderr, r.stderr
    r = subprocess.run(args + ["--audit-store-content", "maybe"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "audit_store_content must be on or off" in r.stderr
