"""A pristine Debian 12 set up from nothing: what scripts/setup.sh installs is all a run needs.

A minbase root (no package beyond Debian's required ones, python3 and sudo) is
built from the archive by the image pipeline, imported into the Docker daemon
(both cached by their inputs), and a container from it gets a copy of the
committed tree (``git archive HEAD``: never the work tree) and, of this
machine, only what a new machine on this network has: the CA certificates and
the proxy settings. In it, ``./scripts/setup.sh`` runs, then targets of every
kind that works in a container. Every result must pass. A green CI on a used
machine proves nothing about a new one; this test does.

Kinds, and why: local; qemu-user on a foreign architecture (a foreign root
filesystem: mmdebstrap, arch-test, binfmt); a QEMU TCG guest; UML (its jail
builds mount namespaces inside the container); Docker (the daemon setup.sh
starts inside, on an anonymous volume). SSH is covered by its own tests against
an sshd they start, the same in a container as here.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Dict

import pytest

import images
from harness.backends.docker import LABEL
from harness.plugin import skip_or_fail
from tests.conftest import require_docker

pytestmark = [pytest.mark.integration, pytest.mark.pristine]

REPO = Path(__file__).resolve().parents[2]
ROOT = images.Rootfs("amd64", "bookworm", ("ca-certificates", "python3", "sudo"), variant="minbase")
IMAGE_REPO = "arena-harness/pristine"
TARGETS = ["local", "qemu-user-riscv64-256g", "qemu-x86_64", "uml", "docker-amd64"]
DEADLINE = 1500.0  # seconds: set-up (about 1 min of packages) and cold image builds included
if os.environ.get("HARNESS_PRISTINE_FULL"):
    DEADLINE = 5400.0
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def pristine_image(c: Any) -> str:
    tarball = images.RootfsTarball(ROOT)
    tag = "%s:%s" % (IMAGE_REPO, tarball.key())
    try:
        c.images.get(tag)
        return tag
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound: import it below
        pass
    tar = images.Cache().get(tarball, lambda msg: None) / "rootfs.tar"
    repo, _, version = tag.partition(":")
    c.api.import_image_from_file(str(tar), repository=repo, tag=version, changes=["LABEL %s=base" % LABEL])
    return tag


def committed_tree() -> bytes:
    """``git archive HEAD`` under ``src/``, plus this machine's CA certificates: nothing else of it."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        skip_or_fail("pristine", "the pristine test needs a git checkout and git (sudo apt-get install -y git)")
    tree = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "--prefix=src/", "HEAD"],
                          check=True, capture_output=True).stdout
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        with tarfile.open(fileobj=io.BytesIO(tree)) as src:
            for member in src.getmembers():
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
        for crt in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
            info = tarfile.TarInfo("usr/local/share/ca-certificates/" + crt.name)
            data = crt.read_bytes()
            info.size, info.mode = len(data), 0o644
            out.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SCRIPT = """
set -eu
update-ca-certificates >/dev/null 2>&1 || true
cd /src
start=$(date +%s)
./scripts/setup.sh
echo "PRISTINE setup took $(( $(date +%s) - start ))s"
start=$(date +%s)
rc=0
.venv/bin/arena-harness run --jobs 2 --json /out/results.json {only} || rc=$?
echo "PRISTINE run took $(( $(date +%s) - start ))s, exit $rc"
.venv/bin/arena-harness doctor --strict {only} >/dev/null 2>&1 && echo "PRISTINE doctor strict ok"
{full}
"""

# HARNESS_PRISTINE_FULL=1: also the README's two commands, whole, as a new user runs them (about 20 min;
# for measurements, not for every CI run). test.sh there skips this test (no container in a container).
FULL = """
start=$(date +%s); rc=0
./scripts/matrix.sh --json /out/matrix.json -q || rc=$?
echo "PRISTINE matrix.sh took $(( $(date +%s) - start ))s, exit $rc"
start=$(date +%s); rc=0
./scripts/test.sh -k 'not pristine' -q || rc=$?
echo "PRISTINE test.sh took $(( $(date +%s) - start ))s, exit $rc"
"""


def test_a_pristine_debian_sets_up_and_passes_every_kind_of_target(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_or_fail("pristine", "the pristine test builds a root filesystem and runs a privileged container: "
                     "run as root")
    c = require_docker("pristine")
    image = pristine_image(c)
    only = " ".join("--only %s" % t for t in TARGETS)
    env: Dict[str, str] = {k: os.environ[k] for k in PROXY_VARS if k in os.environ}
    env["DEBIAN_FRONTEND"] = "noninteractive"
    from docker.types import Mount

    # What privileged work needs on these machines (--privileged itself fails here: the machine lacks
    # CAP_SYS_RESOURCE): every capability but that one, no seccomp or AppArmor filter, /proc/sys writable
    # (binfmt_misc; the CLI's systempaths=unconfined is, in the API, empty masked and read-only paths),
    # every device, an exec-able /dev/shm, and an anonymous volume for the inner dockerd.
    host_config = c.api.create_host_config(
        network_mode="host", cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        device_cgroup_rules=["a *:* rwm"], shm_size="1g",
        mounts=[Mount("/var/lib/docker", None, type="volume"),
                # A machine's cgroups are writable (Docker gives a container read-only ones): the daemon
                # setup.sh starts makes its containers' cgroups there.
                Mount("/sys/fs/cgroup", "/sys/fs/cgroup", type="bind")],
        cgroupns="host",
    )
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []
    created = c.api.create_container(
        image, ["bash", "-c", SCRIPT.format(only=only, full=FULL if os.environ.get("HARNESS_PRISTINE_FULL") else "")],
        environment=env, working_dir="/",
        host_config=host_config,
        labels={LABEL: "container", "arena-harness.run": "pristine-%d" % os.getpid(),
                "arena-harness.owner": "%s:%d" % (os.uname().nodename, os.getpid())},
    )
    ct = c.containers.get(created["Id"])
    log_path = tmp_path / "pristine.log"
    try:
        ct.put_archive("/", committed_tree())
        ct.start()
        try:
            ct.wait(timeout=DEADLINE)
        except Exception:  # noqa: BLE001 - requests' ReadTimeout: the deadline
            ct.kill()
            pytest.fail("the pristine set-up and run did not end within %.0fs" % DEADLINE)
        log = ct.logs(stdout=True, stderr=True).decode("utf-8", errors="backslashreplace")
        log_path.write_text(log)
        kept = Path(os.environ.get("HARNESS_PRISTINE_LOG", "arena-harness-out/pristine.log"))
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, kept)
        try:
            bits, _ = ct.get_archive("/out/results.json")
        except Exception:  # noqa: BLE001 - docker.errors.NotFound: the run wrote nothing
            pytest.fail("no results from the pristine run; its log (%s) ends:\n%s" % (kept, log[-3000:]))
        with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as t:
            member = t.extractfile("results.json")
            assert member is not None
            doc = json.loads(member.read())
    finally:
        ct.remove(force=True, v=True)
    results = doc["results"]
    assert sorted({r["target"] for r in results}) == sorted(TARGETS), log[-3000:]
    bad = ["%s/%s: %s %s" % (r["target"], r["policy"], r["status"], r.get("detail")) for r in results
           if r["status"] != "pass"]
    assert not bad, "\n".join(bad) + "\n--- log tail ---\n" + log[-3000:]
    assert "PRISTINE doctor strict ok" in log
    for line in log.splitlines():
        if line.startswith("PRISTINE "):
            print(line)
