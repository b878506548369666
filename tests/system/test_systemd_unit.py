"""deploy/systemd/citadel.service under a real systemd: the host's /lib/systemd/systemd booted as PID 1 of private
namespaces (systemd_sandbox.py; nothing reaches the host). The unit file is installed unchanged, with the binary of
this build at its ExecStart path, its config at /etc/citadel/citadel.yaml and the state in its StateDirectory; one
drop-in makes it fast to test (WatchdogSec=2s, RestartSec=200ms), sends its output to a file (there is no journald
in the sandbox) and records every stop ($SERVICE_RESULT $EXIT_CODE $EXIT_STATUS, from an ExecStopPost= that runs
outside the sandboxing). The model is the built-in byte model: debug:slow (5 ms a step) and debug:hang (every step
blocks for ever: a hung engine).

Checked: Type=notify start (systemctl start returns once READY=1 arrived, STATUS= shows), /health and /ready; the
hardening that applies (user, no capabilities, no new privileges, seccomp, read-only system with the state
directory writable, private /tmp, hidden /home, read-only cgroups and /proc/sys, own hostname namespace, umask);
SIGKILL restarted by Restart=on-failure; a hung engine killed by the watchdog (SIGABRT) and restarted; `systemctl
stop` drains a running stream to its end and exits 0; StartLimitBurst= leaves the unit failed after the fifth kill.
Skips, saying why, where the sandbox cannot run (not root, no cgroup2, no overlayfs, no unshare); needs no model
file and no network.
"""
import json
import os
import pathlib
import subprocess
import time

import pytest

import systemd_sandbox
from conftest import ROOT, make_api_key

UNIT = ROOT / "deploy" / "systemd" / "citadel.service"
PORT = 8080  # the sandbox has its own network namespace: any port is free
DROP_IN = """[Service]
WatchdogSec=2s
RestartSec=200ms
TimeoutStopSec=30s
StandardOutput=append:/run/citadel-test/citadel.log
StandardError=inherit
ExecStopPost=+/bin/sh -c 'echo "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" >> /run/citadel-test/stops'
"""
CONFIG = "model: {model}\nhost: 127.0.0.1\nport: %d\ndrain_timeout_s: 20\n" % PORT

# Runs in the sandbox's network namespace: GET or POST one URL, print the status and the body.
HTTP = r"""
import json, sys, urllib.request, urllib.error
url, key, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, data=body.encode() if body else None,
                             headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=float(sys.argv[4])) as r:
        print(r.status)
        for line in r:
            print(line.decode().rstrip("\n"), flush=True)
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
except Exception as e:
    print("error", type(e).__name__, e)
"""


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    why = systemd_sandbox.why_not()
    if why:
        pytest.skip("no real systemd here: " + why)
    binary = pathlib.Path(os.environ.get("CITADEL_BIN", ROOT / "build" / "citadel"))
    if not binary.is_file():
        pytest.skip(f"{binary} not built")
    key = make_api_key()
    units = {"citadel.service": UNIT.read_text(), "citadel.service.d/test.conf": DROP_IN}
    etc = {"citadel.yaml": CONFIG.format(model="debug:slow"), "citadel.env": f"CITADEL_BOOTSTRAP_ADMIN_KEY={key}\n"}
    box = systemd_sandbox.Sandbox(tmp_path_factory.mktemp("systemd") / "stage", binary, units, etc)
    box.key = key
    try:
        yield box
    finally:
        box.close()
    assert box.host_changes() == [], "the sandboxed systemd changed the host"


