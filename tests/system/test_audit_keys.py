"""The audit signing key's life on the real server: its age (warning at start, /api/v1/stats), `citadel audit
rotate-key` while a server runs on the same data directory (the server signs with the new key without a restart,
verify accepts both keys through the keyring, and fails without it or with a key swapped in by hand), and
`citadel audit purge` (retention applied now, a signed anchor that verifies, the purge recorded, the anchor guarded)."""
import json
import os
import re
import sqlite3
import subprocess
import time

import requests

from conftest import Server, _binary

CHAT = {"model": "dbg", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}


def cli(*args):
    return subprocess.run([_binary(), *map(str, args)], capture_output=True, text=True, timeout=120)


def chat(s, n=1):
    for _ in range(n):
        r = s.http.post(s.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 200, r.text


def audit_stats(s):
    r = s.http.get(s.base_url + "/api/v1/stats", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["audit"]


def export(data_dir):
    out = cli("audit", "export", "--data-dir", data_dir)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    return lines[:-1], lines[-1]


def test_key_age_then_rotation_while_serving(tmp_path):
    d = tmp_path
    out = cli("audit", "rotate-key", "--data-dir", d / "empty")
    assert out.returncode == 1 and "no audit signing key to rotate" in out.stderr, out.stderr
    assert not (d / "empty" / "audit.key").exists()
    # `audit purge` opens the log, which creates the signing key (nothing to purge yet); then age it by 200 days.
    out = cli("audit", "purge", "--data-dir", d)
    assert out.returncode == 0, out.stderr
    key = d / "audit.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    text = key.read_text()
    m = re.search(r"key_id=([0-9a-f]{16}) version=1 created=(\d+)", text)
    assert m, text.splitlines()[:3]
    old_id, created = m.group(1), int(m.group(2))
    assert abs(created - time.time()) < 120
    key.write_text(text.replace(f"created={created}", f"created={created - 200 * 86400 - 60}"))

    s = Server(["--model", "debug:bytes", "--served-model-name", "dbg", "--key-max-age-days", "100"],
               data_dir=str(d))
    try:
        chat(s, 3)
        time.sleep(0.3)  # > the 100 ms group-commit bound
        a = audit_stats(s)
        assert a["signing_key_id"] == old_id and a["signing_key_version"] == 1, a
        assert a["signing_key_age_days"] == 200, a
        assert a["write_failures"] == 0 and a["last_error"] == "" and a["written"] > 0, a
        warn = [l for l in s.stderr if "audit signing key" in l and "200 days old" in l]
        assert warn and old_id in warn[0] and "key_max_age_days=100" in warn[0], "".join(s.stderr[-30:])
        assert "BEGIN" not in "".join(s.stderr)

        # Rotate with the CLI while the server runs; it keeps serving and signs with the new key from its next commit.
        out = cli("audit", "rotate-key", "--data-dir", d)
        assert out.returncode == 0, out.stdout + out.stderr
        new_id = re.search(r"rotated: ([0-9a-f]{16}) -> ([0-9a-f]{16}) \(version 2\)", out.stdout)
        assert new_id and new_id.group(1) == old_id, out.stdout
        new_id = new_id.group(2)
        assert new_id != old_id
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        ring = (d / "audit.key.retired").read_text()
        assert "BEGIN PUBLIC KEY" in ring and "PRIVATE" not in ring and f"key_id={old_id}" in ring
        chat(s, 3)
        time.sleep(0.3)  # > the 100 ms group-commit bound
        a = audit_stats(s)
        assert a["signing_key_id"] == new_id and a["signing_key_version"] == 2 and a["signing_key_age_days"] == 0, a
        assert any("signing key file changed" in l and new_id in l for l in s.stderr), "".join(s.stderr[-30:])
    finally:
        assert s.stop() == 0
    db = sqlite3.connect(os.path.join(d, "state.db"))
    ids = [r[0] for r in db.execute("SELECT DISTINCT key_id FROM audit_checkpoints ORDER BY seq")]
    rot_seq = db.execute("SELECT seq FROM audit_records WHERE kind = 'encryption.key_rotation'").fetchone()[0]
    after = db.execute("SELECT COUNT(*) FROM audit_checkpoints WHERE seq > ?", (rot_seq,)).fetchone()[0]
    old_after = db.execute("SELECT COUNT(*) FROM audit_checkpoints WHERE seq >= ? AND key_id = ?",
                           (rot_seq, old_id)).fetchone()[0]
    db.close()
    assert set(ids) == {old_id, new_id} and after > 0 and old_after == 0, (ids, rot_seq, after, old_after)
    out = cli("audit", "verify", "--data-dir", d)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr
    recs, status = export(d)
    rot = [r for r in recs if r["kind"] == "encryption.key_rotation"]
    assert len(rot) == 1 and rot[0]["principal"] == "cli", rot
    assert rot[0]["detail"] == {"key": "audit_signing", "old_key_id": old_id, "new_key_id": new_id, "new_version": 2}
    assert status["verification"] == "ok", status

    # Without the keyring the old key's checkpoints are unvouched for: verify names the first one.
    os.rename(d / "audit.key.retired", d / "ring.bak")
    out = cli("audit", "verify", "--data-dir", d)
    assert out.returncode == 1 and old_id in out.stdout and "keyring" in out.stdout, out.stdout + out.stderr
    os.rename(d / "ring.bak", d / "audit.key.retired")
    assert cli("audit", "verify", "--data-dir", d).returncode == 0
    # A signing key replaced by hand (no rotate-key) is caught even with the keyring in place.
    os.remove(key)
    assert cli("audit", "purge", "--data-dir", d).returncode == 0  # creates a fresh key
    out = cli("audit", "verify", "--data-dir", d)
    assert out.returncode == 1 and f"BROKEN at record {rot_seq}" in out.stdout and new_id in out.stdout, out.stdout


def test_retention_purge_end_to_end(tmp_path):
    d = tmp_path
    s = Server(["--model", "debug:bytes", "--served-model-name", "dbg"], data_dir=str(d))
    try:
        chat(s, 4)
    finally:
        assert s.stop() == 0
    db = sqlite3.connect(os.path.join(d, "state.db"))
    count, last = db.execute("SELECT COUNT(*), MAX(seq) FROM audit_records").fetchone()
    db.close()
    assert count >= 6, count  # server.start, model.load, 4 x inference, server.stop

    # Nothing is 180 days old yet.
    out = cli("audit", "purge", "--data-dir", d)
    assert out.returncode == 0 and "purge: 0 records" in out.stdout, out.stdout + out.stderr
    out = cli("audit", "purge", "--data-dir", d, "--retention-days", "30", "--now", "2100-01-01T00:00:00Z")
    assert out.returncode == 0 and f"purge: {count} records older than 30 days" in out.stdout, out.stdout + out.stderr
    out = cli("audit", "verify", "--data-dir", d)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr
    recs, status = export(d)
    assert status["verification"] == "ok", status
    assert min(r["seq"] for r in recs) == last + 1, [r["seq"] for r in recs]
    purge = [r for r in recs if r["kind"] == "retention.purge"]
    assert len(purge) == 1 and purge[0]["seq"] == last + 1 and purge[0]["principal"] == "cli", purge
    assert purge[0]["detail"]["purged"] == count and purge[0]["detail"]["anchor_seq"] == last
    assert purge[0]["detail"]["retention_days"] == 30
    assert not [r for r in recs if r["kind"] == "inference"]

    # The anchor is signed: moving it (to hide a deletion) or editing its hash is caught.
    db = sqlite3.connect(os.path.join(d, "state.db"))
    db.execute("UPDATE audit_anchor SET hash = ? WHERE id = 1", ("0" * 64,))
    db.commit()
    db.close()
    out = cli("audit", "verify", "--data-dir", d)
    assert out.returncode == 1 and "retention anchor" in out.stdout, out.stdout + out.stderr
