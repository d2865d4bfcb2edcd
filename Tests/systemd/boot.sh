#!/usr/bin/env bash
# Boots a real systemd as PID 1 of a private PID + mount + cgroup namespace, for the systemd test.
# Run it only through unshare (see test_systemd.py):
#   unshare --pid --mount --cgroup --fork --mount-proc --propagation private boot.sh BIN_DIR SERVICE_FILE CONFIG
# Before systemd starts, fresh tmpfs are mounted on /run, /tmp, /var/tmp and /var/log (so its boot units can
# never touch the machine's), and SYSTEMD_UNIT_PATH names a directory holding only this test's units.
set -euo pipefail
bin_dir=$1 service=$2 config=$3
[ "$$" -eq 1 ] || { echo "boot.sh: must be PID 1 of a new PID namespace" >&2; exit 1; }
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
# A cgroup2 view rooted at this namespace's cgroup.
mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
root=/run/clusterd-test
mkdir -p $root/units $root/bin
# CLUSTERD_BINARY: the program installed as clusterd (clusterd-example for the chaos load's echo route).
cp "$bin_dir/${CLUSTERD_BINARY:-clusterd}" $root/bin/clusterd
cp "$bin_dir/clusterctl" $root/bin/
cp "$config" $root/clusterd.json
sed -e "s|@BINDIR@|$root/bin|g" -e "s|@CONFIG@|$root/clusterd.json|g" "$service" > $root/units/clusterd.service
for t in sysinit basic multi-user network network-online sockets timers paths slices shutdown local-fs default; do
  printf '[Unit]\nDescription=%s (stub for the clusterd test)\n' "$t" > $root/units/$t.target
done
printf '[Unit]\nDescription=system slice (stub)\n' > $root/units/system.slice
# The system bus, as on a real machine: an unprivileged master asks systemd over it whether a stop
# is a restart (the private socket is root's). Debian's own units; its socket is in this /run.
for u in dbus.socket dbus.service; do [ -f /lib/systemd/system/$u ] && cp /lib/systemd/system/$u $root/units/; done
[ -f $root/units/dbus.socket ] && printf '[Unit]\nDescription=default (stub)\nWants=dbus.socket\n' > $root/units/default.target
# The service's user (systemd/clusterd.sysusers) exists in this namespace only: copies of the user
# database with it added are bind-mounted over the machine's, which stay as they were.
if ! getent passwd clusterd >/dev/null; then
  cp /etc/passwd $root/passwd; cp /etc/group $root/group
  id=$(awk -F: 'NR==FNR { used[$3] = 1; next } { used[$3] = 1 } END { for (i = 999; i >= 100; i--) if (!(i in used)) { print i; exit } }' $root/passwd $root/group)
  echo "clusterd:x:$id:$id:clusterd HTTP server:/nonexistent:/usr/sbin/nologin" >> $root/passwd
  echo "clusterd:x:$id:" >> $root/group
  mount --bind $root/passwd /etc/passwd
  mount --bind $root/group /etc/group
fi
# The inputs are copied; now /tmp and /var/tmp can be replaced too.
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"; done
# The unit's LogsDirectory= creates /var/log/clusterd: in this namespace's /var/log, not the machine's.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /var/log
exec env -i container=clusterd-test SYSTEMD_UNIT_PATH=$root/units PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --log-target=console --log-level=info --show-status=no --unit=default.target
