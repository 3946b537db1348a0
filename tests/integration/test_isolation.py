"""Adversarial guests: each one is contained, reported and cleaned up.

Guests are untrusted code. These guests try to mount and write host paths,
write another target's results, read the harness's files, fork-bomb, close
their output and sleep forever, and leave processes behind that ignore SIGTERM
in a session of their own. UML guests are root inside their kernel; the local
and qemu-user backends run their program directly on the host kernel, in the
same jail (:mod:`harness.backends.jail`), so the local cases below cover both.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import harness
from harness import config, payload, proc
from harness.backends import jail
from harness.backends.base import RunContext
from harness.backends.local import LocalBackend
from harness.model import Status
from harness.results import classify
from tests.conftest import require_tool
from tests.integration.test_uml import boot

pytestmark = [pytest.mark.integration]

VIEW_TOP = {"arena", "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "mnt", "proc", "run", "sbin", "sys",
            "tmp", "usr", "var"}


def processes(marker: str) -> List[str]:
    """Host processes whose command line contains ``marker`` (ours excluded)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path("/proc", pid, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append("%s %s" % (pid, cmd))
    return found


def uid_processes(uid: int) -> List[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat("/proc/" + pid).st_uid == uid:
                found.append(pid)
        except OSError:
            continue
    return found


def run_local_jailed(tmp: Path, script: str, timeout: float) -> Dict[str, object]:
    """``sh -c script`` in the local backend's jail, as a target's probe would run, under ``timeout``."""
    target = config.parse("targets:\n  - name: hostile\n    backend: local\n", "t.yaml").targets[0]
    backend = LocalBackend(target)
    work = tmp / "work"
    work.mkdir()
    ctx = RunContext("adv%d" % os.getpid(), target, ["go-2012"], work, payload.build(tmp), tmp / "console.log",
                     timeout)
    try:
        argv = backend.jailed(ctx, jail.View(proc=True), ["/bin/sh", "-c", script])
        slot = backend._slot
        start = time.monotonic()
        completed = proc.run(argv, timeout=timeout, log_path=ctx.log_path, grace=1.0)
        took = time.monotonic() - start
    finally:
        backend.shutdown()
    return {"completed": completed, "took": took, "uid": slot.uid if slot else None,
            "log": ctx.log_path.read_text()}


# -- UML: hostfs is the way out, and it must lead nowhere ----------------------------------------------
def test_a_uml_guest_sees_only_its_view_of_the_host(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET\n")
    secret.chmod(0o644)
    harness_src = Path(harness.__file__).resolve().parent / "cli.py"
    body = f"""
echo "TOP: $(ls / | tr '\\n' ' ')"
mount -t tmpfs none /mnt 2>/dev/null; mkdir -p /mnt/h
for p in / /root /home /work /proc {tmp_path} {harness_src.parent} /../../.. /mnt/arena/../../..; do
    if mount -t hostfs -o "$p" none /mnt/h 2>/dev/null; then
        echo "MOUNTED $p: $(ls /mnt/h | tr '\\n' ' ')"
        cat /mnt/h/secret.txt /mnt/h/cli.py 2>/dev/null | head -c 40
        umount /mnt/h
    else
        echo "REFUSED $p"
    fi
done
cat {secret} 2>/dev/null || echo NO_SECRET
cat {harness_src} 2>/dev/null | head -c 40 || true
if cat /etc/shadow >/dev/null 2>&1; then echo READ_SHADOW; else echo NO_SHADOW; fi
echo @@ARENA-HARNESS-DONE@@
poweroff -f
"""
    _, ctx, run = boot(tmp_path, body)
    log = ctx.log_path.read_text()
    top = next(ln for ln in log.splitlines() if ln.startswith("TOP: "))
    assert set(top[5:].split()) <= VIEW_TOP, top
    assert "TOPSECRET" not in log and "NO_SECRET" in log
    assert "import" not in log  # not a line of the harness's source
    assert "READ_SHADOW" not in log and "NO_SHADOW" in log  # the host's /etc, read as the guest's uid
    assert "REFUSED %s" % tmp_path in log and "REFUSED %s" % harness_src.parent in log
    # Whatever did mount ("/", or ".." that stops at the view's root) shows the view, not the host.
    for line in log.splitlines():
        if line.startswith("MOUNTED "):
            listing = set(line.split(":", 1)[1].split())
            assert listing <= VIEW_TOP | {"arena", "boot", "out", "share", "uml"}, line
    assert run.panic is None


def test_one_uml_guest_cannot_write_another_targets_results(tmp_path: Path) -> None:
    """The attack that turned a crash into a pass: guest A rewrites guest B's result while both run."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(mode=0o755)
    b_dir.mkdir(mode=0o755)
    b_out = b_dir / "work" / "out"
    forged = '{"forged": true}'
    attacker = f"""
mount -t tmpfs none /mnt; mkdir -p /mnt/h
for i in $(seq 40); do
    for p in {b_out} {b_dir} /mnt/arena/out/../../../{b_out}; do
        if mount -t hostfs -o "$p" none /mnt/h 2>/dev/null; then
            echo '{forged}' > /mnt/h/result.json 2>/dev/null && echo "WROTE $p"
            umount /mnt/h
        fi
    done
    sleep 0.1
done
echo ATTACK_OVER
echo @@ARENA-HARNESS-DONE@@
poweroff -f
"""
    victim = """
mount -t hostfs -o /mnt/arena/out none /mnt/arena/boot/share || echo NO_SHARE
echo '{"victim": "own"}' > /mnt/arena/boot/share/result.json
sleep 3
echo '{"victim": "final"}' > /mnt/arena/boot/share/result.json
sync
echo @@ARENA-HARNESS-DONE@@
poweroff -f
"""
    out: Dict[str, object] = {}

    def go(name: str, d: Path, body: str) -> None:
        out[name] = boot(d, body)

    threads = [threading.Thread(target=go, args=("a", a_dir, attacker)),
               threading.Thread(target=go, args=("b", b_dir, victim))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    a_log = (a_dir / "console.log").read_text()
    assert "ATTACK_OVER" in a_log and "WROTE" not in a_log
    assert (b_out / "result.json").read_text() == '{"victim": "final"}\n'


def test_uml_guests_run_as_distinct_uids_owning_only_their_results(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("guest uids are given only by a root harness (unprivileged: a user namespace)")
    body = "sleep 2\necho @@ARENA-HARNESS-DONE@@\npoweroff -f\n"
    seen: Dict[str, int] = {}

    def go(name: str) -> None:
        d = tmp_path / name
        d.mkdir(mode=0o755)
        backend, ctx, _ = boot(d, body)
        st = os.stat(ctx.workdir / "out")
        seen[name] = st.st_uid
        assert st.st_mode & 0o777 == 0o700

    threads = [threading.Thread(target=go, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(seen) == 2 and seen["x"] != seen["y"]
    assert all(uid >= jail.UID_BASE for uid in seen.values())


def test_a_uml_fork_bomb_is_contained_and_cleaned_up(tmp_path: Path) -> None:
    body = "echo BOMB\nb() { b | b & }; b\nsleep 1000\n"
    start = time.monotonic()
    backend, ctx, run = boot(tmp_path, body, timeout=20)
    assert time.monotonic() - start < 20 + 8
    rec = classify(ctx.target, "go-2012", run)
    assert rec.status in (Status.TIMEOUT, Status.PANIC, Status.ERROR), rec
    assert processes(backend.umid(ctx)) == []


def test_a_uml_guest_that_goes_silent_times_out(tmp_path: Path) -> None:
    body = "exec >/dev/null 2>&1 </dev/null\nsleep 1000\n"
    backend, ctx, run = boot(tmp_path, body, timeout=8)
    assert run.timed_out
    assert processes(backend.umid(ctx)) == []


# -- the host kernel (local, qemu-user): the same jail, a PID namespace, a uid of its own -----------------
def test_a_local_guest_sees_only_its_view(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET\n")
    secret.chmod(0o644)
    script = ("echo TOP $(ls /); cat %s || echo NO_SECRET; echo x > /usr/pwn || echo NO_WRITE_USR; "
              "echo x > /tmp/ok && echo TMP_OK; ls /proc | grep -c '^[0-9]' | sed 's/^/PIDS /'; id -u | sed 's/^/UID /'"
              % secret)
    r = run_local_jailed(tmp_path, script, timeout=20)
    log = str(r["log"])
    top = next(ln for ln in log.splitlines() if ln.startswith("TOP "))
    assert set(top.split()[1:]) <= VIEW_TOP, top
    assert "TOPSECRET" not in log and "NO_SECRET" in log and "NO_WRITE_USR" in log and "TMP_OK" in log
    pids = int(next(ln for ln in log.splitlines() if ln.startswith("PIDS ")).split()[1])
    assert pids < 10  # its own PID namespace: it sees itself, not the host's processes
    if os.geteuid() == 0:
        assert "UID %d" % r["uid"] in log
    assert not Path("/tmp/ok").exists() or Path("/tmp/ok").stat().st_mtime < time.time() - 60


def test_a_local_guest_that_closes_stdout_and_sleeps_forever_times_out(tmp_path: Path) -> None:
    marker = "1000.%d" % os.getpid()
    r = run_local_jailed(tmp_path, "exec >&- 2>&-; exec sleep %s" % marker, timeout=4)
    completed = r["completed"]
    assert isinstance(completed, proc.Completed) and completed.timed_out
    assert float(str(r["took"])) < 4 + 4
    assert processes(marker) == []


def test_a_local_guest_that_ignores_sigterm_under_setsid_leaves_nothing(tmp_path: Path) -> None:
    marker = "1000.%d1" % os.getpid()
    script = ("setsid sh -c 'trap \"\" TERM HUP INT; exec sleep %s' </dev/null >/dev/null 2>&1 & "
              "sleep 0.5; echo ESCAPED; trap '' TERM; sleep %s" % (marker, marker))
    r = run_local_jailed(tmp_path, script, timeout=3)
    assert "ESCAPED" in str(r["log"])
    assert isinstance(r["completed"], proc.Completed) and r["completed"].timed_out
    time.sleep(0.5)
    assert processes(marker) == []


def test_a_local_guest_that_exits_leaving_a_setsid_child_leaves_nothing(tmp_path: Path) -> None:
    marker = "1000.%d2" % os.getpid()
    script = ("setsid sh -c 'trap \"\" TERM HUP; exec sleep %s' </dev/null >/dev/null 2>&1 & "
              "sleep 0.3; echo BYE" % marker)
    r = run_local_jailed(tmp_path, script, timeout=20)
    assert "BYE" in str(r["log"]) and float(str(r["took"])) < 10
    time.sleep(0.5)
    assert processes(marker) == []


def test_a_local_fork_bomb_is_capped_and_cleaned_up(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the per-guest process cap comes with a guest uid of its own (root harness)")
    before = len([p for p in os.listdir("/proc") if p.isdigit()])
    r = run_local_jailed(tmp_path, "b() { b | b & }; b; sleep 1000", timeout=6)
    uid: Optional[int] = r["uid"]  # type: ignore[assignment]
    assert uid is not None and r["completed"].timed_out  # type: ignore[union-attr]
    time.sleep(1)
    assert uid_processes(uid) == []
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) < before + 20


def test_qemu_user_guests_run_in_the_same_jail(tmp_path: Path) -> None:
    """The shipped qemu-user target still works jailed, and reports the emulated machine."""
    from harness import runner

    require_tool("qemu_user", "qemu-aarch64-static", "sudo apt-get install -y qemu-user-static")
    target = config.load().select(["qemu-user-arm64-4g"])[0]
    doc = runner.run([target], policies=["go-2012"], artifacts=tmp_path)
    (rec,) = doc.records
    assert rec.status is Status.PASS, rec.detail
    assert rec.machine == "aarch64"


# -- QEMU: the 9p shares ---------------------------------------------------------------------------------
HOSTILE = r'''
import os, subprocess
def say(*a): print("HOSTILE", *a, flush=True)
say("TOP", " ".join(sorted(os.listdir("/"))))
say("ROOT_MOUNT", [ln.split()[3] for ln in open("/proc/mounts") if ln.split()[1] == "/"][-1])
for p in ("/etc/passwd", "/usr/bin/pwned", "/pwned"):
    try:
        open(p, "a").write("x"); say("WROTE", p)
    except OSError as e:
        say("REFUSED", p, e.errno)
for p in ("/root", "/home", "/work", "/etc/shadow", SECRET):
    try:
        say("READ", p, os.listdir(p) if os.path.isdir(p) else open(p).read(20))
    except OSError as e:
        say("CANNOT_READ", p, e.errno)
os.makedirs("/tmp/rw", exist_ok=True)
r = subprocess.run(["mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L,rw", "hostroot", "/tmp/rw"],
                   capture_output=True, text=True)
if r.returncode != 0:  # the tag is in use: the guest cannot get a second, writable mount of it
    say("NO_RW_REMOUNT", r.returncode)
else:
    try:
        open("/tmp/rw/pwned-rw", "w").write("x"); say("WROTE_RW_REMOUNT")
    except OSError as e:
        say("REFUSED_RW_REMOUNT", e.errno)
try:
    open("/mnt/suid", "w").write("#!/bin/sh\n"); os.chmod("/mnt/suid", 0o4755); say("SUID_MADE")
except OSError as e:
    say("NO_SUID", e.errno)
say("END")
'''


def test_a_qemu_guest_sees_only_its_view_and_writes_only_its_results(tmp_path: Path) -> None:
    import zipapp

    from harness import runner

    require_tool("qemu", "qemu-system-x86_64", "sudo apt-get install -y qemu-system-x86")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET\n")
    src = tmp_path / "hostile"
    src.mkdir()
    (src / "__main__.py").write_text("SECRET = %r\n" % str(secret) + HOSTILE)
    pyz = tmp_path / "hostile.pyz"
    zipapp.create_archive(src, pyz)
    target = config.load().select(["qemu-x86_64"])[0]
    real_build = payload.build

    def hostile_build(d: Path) -> Path:
        out = real_build(d)
        out.write_bytes(pyz.read_bytes())
        return out

    import harness.runner as runner_mod

    original = runner_mod.payload.build
    runner_mod.payload.build = hostile_build  # type: ignore[assignment]
    try:
        doc = runner.run([target], policies=["go-2012"], artifacts=tmp_path / "out")
    finally:
        runner_mod.payload.build = original  # type: ignore[assignment]
    (rec,) = doc.records
    log = Path(rec.log or "").read_text()
    assert "HOSTILE END" in log, log[-2000:]
    top = next(ln for ln in log.splitlines() if "HOSTILE TOP" in ln).split("HOSTILE TOP", 1)[1].split()
    assert set(top) <= VIEW_TOP, top
    # The root: read-only. A resumed guest's is an overlay, its warm files (copied into the guest's memory
    # before the save) over the root's share; a cold one's is the share itself, cached in the guest
    # (cache=loose: nothing changes it during a run). Either way QEMU exports the share readonly=on.
    options = next(ln for ln in log.splitlines() if "HOSTILE ROOT_MOUNT" in ln).split()[-1].split(",")
    assert "ro" in options and ("loose" in options or "lowerdir=/warm:/lower" in options), options
    assert "HOSTILE WROTE" not in log and "WROTE_RW_REMOUNT" not in log
    assert "TOPSECRET" not in log and "HOSTILE READ" not in log
    assert "CANNOT_READ %s" % secret in log and "CANNOT_READ /etc/shadow" in log
    assert not Path("/pwned").exists() and not Path("/usr/bin/pwned").exists()
    assert rec.status is Status.ERROR  # the hostile payload printed no result


def test_a_uml_guest_that_floods_its_console_is_capped(tmp_path: Path) -> None:
    """About 300 MB of console output: the log keeps its head and tail, and the harness's memory stays flat."""
    import resource

    body = ("i=0; while [ $i -lt 40 ]; do head -c 8000000 /dev/zero | tr '\\\\0' A | fold -w 1000; i=$((i+1)); done\n"
            "echo FLOOD_OVER\necho @@ARENA-HARNESS-DONE@@\npoweroff -f\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, ctx, run = boot(tmp_path, body, timeout=120)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    size = ctx.log_path.stat().st_size
    log_tail = ctx.log_path.read_bytes()[-2 * proc.OUTPUT_TAIL:].decode(errors="replace")
    assert size <= proc.OUTPUT_HEAD + proc.OUTPUT_TAIL + (1 << 20), size
    assert "output capped" in ctx.log_path.read_text(errors="replace")
    assert "FLOOD_OVER" in log_tail  # the tail (where results and last words are) is kept
    assert grew_mib < 64, grew_mib
    assert not run.timed_out


def test_an_unprivileged_jail_cannot_be_climbed_out_of_and_has_no_network(tmp_path: Path) -> None:
    """Without root the jail is a user namespace, where the guest is root: chroot and ".." must lead
    nowhere (the view is pivoted to, and the old root detached), and there is no network."""
    import shutil
    import subprocess

    from harness.backends import nsexec

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("becoming an unprivileged user for this test needs root and setpriv (util-linux)")
    d = Path(tempfile_dir())
    try:
        (d / "v").mkdir()
        os.chown(d / "v", 65534, 65534)
        probe = d / "esc.py"
        probe.write_text(
            "import os, socket\n"
            "os.makedirs('/tmp/x', exist_ok=True)\n"
            "os.chroot('/tmp/x')\n"
            "[os.chdir('..') for _ in range(40)]\n"
            "os.chroot('.')\n"
            "print('TOP', ' '.join(sorted(os.listdir('/'))))\n"
            "try:\n"
            "    socket.create_connection(('127.0.0.1', 22), timeout=2); print('NET connected')\n"
            "except OSError as e:\n"
            "    print('NET', e.errno)\n")
        probe.chmod(0o644)
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
             nsexec.__file__, "--view", str(d / "v"), "--userns", "--ro", "%s:/mnt/arena/esc.py" % probe, "--",
             "/usr/bin/python3", "/mnt/arena/esc.py"], capture_output=True, text=True, timeout=60, cwd="/")
        assert out.returncode == 0, out.stderr
        top = next(ln for ln in out.stdout.splitlines() if ln.startswith("TOP ")).split()[1:]
        assert set(top) <= VIEW_TOP and "root" not in top and "work" not in top and "home" not in top, top
        assert "NET connected" not in out.stdout and "NET " in out.stdout
    finally:
        shutil.rmtree(d, ignore_errors=True)


def tempfile_dir() -> str:
    import tempfile

    d = tempfile.mkdtemp(prefix="arena-ujail-", dir="/tmp")
    os.chmod(d, 0o755)  # the unprivileged user reaches its view's mount point
    return d


def test_a_uml_guest_cannot_make_the_harness_read_a_host_file_as_its_result(tmp_path: Path) -> None:
    """The results directory is the guest's: a symlink there must not make the harness (root) read, and
    report, a file the guest cannot see. Only a regular file is read, and at most 16 MiB of it."""
    from harness.backends.base import RESULT_MAX

    secret = tmp_path / "root-only.json"
    secret.write_text('[{"schema": 1, "policy": "go-2012", "outcome": "ROOT-ONLY-SECRET"}]')
    secret.chmod(0o600)
    body = f"""
mount -t hostfs -o /mnt/arena/out none /mnt/arena/boot/share
ln -s {secret} /mnt/arena/boot/share/result.json && echo LINKED
echo @@ARENA-HARNESS-DONE@@
poweroff -f
"""
    _, ctx, run = boot(tmp_path, body)
    log = ctx.log_path.read_text()
    assert "LINKED" in log
    assert run.channel != "share" and "ROOT-ONLY-SECRET" not in str(run.documents)
    assert "result file ignored" in log, log[-600:]
    assert RESULT_MAX == 16 << 20
