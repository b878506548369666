#!/usr/bin/env python3
"""What the audit log and the access path (API key + quota) cost per request: the two proofs of issue 19.

Issue 19 asks for "< 1 ms p99 added per request at 1,000 requests/s, measured against the same server with the audit
off"; the access path has the same target. This script starts the real `citadel serve` three times on loopback, the
same binary and model, differing only in their switches:

  auth_off    --auth off                  (no key check, no quota, no audit: the baseline of the access path)
  audit_off   --auth on  --audit off      (API key + quota on SQLite: the access path alone)
  audit_on    --auth on  --audit on       (the default: access path + audit log)

audit cost = audit_on - audit_off;  access cost = audit_off - auth_off.

The request: a streamed /v1/completions of 16 prompt tokens and max_tokens 1 on the built-in debug:bytes model
(microsecond forward passes, so the server's own overhead is what shows). It is a full inference request: it is
authenticated by a developer key that has every quota limit set (high enough never to refuse, so the quota stage
really reserves and settles in the state database), and with the audit on it produces one `inference` audit record
(principal, tenant, model, token counts, status, latency, client, request id): the record every production request
writes. Any other inference request pays the same audit and quota work plus a longer forward pass.

Load: `citadel bench --arrival constant` (open loop: one request every 1/rate s whatever the server does, over
keep-alive connections, one C++ io_context thread). The client reports its own send lag (actual send - scheduled
arrival); a run whose p99 send lag exceeds --max-client-lag-ms is flagged as client-limited. Latency is from the
actual send; arrival_e2el (from the scheduled arrival) is kept in the per-run data.

Runs are interleaved (the order rotates each repeat) so that the shared machine's noise falls on every configuration
alike; figures are medians over repeats of each run's percentiles. With --rt (root only) the servers and the client
run under SCHED_RR priority 20 (`chrt -r 20`) so that compilers running beside them do not own the tail.

Durability check: after the last run the audit_on server is killed with SIGKILL (flush bound + 200 ms after the
last response) and every completed inference request must have its audit record in state.db.

  bench/audit/audit_cost.py --build build-dev [--rate 1000] [--duration 20] [--repeats 3] [--rt] [--out FILE]
  bench/audit/audit_cost.py --build build-dev --smoke     (2 s runs at 200 req/s, no result file: a quick check;
                                                          tests/system/test_audit_cost_smoke.py runs it)
"""
import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "auth_off": ["--auth", "off"],
    "audit_off": ["--auth", "on", "--audit", "off"],
    "audit_on": ["--auth", "on", "--audit", "on"],
}
FIELDS = ("median_e2el_ms", "p99_e2el_ms", "p99.9_e2el_ms", "max_e2el_ms", "mean_e2el_ms", "request_throughput",
          "p99_send_lag_ms", "max_send_lag_ms", "p99_arrival_e2el_ms", "completed", "failed")
AUDIT_FLUSH_MS = 100  # AuditOptions::flush_interval_ms (the durability bound)


def raw_key():
    import base64
    return "ck-%s-%s" % (secrets.token_hex(6), base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))


