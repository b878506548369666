"""citadel backup while serving under traffic, then stop, wipe, restore: the audit chain verifies and the keys made
before the backup still work (SQLite, and PostgreSQL state through pg_dump / pg_restore); restore refuses a backup that does not match its manifest (a changed byte, an extra
file, a different model) and one whose signing key is missing."""
import json
import os
import pathlib
import shutil
import subprocess
import threading
import time

import pytest
import requests

from conftest import Server, _binary

CHAT = {"model": "dbg", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def cli(*args):
    return subprocess.run([_binary(), *args], capture_output=True, text=True, timeout=300)


def test_backup_while_serving_then_restore(tmp_path, model_spec):
    data = tmp_path / "data"
    config = tmp_path / "citadel.yaml"
    config.write_text("max_queue: 64\n")
    s = Server(["--model", "debug:bytes", "--served-model-name", "dbg", "--config", str(config)], data_dir=str(data))
    try:
        base = s.base_url
        # The traffic below runs as long as the backup takes (longer on a loaded machine): no per-minute cap on it.
        dev = s.http.post(base + "/admin/v1/keys", json={"name": "dev", "role": "developer",
                                                         "limits": {"requests_per_minute": 1000000}}).json()
        revoked = s.http.post(base + "/admin/v1/keys", json={"name": "gone", "role": "guest"}).json()
        assert s.http.delete(base + f"/admin/v1/keys/{revoked['id']}").status_code == 200
        dh = {"Authorization": "Bearer " + dev["key"]}
        assert requests.post(base + "/v1/chat/completions", json=CHAT, headers=dh).status_code == 200
        # Traffic (each request an audit record and a quota write) goes on while the backup is taken.
        stop = threading.Event()
        done = []

        def load():
            while not stop.is_set():
                done.append(requests.post(base + "/v1/chat/completions", json=CHAT, headers=dh, timeout=60).status_code)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        backup = tmp_path / "backup"
        deadline = time.time() + 10  # the audit writer's first group commit writes the head file
        while not (data / "audit.head").exists():
            assert time.time() < deadline
            time.sleep(0.05)
        models = [model_spec] if os.path.isfile(model_spec) else []
        r = cli("backup", "--out", str(backup), "--data-dir", str(data), "--config", str(config),
                *sum((["--model", m] for m in models), []))
        stop.set()
        for t in threads:
            t.join()
        assert r.returncode == 0, r.stderr
        assert done and set(done) == {200}
    finally:
        assert s.stop() == 0
    manifest = json.loads((backup / "MANIFEST.json").read_text())
    names = {f["path"] for f in manifest["files"]}
    assert names == {"state.db", "audit.head", "audit.pub", "config.yaml"}, names  # no signing key by default
    assert len(manifest["models"]) == len(models)
    assert all(len(f["sha256"]) == 64 for f in manifest["files"] + manifest["models"])
    # The signing key is kept apart (a secret store); then the data directory is lost.
    secret = tmp_path / "secret-store"
    secret.mkdir()
    shutil.copy(data / "audit.key", secret / "audit.key")
    shutil.rmtree(data)

    # Refusals first, each leaving the target untouched.
    target = tmp_path / "restored"
    r = cli("restore", "--from", str(backup), "--data-dir", str(target))
    assert r.returncode != 0 and "--signing-key" in r.stderr
    bad = tmp_path / "bad"
    shutil.copytree(backup, bad)
    with open(bad / "state.db", "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 1]))
    r = cli("restore", "--from", str(bad), "--data-dir", str(target), "--signing-key", str(secret / "audit.key"))
    assert r.returncode != 0 and "SHA-256" in r.stderr and not (target / "state.db").exists(), r.stderr
    shutil.rmtree(bad)
    shutil.copytree(backup, bad)
    (bad / "stray.txt").write_text("x")
    r = cli("restore", "--from", str(bad), "--data-dir", str(target), "--signing-key", str(secret / "audit.key"))
    assert r.returncode != 0 and "not in the manifest" in r.stderr
    if models:
        shutil.rmtree(bad)
        shutil.copytree(backup, bad)
        m = json.loads((bad / "MANIFEST.json").read_text())
        m["models"][0]["sha256"] = "0" * 64
        (bad / "MANIFEST.json").write_text(json.dumps(m))
        r = cli("restore", "--from", str(bad), "--data-dir", str(target), "--signing-key", str(secret / "audit.key"))
        assert r.returncode != 0 and "model" in r.stderr
    assert not (target / "state.db").exists()

    r = cli("restore", "--from", str(backup), "--data-dir", str(target), "--signing-key", str(secret / "audit.key"))
    assert r.returncode == 0, r.stderr
    assert "audit log OK" in r.stdout
    assert oct((target / "audit.key").stat().st_mode & 0o777) == "0o600"
    v = cli("audit", "verify", "--data-dir", str(target))
    assert v.returncode == 0, v.stdout + v.stderr
    # Restoring over it again needs --force.
    r = cli("restore", "--from", str(backup), "--data-dir", str(target), "--signing-key", str(secret / "audit.key"))
    assert r.returncode != 0 and "--force" in r.stderr

    s2 = Server(["--model", "debug:bytes", "--served-model-name", "dbg"], data_dir=str(target), admin_key=s.admin_key)
    try:
        assert requests.post(s2.base_url + "/v1/chat/completions", json=CHAT, headers=dh).status_code == 200
        gone = requests.post(s2.base_url + "/v1/chat/completions", json=CHAT,
                             headers={"Authorization": "Bearer " + revoked["key"]})
        assert gone.status_code == 401
        assert s2.http.get(s2.base_url + "/admin/v1/keys").status_code == 200
    finally:
        assert s2.stop() == 0
    # The restored server appended to the restored chain: it still verifies.
    v = cli("audit", "verify", "--data-dir", str(target))
    assert v.returncode == 0, v.stdout + v.stderr


def test_backup_refuses_a_non_empty_directory_and_postgres(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    import sqlite3
    sqlite3.connect(tmp_path / "state.db").close()
    r = cli("backup", "--out", str(out), "--data-dir", str(tmp_path))
    assert r.returncode != 0 and "not empty" in r.stderr
    r = cli("backup", "--out", str(tmp_path / "o2"), "--state-db", "postgresql://u:s3cret@127.0.0.1:1/db")
    assert r.returncode == 1 and "dumping the state database: pg_dump failed" in r.stderr, r.stderr
    assert "s3cret" not in r.stderr


def test_postgres_state_backup_and_restore(tmp_path, pg_url):
    """PostgreSQL state: pg_dump into the backup (with the audit files and a verified chain), the database dropped
    and recreated empty, pg_restore back: the key made before the backup works and the chain verifies."""
    base_url, _, _ = pg_url.rpartition("/")
    db = "citadel_bk_" + os.urandom(4).hex()
    url = f"{base_url}/{db}"

    def psql(sql):
        r = subprocess.run(["psql", f"{base_url}/postgres", "-c", sql], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr

    psql(f"CREATE DATABASE {db}")
    data, key = tmp_path / "data", tmp_path / "audit.key"
    args = ["--model", "debug:bytes", "--served-model-name", "dbg", "--state-db", url, "--audit-key", str(key)]
    s = Server(args, data_dir=str(data))
    try:
        dev = s.http.post(s.base_url + "/admin/v1/keys", json={"name": "dev", "role": "developer"}).json()
        dh = {"Authorization": "Bearer " + dev["key"]}
        assert requests.post(s.base_url + "/v1/chat/completions", json=CHAT, headers=dh).status_code == 200
    finally:
        assert s.stop() == 0
    backup = tmp_path / "backup"
    r = cli("backup", "--out", str(backup), "--data-dir", str(data), "--state-db", url, "--audit-key", str(key))
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout and (backup / "state.pgdump").is_file()
    assert json.loads((backup / "MANIFEST.json").read_text())["info"]["state"] == "postgresql"
    psql(f"DROP DATABASE {db}")
    psql(f"CREATE DATABASE {db}")
    target = tmp_path / "restored"
    r = cli("restore", "--from", str(backup), "--data-dir", str(target), "--signing-key", str(key))
    assert r.returncode == 1 and "--state-db postgresql://" in r.stderr
    r = cli("restore", "--from", str(backup), "--data-dir", str(target), "--signing-key", str(key),
            "--state-db", url)
    assert r.returncode == 0, r.stderr
    assert "audit log OK" in r.stdout
    s = Server(args[:-1] + [str(target / "audit.key")], data_dir=str(target), admin_key="")
    try:
        assert requests.post(s.base_url + "/v1/chat/completions", json=CHAT, headers=dh).status_code == 200
    finally:
        assert s.stop() == 0
    v = cli("audit", "verify", "--data-dir", str(target), "--state-db", url, "--key", str(target / "audit.key"))
    assert v.returncode == 0, v.stdout + v.stderr
