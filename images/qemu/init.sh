#!/bin/sh
# arena-harness: /init of the initramfs for QEMU guests (busybox sh, PID 1).
# Loads the 9p modules; for a saved guest (arena.snapshot=1 on the kernel's command line) it then
# says so and waits, before any share is mounted (QEMU refuses to save a guest with a 9p export
# mounted): the harness saves the VM here once, and each later run resumes it and writes one line
# "GO EPOCH SEED" (the clock and some entropy: a resumed guest has the saved ones). Then it mounts
# the job's files read-only over 9p (tag "job": the zipapp with the guest agent, its plan, the
# programs it runs, the size of /tmp and the agent's extra arguments), the guest root read-only
# (tag "hostroot"; cache=loose, as nothing changes it during a run: the guest's page cache serves
# repeated reads, which under TCG took Python's start from 0.33 s to 0.23 s and its imports from
# 0.8 s to 0.46 s), copies the job into a tmpfs, runs the agent in the guest root, brings the
# results back through the writable share "out" (and framed on the console), then powers off.
# A panic reboots, and QEMU runs with -no-reboot, so every path ends the VM.
export PATH=/bin
set -f
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "@@ARENA-HARNESS-BOOTED@@ $(cut -d' ' -f1 /proc/uptime)"
fail() { echo "arena-harness: $*"; echo "@@ARENA-HARNESS-DONE@@ rc=125"; poweroff -f; }
while read -r m; do
    [ -n "$m" ] && insmod "/modules/$m.ko" 2>/dev/null
done < /modules/order
case " $(cat /proc/cmdline) " in
*" arena.snapshot=1 "*)
    echo "@@ARENA-HARNESS-SNAPSHOT-READY@@"
    read -r GO EPOCH SEED
    [ "$GO" = GO ] || fail "expected the harness's GO line, got: $GO"
    date -s "@$EPOCH" >/dev/null 2>&1
    echo "$SEED" > /dev/urandom
    echo "@@ARENA-HARNESS-RESUMED@@ $(cut -d' ' -f1 /proc/uptime)";;
esac
P9="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o "$P9,ro" job /job || fail "cannot mount the job's files over 9p"
mount -t 9p -o "$P9,ro,cache=loose" hostroot /host || fail "cannot mount the guest root over 9p"
mount -t proc proc /host/proc
mount -t devtmpfs dev /host/dev 2>/dev/null
mount -t tmpfs -o "size=$(cat /job/tmp_mib)m" tmp /host/tmp || fail "cannot mount a tmpfs on /tmp"
cp -R -p /job/files /host/tmp/arena || fail "cannot copy the job's files"  # no glob: set -f
OUT=""
if mount -t 9p -o "$P9" out /host/mnt 2>/dev/null; then OUT="--out /mnt/result.json"; fi
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 HOME=/ LC_ALL=C \
    python3 /tmp/arena/allocator.pyz agent --plan /tmp/arena/plan.json $OUT $(cat /job/agent_args)
echo "@@ARENA-HARNESS-DONE@@ rc=$?"
umount /host/mnt 2>/dev/null
sync
poweroff -f
