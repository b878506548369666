"""A real systemd (the host's /lib/systemd/systemd) booted as PID 1 of private namespaces, for running Citadel's unit.

The host of these tests is shared and its PID 1 is not systemd, so the sandbox must leave it untouched: see
systemd_sandbox.sh for what is isolated and how. Here: the cgroup (a child of ours in the cgroup2 hierarchy, the root
of the new cgroup namespace), the staged units, the namespaces made with unshare(1), and the teardown (SIGKILL to the
namespace's PID 1, which the kernel turns into SIGKILL for every process in it; then the cgroup tree is removed).

why_not() says why the sandbox cannot run on this machine (None when it can); every check names the command or
file that failed, so a skip says exactly what is missing.
"""
import ctypes
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import time

HERE = pathlib.Path(__file__).resolve().parent
SYSTEMD = "/lib/systemd/systemd"
PR_SET_PDEATHSIG = 1

# The only units this systemd can see. DefaultDependencies= of a service needs sysinit.target, basic.target and
# shutdown.target, and the default slice system.slice: minimal ones here, none pulling anything in.
BASE_UNITS = {
    "citadel-test.target": "[Unit]\nDescription=Citadel system test: boots nothing but itself\n",
    "sysinit.target": "[Unit]\nDescription=sysinit (empty in the test sandbox)\n",
    "basic.target": "[Unit]\nDescription=basic (empty in the test sandbox)\n",
    "shutdown.target": "[Unit]\nDescription=shutdown (empty in the test sandbox)\nDefaultDependencies=no\n",
    "network-online.target": "[Unit]\nDescription=network online (loopback only in the test sandbox)\n",
    "system.slice": "[Unit]\nDescription=System Slice\nDefaultDependencies=no\n",
}
# Masked by name on top of being absent from the unit path: what must never run in the sandbox (the tmpfiles units
# emptied the host's /tmp in an earlier, unconfined trial), plus every unit installed on the host (see _stage()).
ALWAYS_MASKED = ["systemd-tmpfiles-setup.service", "systemd-tmpfiles-setup-dev.service",
                 "systemd-tmpfiles-clean.service", "systemd-tmpfiles-clean.timer"]
HOST_UNIT_DIRS = ["/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system", "/run/systemd/system"]


def _cgroup2_dir():
    """(mount point of the cgroup2 hierarchy, this process's cgroup in it) or raises OSError with the reason."""
    mount = None
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            mount = left.split()[4]
            break
    if mount is None:
        raise OSError("no cgroup2 hierarchy is mounted (/proc/self/mountinfo)")
    path = next((l.strip()[3:] for l in open("/proc/self/cgroup") if l.startswith("0::")), None)
    if path is None:
        raise OSError("/proc/self/cgroup has no cgroup2 entry")
    return mount, os.path.join(mount, path.lstrip("/"))


