#!/bin/sh
# Boots a private systemd for tests/system/test_systemd_unit.py. It runs as PID 1 of new pid, mount, cgroup, uts,
# ipc and net namespaces that the test made with unshare(1), and ends by exec'ing systemd. Nothing may reach the host:
#   - mount propagation is private, and every mount inherited from the host is made read-only in this namespace
#     (remount,bind changes the mount's flags, never the filesystem's), so a stray write fails with EROFS;
#   - systemd's writable places are fresh: tmpfs on /run, /tmp, /var/tmp, /var/log, /dev/shm, /usr/local/bin, and
#     /etc and /var are overlays whose upper layer lives in this namespace's /run (the host's files are never written);
#   - /proc/sys, /proc/sysrq-trigger and /sys stay read-only (kernel-wide settings: systemd would otherwise write
#     core_pattern and fs.nr_open); cgroup2 is mounted at the root of this cgroup namespace, a child cgroup the test
#     made and removes;
#   - systemd loads units from $STAGE/units alone (SYSTEMD_UNIT_PATH), runs no generators, and has neither
#     CAP_SYS_MODULE nor CAP_SYS_TIME (no kernel modules, no clock or time-zone change);
#   - /dev/console is a file here: systemd's own log.
# The test never shuts this systemd down (systemd-shutdown would remount filesystems): it SIGKILLs PID 1, which ends
# every process of the namespace.
# Usage: systemd_sandbox.sh STAGE CITADEL_BIN. STAGE holds units/ and etc-citadel/; it is copied to /run/citadel-test.
set -eu
stage=$1
bin=$2
[ "$$" = 1 ] || { echo "systemd_sandbox.sh: must run as PID 1 of a new pid namespace" >&2; exit 2; }

mount -n --make-rprivate /
# Every inherited mount read-only (per mount). mountinfo writes a space in a path as \040: split on blanks, then
# decode.
for mp in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  mount -n -o remount,bind,ro "$(printf '%b' "$mp")"
done
# After that, the only writable places are the ones mounted below.
mount -n -t proc -o nosuid,nodev,noexec proc /proc
for p in /proc/sys /proc/sysrq-trigger; do
  [ -e "$p" ] || continue
  mount -n --bind "$p" "$p"
  mount -n -o remount,bind,ro "$p"
done
mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mount -n -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/citadel-test/overlay
cp -R "$stage"/. /run/citadel-test/
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
for d in etc var; do
  mkdir -p /run/citadel-test/overlay/$d/upper /run/citadel-test/overlay/$d/work
  mount -n -t overlay overlay \
    -o lowerdir=/$d,upperdir=/run/citadel-test/overlay/$d/upper,workdir=/run/citadel-test/overlay/$d/work /$d
done
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mount -n -t tmpfs -o mode=0755,nosuid,nodev tmpfs /var/log
mkdir -p /var/log/journal

# What the Ansible role installs: the citadel user and group, the config, the binary at the unit's path.
if ! grep -q '^citadel:' /etc/passwd; then
  echo 'citadel:x:991:991:Citadel:/var/lib/citadel:/usr/sbin/nologin' >> /etc/passwd
  echo 'citadel:x:991:' >> /etc/group
fi
mkdir -p /etc/citadel
cp /run/citadel-test/etc-citadel/* /etc/citadel/
chmod 0644 /etc/citadel/*
mount -n -t tmpfs -o mode=0755 tmpfs /usr/local/bin
touch /usr/local/bin/citadel
mount -n --bind "$bin" /usr/local/bin/citadel

: > /run/citadel-test/console
mount -n --bind /run/citadel-test/console /dev/console
mkdir -p /run/citadel-test/empty
echo booting > /run/citadel-test/sandbox-ready

exec setpriv --bounding-set -sys_module,-sys_time,-sys_rawio,-wake_alarm -- \
  env -i container=other PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  SYSTEMD_UNIT_PATH=/run/citadel-test/units \
  SYSTEMD_GENERATOR_PATH=/run/citadel-test/empty SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/citadel-test/empty \
  /lib/systemd/systemd --system --unit=citadel-test.target --show-status=no --log-target=console --log-level=info
