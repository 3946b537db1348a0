#!/bin/sh
# arena-harness: /init of the initramfs for QEMU guests (busybox sh, PID 1).
# Loads the 9p modules; for a saved guest (arena.snapshot=1 on the kernel's command line) it then
# copies what Python reads to start from the guest root into its memory (where the kernel has
# overlayfs: below), unmounts the root again, says so and waits, with no share mounted (QEMU refuses
# to save a guest with a 9p export mounted): the harness saves the VM here once, and each later run
# resumes it and writes one line "GO EPOCH SEED" (the clock and some entropy: a resumed guest has the
# saved ones). Then it mounts
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
P9="trans=virtio,version=9p2000.L,msize=262144"
GUEST_ENV="PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 HOME=/ LC_ALL=C"
# What Python reads to start and to import what the agent and the allocator import (the rest of the
# standard library stays on the share): listed by a Python of the guest root itself.
WARM_PY='import importlib, sys
for m in """argparse base64 binascii bisect bz2 collections contextlib ctypes errno fcntl fnmatch functools
 gettext json locale lzma math operator platform random re resource runpy select selectors shlex shutil signal
 struct subprocess tempfile textwrap threading traceback typing warnings weakref zipfile zipimport zlib""".split():
    try:
        importlib.import_module(m)
    except Exception:
        pass
files = {sys.executable} | {ln.split(None, 5)[5].strip() for ln in open("/proc/self/maps") if len(ln.split()) > 5}
for m in list(sys.modules.values()):
    files |= {f for f in (getattr(m, "__file__", None), getattr(m, "__cached__", None)) if f}
print("\n".join(sorted(f for f in files if f.startswith("/") and "\n" not in f)))'
WARM=""
case " $(cat /proc/cmdline) " in
*" arena.snapshot=1 "*)
    # Before the save, and only where the kernel has overlayfs: those files copied from the guest root into
    # a tmpfs, which the saved guest keeps in its memory; after the resume they lie over the root's share
    # (overlayfs, the tmpfs first), so that Python starts from memory. The share itself is unmounted
    # again before the save (QEMU refuses to save a guest with a 9p export mounted).
    mkdir -p /lower /warm
    case "$(cat /proc/filesystems)" in
    *overlay*)
        if mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower; then
            mount -t proc proc /lower/proc
            chroot /lower /usr/bin/env -i $GUEST_ENV python3 -c "$WARM_PY" > /warm.list 2>/dev/null
            umount /lower/proc
            mount -t tmpfs -o mode=0755 warm /warm
            n=0
            while read -r f; do
                mkdir -p "/warm${f%/*}" && cp -pd "/lower$f" "/warm$f" 2>/dev/null && n=$((n + 1))
            done < /warm.list
            echo "warm: $n files copied into memory"
            if umount /lower; then WARM=1; else umount -l /lower; fi
        fi;;
    esac
    echo "@@ARENA-HARNESS-SNAPSHOT-READY@@"
    read -r GO EPOCH SEED
    [ "$GO" = GO ] || fail "expected the harness's GO line, got: $GO"
    date -s "@$EPOCH" >/dev/null 2>&1
    echo "$SEED" > /dev/urandom
    # RESUMED once a timer has fired: QEMU 7.2 on riscv64 does not re-arm a timer that was pending at
    # the save, and from some saved states the guest's timer interrupts never come back (its sleeps, a
    # power-off, never end). The harness waits for this line and drops a saved state that never says it.
    sleep 0.01
    echo "@@ARENA-HARNESS-RESUMED@@ $(cut -d' ' -f1 /proc/uptime)";;
esac
mount -t 9p -o "$P9,ro" job /job || fail "cannot mount the job's files over 9p"
ROOT=""
if [ -n "$WARM" ] && mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower; then
    if mount -t overlay -o ro,lowerdir=/warm:/lower overlay /host; then ROOT=warm; else umount /lower; fi
fi
if [ -z "$ROOT" ]; then
    mount -t 9p -o "$P9,ro,cache=loose" hostroot /host || fail "cannot mount the guest root over 9p"
fi
mount -t proc proc /host/proc
mount -t devtmpfs dev /host/dev 2>/dev/null
mount -t tmpfs -o "size=$(cat /job/tmp_mib)m" tmp /host/tmp || fail "cannot mount a tmpfs on /tmp"
cp -R -p /job/files /host/tmp/arena || fail "cannot copy the job's files"  # no glob: set -f
OUT=""
if mount -t 9p -o "$P9" out /host/mnt 2>/dev/null; then OUT="--out /mnt/result.json"; fi
chroot /host /usr/bin/env -i $GUEST_ENV \
    python3 /tmp/arena/allocator.pyz agent --plan /tmp/arena/plan.json $OUT $(cat /job/agent_args)
echo "@@ARENA-HARNESS-DONE@@ rc=$?"
umount /host/mnt 2>/dev/null
sync
poweroff -f