def why_not():
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts, cgroups)"
    for tool in ("unshare", "setpriv", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access(SYSTEMD, os.X_OK):
        return f"{SYSTEMD} is not installed"
    if "overlay" not in open("/proc/filesystems").read():
        return "the kernel has no overlay filesystem (/proc/filesystems)"
    try:
        _, here = _cgroup2_dir()
        probe = os.path.join(here, "citadel-probe-" + secrets.token_hex(4))
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        return f"cannot create a child cgroup in the cgroup2 hierarchy: {e}"
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--cgroup",
                        "--propagation", "private", "true"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return "unshare --pid --mount --uts --ipc --net --cgroup failed: " + r.stderr.strip()
    return None


def _remove_cgroup_tree(path):
    for root, dirs, _ in os.walk(path, topdown=False):
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                pass
    os.rmdir(path)


class Sandbox:
    """systemd as PID 1 of new namespaces, with `units` (name -> text, or None for a mask) and `etc_citadel`
    (file name -> text) installed. run(argv) runs a command inside (its mount, pid and net namespaces)."""

    def __init__(self, stage_dir, citadel_bin, units, etc_citadel, boot_timeout=30):
        self.stage = pathlib.Path(stage_dir)
        self.proc = None
        self.init_pid = None
        self.log = None
        mount, here = _cgroup2_dir()
        self.cgroup = os.path.join(here, "citadel-systemd-test-" + secrets.token_hex(4))
        self._stage(units, etc_citadel)
        self.sentinels = [os.path.join(d, ".citadel-systemd-sentinel-" + secrets.token_hex(6))
                          for d in ("/tmp", "/var/tmp")]
        for f in self.sentinels:
            pathlib.Path(f).touch()
        self._host_before = self._host_fingerprint()
        os.mkdir(self.cgroup)
        self.log = open(self.stage / "sandbox.log", "w")
        cg_procs = os.path.join(self.cgroup, "cgroup.procs")

        def enter_cgroup():  # in the child, before unshare: the new cgroup namespace is rooted at self.cgroup
            with open(cg_procs, "w") as f:
                f.write(str(os.getpid()))
            # Should this test process die without close(), unshare gets SIGKILL and (--kill-child) so does the
            # namespace's PID 1, with every process in it.
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

        try:
            self.proc = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--net", "--cgroup",
                 "--propagation", "private", "--", "sh", str(HERE / "systemd_sandbox.sh"), str(self.stage),
                 str(citadel_bin)],
                stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=enter_cgroup,
                start_new_session=True)
            self._wait_boot(boot_timeout)
        except BaseException:
            self.close()
            raise

    def _host_fingerprint(self):
        """What an escaped systemd would change first: the sentinels in the host's /tmp and /var/tmp (tmpfiles would
        delete them), kernel settings systemd writes at boot, the hostname, the host's mount table."""
        fp = {f: os.path.exists(f) for f in self.sentinels}
        for f in ("/proc/sys/kernel/core_pattern", "/proc/sys/fs/nr_open", "/proc/sys/kernel/hostname",
                  "/proc/1/mountinfo"):
            fp[f] = pathlib.Path(f).read_text()
        return fp

    def host_changes(self):
        """After close(): what differs on the host since the sandbox was made (must be nothing)."""
        now = self._host_fingerprint()
        for f in self.sentinels:
            try:
                os.unlink(f)
            except OSError:
                pass
        changed = [k for k in self._host_before if self._host_before[k] != now[k]]
        if os.path.exists(self.cgroup):
            changed.append(self.cgroup)
        return changed

    def _stage(self, units, etc_citadel):
        udir = self.stage / "units"
        udir.mkdir(parents=True)
        all_units = dict(BASE_UNITS)
        all_units.update(units)
        masked = set(ALWAYS_MASKED)
        for d in HOST_UNIT_DIRS:
            if os.path.isdir(d):
                masked.update(n for n in os.listdir(d) if "." in n and not n.endswith((".d", ".wants", ".requires")))
        for name in sorted(masked - set(all_units)):
            os.symlink("/dev/null", udir / name)
        for name, text in all_units.items():
            path = udir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if text is None:
                os.symlink("/dev/null", path)
            else:
                path.write_text(text)
        edir = self.stage / "etc-citadel"
        edir.mkdir()
        for name, text in etc_citadel.items():
            (edir / name).write_text(text)

    def _wait_boot(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the sandbox ended (rc {self.proc.returncode}) before systemd ran:\n"
                                   + self.output())
            if self.init_pid is None:
                kids = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                try:
                    pids = kids.read_text().split()
                except OSError:
                    pids = []
                if pids:
                    self.init_pid = int(pids[0])
            if self.init_pid is not None:
                r = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
                if r.stdout.strip() in ("running", "degraded"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("systemd did not come up:\n" + self.output())
            time.sleep(0.1)

    def run(self, argv, check=True, timeout=30, stdin=None):
        r = subprocess.run(["nsenter", f"--target={self.init_pid}", "--mount", "--pid", "--net", "--"] + argv,
                           capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: rc {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def output(self):
        self.log.flush()
        text = (self.stage / "sandbox.log").read_text()
        if self.init_pid is not None:
            try:  # systemd's own log: /dev/console inside, a file in the namespace's /run
                with open(f"/proc/{self.init_pid}/root/run/citadel-test/console") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def close(self):
        """Kills every process of the namespaces (SIGKILL to their PID 1) and removes the cgroup."""
        if self.proc is not None:
            if self.init_pid is not None:
                try:
                    os.kill(self.init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # unshare itself (--kill-child: its child too)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
        deadline = time.monotonic() + 30
        while os.path.isdir(self.cgroup):
            try:
                _remove_cgroup_tree(self.cgroup)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if self.log is not None and not self.log.closed:
            self.log.close()
