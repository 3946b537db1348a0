#!/bin/sh
# arena-harness: /init of the initramfs for QEMU guests (busybox sh, PID 1).
# Mounts the guest root read-only over 9p (tag "hostroot"), copies the job's files
# (the zipapp with the guest agent, its plan, the programs it runs) from
# /payload/files into a tmpfs of /payload/tmp_mib MiB, runs the agent in the guest
# root, brings the results back through the writable 9p share "out" (and framed
# on the console), then powers off. A panic reboots, and QEMU runs
# with -no-reboot, so every path ends the VM.
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
P9="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o "$P9,ro" hostroot /host || fail "cannot mount the guest root over 9p"
mount -t proc proc /host/proc
mount -t devtmpfs dev /host/dev 2>/dev/null
mount -t tmpfs -o "size=$(cat /payload/tmp_mib)m" tmp /host/tmp || fail "cannot mount a tmpfs on /tmp"
cp -R -p /payload/files /host/tmp/arena || fail "cannot copy the job's files"  # no glob: set -f
OUT=""
if mount -t 9p -o "$P9" out /host/mnt 2>/dev/null; then OUT="--out /mnt/result.json"; fi
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 HOME=/ LC_ALL=C \
    python3 /tmp/arena/allocator.pyz agent --plan /tmp/arena/plan.json $OUT $(cat /payload/agent_args)
echo "@@ARENA-HARNESS-DONE@@ rc=$?"
umount /host/mnt 2>/dev/null
sync
poweroff -f