class Server:
    def __init__(self, citadel, name, args, work, admin, prefix):
        self.name, self.dir = name, os.path.join(work, name)
        os.makedirs(self.dir)
        self.out = open(os.path.join(self.dir, "out"), "w+")
        self.err = open(os.path.join(self.dir, "err"), "w+")
        env = dict(os.environ, CITADEL_BOOTSTRAP_ADMIN_KEY=admin)
        cmd = prefix + [citadel, "serve", "--model", "debug:bytes", "--served-model-name", "dbg", "--port", "0",
                        "--max-queue", "4096", "--max-seqs", "256", "--data-dir", os.path.join(self.dir, "state")]
        self.proc = subprocess.Popen(cmd + args, stdout=self.out, stderr=self.err, env=env)
        self.base = None
        for _ in range(600):
            self.out.seek(0)
            text = self.out.read()
            if "citadel serve: ready" in text:
                self.base = re.search(r"listening on (http://\S+)", text).group(1)
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.base:
            self.err.seek(0)
            raise SystemExit("%s did not start:\n%s" % (name, self.err.read()[-2000:]))

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_key(base, admin):
    body = json.dumps({"name": "bench", "role": "developer", "limits": {
        "requests_per_minute": 1000000, "tokens_per_minute": 100000000, "concurrent_requests": 100000,
        "max_tokens_per_request": 16, "daily_tokens": 1000000000}}).encode()
    req = urllib.request.Request(base + "/admin/v1/keys", data=body, method="POST", headers={
        "Authorization": "Bearer " + admin, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["key"]


def run_load(citadel, prefix, base, key, rate, n, seed, out):
    cmd = prefix + [citadel, "bench", "--base-url", base, "--model", "dbg", "--endpoint", "/v1/completions",
                    "--random-input-len", "16", "--random-output-len", "1", "--token-id-low", "32",
                    "--token-id-high", "127", "--num-prompts", str(n), "--request-rate", str(rate),
                    "--arrival", "constant", "--seed", str(seed), "--api-key", key, "--result-file", out]
    la0 = os.getloadavg()[0]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    res = json.load(open(out))
    run = {k: res.get(k) for k in FIELDS}
    run["load_average_1m_before"], run["load_average_1m_after"] = la0, os.getloadavg()[0]
    return run


def audit_records(state_dir):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(state_dir, "state.db"), uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM audit_records WHERE kind = 'inference'").fetchone()[0]
    finally:
        db.close()


def med(runs, k):
    v = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
    return statistics.median(v) if v else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--citadel", default="", help="the binary (default: BUILD/citadel)")
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--duration", type=float, default=20, help="seconds per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=2, help="seconds of load per server before the runs")
    ap.add_argument("--rt", action="store_true", help="servers and client under chrt -r 20 (root)")
    ap.add_argument("--max-client-lag-ms", type=float, default=1.0)
    ap.add_argument("--label", default="", help="suffix of the result file name")
    ap.add_argument("--out", default="")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.rate, a.duration, a.repeats, a.warmup = 200, 2, 1, 0.5
    citadel = a.citadel or os.path.join(a.build, "citadel")
    # The commit when the run starts (the tree may move on while it runs); "-dirty" when tracked files differ.
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                      text=True).stdout.strip():
        commit += "-dirty"
    prefix = ["chrt", "-r", "20"] if a.rt else []
    work = tempfile.mkdtemp(prefix="citadel-audit-cost-")
    admin = raw_key()
    servers = {}
    try:
        for name, args in CONFIGS.items():
            servers[name] = Server(citadel, name, args, work, admin, prefix)
        keys = {n: (make_key(s.base, admin) if n != "auth_off" else "none") for n, s in servers.items()}
        sent = {n: 0 for n in servers}
        n_run = int(a.rate * a.duration)
        for n, s in servers.items():  # warm-up (connections, caches, first SQLite pages)
            w = run_load(citadel, prefix, s.base, keys[n], a.rate, max(1, int(a.rate * a.warmup)), 0,
                         os.path.join(work, n + "-warm.json"))
            sent[n] += w["completed"] or 0
        runs = {n: [] for n in servers}
        order = list(servers)
        for r in range(a.repeats):
            for n in order[r % len(order):] + order[:r % len(order)]:
                run = run_load(citadel, prefix, servers[n].base, keys[n], a.rate, n_run, r + 1,
                               os.path.join(work, "%s-r%d.json" % (n, r + 1)))
                run["client_limited"] = (run["p99_send_lag_ms"] or 0) > a.max_client_lag_ms
                runs[n].append(run)
                sent[n] += run["completed"] or 0
                print("%-9s r%d  p50 %.3f  p99 %.3f  p99.9 %.3f ms  %.0f req/s  lag p99 %.3f ms  load %.2f" % (
                    n, r + 1, run["median_e2el_ms"], run["p99_e2el_ms"], run["p99.9_e2el_ms"],
                    run["request_throughput"], run["p99_send_lag_ms"], run["load_average_1m_after"]), flush=True)
        # Durability: SIGKILL the audited server once the flush bound has passed since its last response.
        time.sleep((AUDIT_FLUSH_MS + 200) / 1000)
        servers["audit_on"].stop(signal.SIGKILL)
        stored = audit_records(os.path.join(servers["audit_on"].dir, "state"))
        durable = {"completed_inference_requests": sent["audit_on"], "inference_records_after_sigkill": stored,
                   "kill_after_last_response_ms": AUDIT_FLUSH_MS + 200, "ok": stored >= sent["audit_on"]}
    finally:
        for s in servers.values():
            s.stop()
    fig = {}
    for n in runs:
        for k in ("median_e2el_ms", "p99_e2el_ms", "p99.9_e2el_ms", "request_throughput", "p99_send_lag_ms"):
            fig["%s_%s" % (n, k)] = med(runs[n], k)
    # The same over runs whose client kept to its schedule (p99 send lag <= --max-client-lag-ms): a run where the
    # client itself stalled saw the machine stall too, and its tail says little about the server.
    for n in runs:
        clean = [r for r in runs[n] if not r["client_limited"]]
        fig["%s_clean_runs" % n] = len(clean)
        for k in ("median_e2el_ms", "p99_e2el_ms", "p99.9_e2el_ms"):
            fig["%s_clean_%s" % (n, k)] = med(clean, k)
    for what, hi, lo in (("audit", "audit_on", "audit_off"), ("access", "audit_off", "auth_off")):
        for k in ("median_e2el_ms", "p99_e2el_ms", "p99.9_e2el_ms"):
            a_, b_ = fig["%s_clean_%s" % (hi, k)], fig["%s_clean_%s" % (lo, k)]
            fig["%s_added_clean_%s" % (what, k)] = a_ - b_ if a_ is not None and b_ is not None else None
    for what, hi, lo in (("audit", "audit_on", "audit_off"), ("access", "audit_off", "auth_off")):
        for k in ("median_e2el_ms", "p99_e2el_ms", "p99.9_e2el_ms"):
            fig["%s_added_%s" % (what, k)] = fig["%s_%s" % (hi, k)] - fig["%s_%s" % (lo, k)]
        # The per-repeat difference (adjacent runs share the machine's state), then its median.
        fig["%s_added_p99_e2el_ms_per_repeat" % what] = [
            round(x["p99_e2el_ms"] - y["p99_e2el_ms"], 4) for x, y in zip(runs[hi], runs[lo])]
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "cpu")
    res = {
        "device": "%s, %d cores" % (model, os.cpu_count()), "machine": platform.node(), "commit": commit,
        "binary": os.path.abspath(citadel), "date": datetime.date.today().isoformat(),
        "model": "debug:bytes (built-in fake, microsecond steps)",
        "command": " ".join(["bench/audit/audit_cost.py"] + sys.argv[1:]),
        "request": "POST /v1/completions stream, 16 prompt tokens, max_tokens 1; developer key with every quota limit",
        "arrival": "constant (open loop)", "request_rate_per_s": a.rate, "duration_s_per_run": a.duration,
        "repeats": a.repeats, "realtime_priority": a.rt, "load_average_1_5_15_at_end": list(os.getloadavg()),
        "figures": fig, "durability": durable, "runs": runs,
        "client_limited_runs": sum(r["client_limited"] for v in runs.values() for r in v),
    }
    print(json.dumps(fig, indent=1))
    print("durability:", json.dumps(durable))
    shutil.rmtree(work, ignore_errors=True)
    if a.smoke:
        ok = durable["ok"] and all(r["failed"] == 0 for v in runs.values() for r in v)
        return 0 if ok else 1
    out = a.out or os.path.join(ROOT, "bench", "results", "gateway-audit-cost-%s%s.json" % (
        res["date"], ("-" + a.label) if a.label else ""))
    json.dump(res, open(out, "w"), indent=2)
    print("wrote", out)
    return 0 if durable["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