def show(sd, *props):
    out = sd.run(["systemctl", "show", "citadel.service"] + [f"--property={p}" for p in props]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def http(sd, path, body="", timeout=10):
    r = sd.run(["python3", "-c", HTTP, f"http://127.0.0.1:{PORT}{path}", sd.key, body, str(timeout)],
               timeout=timeout + 20)
    status, _, text = r.stdout.partition("\n")
    return status, text


def stops(sd):
    r = sd.run(["cat", "/run/citadel-test/stops"], check=False)
    return r.stdout.splitlines()


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def active_with_new_pid(sd, old_pid):
    s = show(sd, "ActiveState", "SubState", "MainPID", "NRestarts")
    return s if s["ActiveState"] == "active" and s["MainPID"] not in ("0", old_pid) else None


def start(sd, model):
    sd.run(["sh", "-c", "cat > /etc/citadel/citadel.yaml"], stdin=CONFIG.format(model=model))
    sd.run(["systemctl", "reset-failed", "citadel.service"], check=False)
    # Type=notify: returns once READY=1 arrived (or fails when the process exits first).
    sd.run(["systemctl", "restart", "citadel.service"], timeout=60)


def test_starts_with_notify_serves_and_is_hardened(sd):
    start(sd, "debug:slow")
    s = show(sd, "ActiveState", "SubState", "MainPID", "StatusText", "WatchdogUSec", "Type", "NRestarts")
    assert (s["Type"], s["ActiveState"], s["SubState"]) == ("notify", "active", "running"), s
    assert s["StatusText"] == "serving debug:slow on port %d" % PORT, s
    assert s["WatchdogUSec"] == "2s"
    assert http(sd, "/health")[0] == "200"
    assert http(sd, "/ready")[0] == "200"
    status, body = http(sd, "/v1/models")
    assert status == "200" and "debug:slow" in body

    pid = s["MainPID"]
    st = dict(l.split(":", 1) for l in sd.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines())
    assert st["Uid"].split()[0] == sd.run(["id", "-u", "citadel"]).stdout.strip() != "0"   # User=citadel
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0                        # CapabilityBoundingSet=
    assert st["NoNewPrivs"].strip() == "1"                                                   # NoNewPrivileges=yes
    assert st["Seccomp"].strip() == "2" and int(st["Seccomp_filters"]) >= 1   # SystemCallArchitectures=, Restrict*
    assert st["Umask"].strip() == "0077"                                                     # UMask=0077
    # Inside the service's own mount namespace. As root, a denied write means a read-only mount; as the service's
    # user, what it may write. A new cgroup (mkdir) works in the sandbox, not in the service (ProtectControlGroups=).
    probe = ('w() { if (: > "$1/.probe") 2>/dev/null; then rm -f "$1/.probe"; echo "$1 w"; else echo "$1 -"; fi; };'
             " for d in /usr /etc /var/lib /var/lib/citadel /tmp; do w $d; done;"
             " mkdir /sys/fs/cgroup/.probe 2>/dev/null && rmdir /sys/fs/cgroup/.probe && echo cgroup w"
             " || echo cgroup -;"
             " echo $(find /root /home -mindepth 1 | wc -l) $(ls -A /tmp | wc -l) $(stat -c %a /var/lib/citadel)")
    sd.run(["touch", "/tmp/outside-only"])
    enter = ["nsenter", f"--target={pid}", "--mount", "--"]
    assert sd.run(["sh", "-c", probe]).stdout.splitlines()[5] == "cgroup w"  # the probe can see a writable cgroup
    as_root = sd.run(enter + ["sh", "-c", probe]).stdout.splitlines()
    as_user = sd.run(enter + ["setpriv", "--reuid=citadel", "--regid=citadel", "--clear-groups", "sh", "-c",
                              probe.replace("/var/lib/citadel /tmp", "/etc/citadel /var/lib/citadel /tmp")]).stdout
    # ProtectSystem=strict and ProtectControlGroups=yes: all read-only but the state directory and the private /tmp.
    assert as_root == ["/usr -", "/etc -", "/var/lib -", "/var/lib/citadel w", "/tmp w", "cgroup -", "0 0 700"], \
        as_root  # then: ProtectHome=yes (/root and /home empty), PrivateTmp=yes (empty), StateDirectoryMode=0700
    # The user writes its state and its private /tmp; ConfigurationDirectory= is writable by mount but root's.
    assert as_user.splitlines()[3:6] == ["/etc/citadel -", "/var/lib/citadel w", "/tmp w"], as_user
    # ProtectKernelTunables= / ProtectKernelLogs=: mounts over /proc/irq, /proc/bus, /proc/kallsyms, /proc/kmsg and
    # /dev/kmsg that the sandbox does not have (/proc/sys and /sys are already read-only there).
    mounts = [set(l.split()[4] for l in sd.run(["cat", f"/proc/{p}/mountinfo"]).stdout.splitlines()) for p in (1, pid)]
    assert {"/proc/irq", "/proc/bus", "/proc/kallsyms", "/proc/kmsg", "/dev/kmsg"} <= mounts[1] - mounts[0], mounts
    ns = sd.run(["readlink", "/proc/1/ns/uts", f"/proc/{pid}/ns/uts"]).stdout.split()
    assert ns[0] != ns[1]                                                    # ProtectHostname=yes
    # LimitNOFILE=65536 / LimitMEMLOCK=infinity: systemd sets the nearest it may when it cannot raise a hard limit
    # (a container without CAP_SYS_RESOURCE, as here): never above its own hard limits.
    limits = {l[:26].strip(): l[26:].split()[:2] for l in sd.run(["cat", f"/proc/{pid}/limits"]).stdout.splitlines()}
    own = {l[:26].strip(): l[26:].split()[:2] for l in sd.run(["cat", "/proc/1/limits"]).stdout.splitlines()}
    nofile_hard = own["Max open files"][1]
    assert limits["Max open files"] == [str(min(65536, int(nofile_hard)))] * 2, (limits, own)
    assert limits["Max locked memory"] == [own["Max locked memory"][1]] * 2, (limits, own)
    # The engine stays unhindered by devices: ProtectClock= adds no device allow-list here (systemd >= 252), so the
    # GPU nodes stay reachable; older systemd allow-lists char-rtc alone (docs/OPERATIONS.md).
    d = show(sd, "DevicePolicy", "DeviceAllow")
    assert d.get("DevicePolicy") == "auto" and d.get("DeviceAllow", "") == "", d


def test_sigkill_is_restarted(sd):
    start(sd, "debug:slow")
    before = show(sd, "MainPID", "NRestarts")
    sd.run(["kill", "-KILL", before["MainPID"]])
    after = wait_for(lambda: active_with_new_pid(sd, before["MainPID"]), 30, "the restart after SIGKILL")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    assert stops(sd)[-1] == "signal killed KILL", stops(sd)
    assert http(sd, "/health")[0] == "200"


def test_hung_engine_is_killed_by_the_watchdog_and_restarted(sd):
    start(sd, "debug:hang")
    before = show(sd, "MainPID", "NRestarts")
    assert http(sd, "/health")[0] == "200"
    t0 = time.monotonic()
    # The request reaches the engine, whose step never returns: the pings stop, and 2 s later systemd aborts it.
    body = json.dumps({"model": "debug:hang", "prompt": "hello", "max_tokens": 4})
    client = subprocess.Popen(["nsenter", f"--target={sd.init_pid}", "--net", "--", "python3", "-c", HTTP,
                               f"http://127.0.0.1:{PORT}/v1/completions", sd.key, body, "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        after = wait_for(lambda: active_with_new_pid(sd, before["MainPID"]), 30, "the watchdog restart")
    finally:
        client.kill()
        client.wait()
    assert time.monotonic() - t0 >= 2.0  # not before WatchdogSec
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    result, code, status = stops(sd)[-1].split()
    assert (result, status) == ("watchdog", "ABRT") and code in ("killed", "dumped"), stops(sd)
    assert http(sd, "/health")[0] == "200"  # the new process serves (until its engine is given work)


def test_stop_drains_the_running_stream_and_exits_cleanly(sd):
    start(sd, "debug:slow")
    body = json.dumps({"model": "debug:slow", "messages": [{"role": "user", "content": "go"}],
                       "max_tokens": 300, "temperature": 0, "stream": True, "ignore_eos": True})
    client = subprocess.Popen(["nsenter", f"--target={sd.init_pid}", "--net", "--", "python3", "-c", HTTP,
                               f"http://127.0.0.1:{PORT}/v1/chat/completions", sd.key, body, "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "200"
        first = client.stdout.readline()
        assert first.startswith("data: "), first
        t0 = time.monotonic()
        sd.run(["systemctl", "stop", "citadel.service"], timeout=60)  # returns once the process has exited
        stopped_after = time.monotonic() - t0
        rest = client.stdout.read().splitlines()
    finally:
        client.kill()
        client.wait()
    lines = [l for l in rest if l]
    assert lines[-1] == "data: [DONE]", lines[-3:]
    assert not any('"error"' in l for l in lines)
    finish = json.loads(lines[-2][len("data: "):])
    assert finish["choices"][0]["finish_reason"] == "length", finish
    assert stopped_after > 0.5  # it waited for the stream (300 steps of 5 ms) rather than cutting it
    s = show(sd, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert s["ActiveState"] == "inactive" and s["Result"] == "success", s
    assert stops(sd)[-1] == "success exited 0", stops(sd)


def test_restart_limit_leaves_the_unit_failed(sd):
    # StartLimitBurst=5 in StartLimitIntervalSec=10min: the start and four restarts, then the unit stays failed.
    start(sd, "debug:slow")
    for kill in range(1, 10):
        pid = show(sd, "MainPID")["MainPID"]
        sd.run(["kill", "-KILL", pid])
        s = wait_for(lambda: show(sd, "ActiveState", "Result", "NRestarts") if show(sd, "ActiveState")["ActiveState"]
                     == "failed" else active_with_new_pid(sd, pid), 30, f"restart or failure after kill {kill}")
        if s["ActiveState"] == "failed":
            break
    # The fifth kill finds the limit spent: no sixth start, the unit is failed (Result= keeps the last exit's cause).
    assert kill == 5 and s["ActiveState"] == "failed", (kill, s)
    start(sd, "debug:slow")  # reset-failed clears the limit: an operator's restart works again
    assert show(sd, "ActiveState")["ActiveState"] == "active"
