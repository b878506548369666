"""bench/audit/audit_cost.py --smoke: the audit and access-path cost benchmark still runs end to end (three servers,
open-loop load, SIGKILL durability check). The real measurement is not part of the suite (minutes of load)."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_audit_cost_smoke():
    citadel = os.environ.get("CITADEL_BIN", str(ROOT / "build" / "citadel"))
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "audit" / "audit_cost.py"), "--citadel", citadel,
                        "--smoke"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert '"ok": true' in r.stdout
