#!/bin/sh
# arena-harness: /init for QEMU guests reached over SSH (busybox sh, PID 1).
# Mounts the disk image (/dev/vda, ext4; QEMU runs it with snapshot=on, so the
# cached image never changes), brings up user-mode networking (QEMU's slirp:
# 10.0.2.15, gateway 10.0.2.2; the harness forwards a loopback port to :22),
# and starts the image's sshd. The harness then works over SSH and ends the VM.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "@@ARENA-HARNESS-BOOTED@@ $(cut -d' ' -f1 /proc/uptime)"
fail() { echo "arena-harness: $*"; poweroff -f; }
while read -r m; do
    [ -n "$m" ] && insmod "/modules/$m.ko" 2>/dev/null
done < /modules/order
mount -t ext4 /dev/vda /host || fail "cannot mount the disk image /dev/vda"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts && mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
mkdir -p /host/run/sshd
ip link set lo up
ip link set eth0 up || fail "no network interface"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
chroot /host /usr/sbin/sshd -e || fail "sshd did not start"
# sshd writes its pid file once it listens.
i=0; while [ ! -s /host/run/sshd.pid ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "@@ARENA-HARNESS-SSHD-READY@@"
while :; do sleep 3600; done
