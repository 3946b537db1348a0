"""Real containers: locked down, killed at the deadline, nothing of the harness's left afterwards."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

import images
from harness import config, payload
from harness.backends.base import RunContext
from harness.backends.docker import LABEL, DockerBackend, labels_of, sweep
from harness.model import GuestRun
from tests.conftest import require_docker

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture(scope="module")
def docker_client() -> Any:
    return require_docker()


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="arena-dtest-"))
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def boot(docker_client: Any, workdir: Path, command: List[str], timeout: float = 60) -> Tuple[DockerBackend, GuestRun]:
    """The real backend, with the container's command replaced."""
    target = config.load().select(["docker-amd64"])[0]
    backend = DockerBackend(target)
    backend.provision(images.Cache(), lambda m: None)
    backend.command = lambda ctx: command  # type: ignore[method-assign]
    (workdir / "w").mkdir()
    ctx = RunContext("dtest%d" % os.getpid(), target, ["go-2012"], workdir / "w", payload.build(workdir),
                     workdir / "console.log", timeout)
    return backend, backend.run(ctx)


def test_the_container_has_no_network_no_writable_root_no_capabilities(docker_client: Any, workdir: Path) -> None:
    # A server on the host's loopback: a container sharing the host network could reach it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    script = f"""
import json, os, socket
out = {{"interfaces": sorted(os.listdir("/sys/class/net"))}}
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3); out["host_port"] = "reached"
except OSError as e:
    out["host_port"] = e.strerror or str(e)
for path in ("/owned", "/probe/owned"):
    try:
        open(path, "w").write("x"); out[path] = "written"
    except OSError as e:
        out[path] = e.strerror
out["capeff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
out["nnp"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0]
print(json.dumps(out))
"""
    try:
        _, run = boot(docker_client, workdir, ["python3", "-c", script])
    finally:
        server.close()
    line = [ln for ln in Path(run.log).read_text().splitlines() if ln.startswith("{")][-1]
    seen = json.loads(line)
    assert seen["interfaces"] == ["lo"]
    assert seen["host_port"] == "Connection refused"
    assert seen["/owned"] == "Read-only file system" and seen["/probe/owned"] == "Read-only file system"
    assert seen["capeff"] == "0000000000000000" and seen["nnp"] == "1"
    assert labels_of(docker_client)["containers"] == []


def test_the_deadline_kills_and_removes_the_container(docker_client: Any, workdir: Path) -> None:
    _, run = boot(docker_client, workdir, ["sleep", "600"], timeout=3)
    assert run.timed_out and run.documents == {}
    assert run.duration_s < 3 + 5
    assert labels_of(docker_client)["containers"] == []


def test_a_crashed_runs_containers_are_swept(docker_client: Any) -> None:
    target = config.load().select(["docker-amd64"])[0]
    backend = DockerBackend(target)
    backend.provision(images.Cache(), lambda m: None)
    ct = docker_client.containers.create(backend.image_tag(), ["true"], name="ah-crashed-%d" % os.getpid(),
                                         labels={LABEL: "container", "arena-harness.owner":
                                                 "%s:999999999" % socket.gethostname()})
    assert ct.name in labels_of(docker_client)["containers"]
    assert ct.name in sweep(docker_client)
    assert labels_of(docker_client)["containers"] == []


def test_only_cached_base_images_remain(docker_client: Any) -> None:
    target = config.load().select(["docker-amd64"])[0]
    DockerBackend(target).provision(images.Cache(), lambda m: None)
    tags = labels_of(docker_client)["images"]
    ours = ("arena-harness/rootfs:", "arena-harness/probe:", "arena-harness/pristine:")
    assert tags and all(t.startswith(ours) for t in tags)
    for im in docker_client.images.list(filters={"label": LABEL}):
        assert im.labels.get(LABEL) in ("base", "payload")


def test_the_container_has_no_mount_from_the_host(docker_client: Any, workdir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The allocator is in the image (put_archive + commit), so any daemon works, also a remote one."""
    seen: dict = {}
    script = "import os, sys; print(os.getuid(), sorted(os.listdir('/probe')), os.access('/probe', os.W_OK))"
    target = config.load().select(["docker-amd64"])[0]
    backend = DockerBackend(target)
    backend.provision(images.Cache(), lambda m: None)
    backend.command = lambda ctx: ["python3", "-c", script]  # type: ignore[method-assign]
    from docker.models.containers import ContainerCollection

    original_run = ContainerCollection.run

    def run_and_inspect(self: Any, *a: Any, **kw: Any) -> Any:
        ct = original_run(self, *a, **kw)
        ct.reload()
        seen["mounts"] = ct.attrs.get("Mounts")
        seen["binds"] = ct.attrs["HostConfig"].get("Binds")
        seen["user"] = ct.attrs["Config"].get("User")
        return ct

    monkeypatch.setattr(ContainerCollection, "run", run_and_inspect)
    (workdir / "w").mkdir()
    ctx = RunContext("dtest%d" % os.getpid(), target, ["go-2012"], workdir / "w", payload.build(workdir),
                     workdir / "console.log", 60)
    backend.run(ctx)
    assert seen["mounts"] == [] and not seen["binds"]
    assert seen["user"] == "65534:65534"
    log = (workdir / "console.log").read_text()
    assert "65534 ['allocator.pyz', 'plan.json'] False" in log  # the job's files, read-only
    assert labels_of(docker_client)["containers"] == []


def test_another_hosts_containers_on_a_shared_daemon_are_left_alone(docker_client: Any) -> None:
    target = config.load().select(["docker-amd64"])[0]
    backend = DockerBackend(target)
    backend.provision(images.Cache(), lambda m: None)
    ct = docker_client.containers.create(backend.image_tag(), ["true"], name="ah-foreign-%d" % os.getpid(),
                                         labels={LABEL: "container", "arena-harness.owner": "another-host:123"})
    try:
        assert ct.name not in sweep(docker_client)
        assert ct.name in labels_of(docker_client)["containers"]
    finally:
        ct.remove(force=True)


def test_a_container_that_floods_its_output_is_capped(docker_client: Any, workdir: Path) -> None:
    import resource

    from harness import proc

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    script = "import sys\nline = 'A' * 999 + '\\n'\nfor _ in range(300000): sys.stdout.write(line)\nprint('FLOOD_OVER')"
    _, run = boot(docker_client, workdir, ["python3", "-c", script], timeout=120)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    size = (workdir / "console.log").stat().st_size
    assert size <= proc.OUTPUT_HEAD + proc.OUTPUT_TAIL + (1 << 20), size
    text = (workdir / "console.log").read_text()
    assert "output capped" in text and text.rstrip().endswith("FLOOD_OVER")
    assert grew_mib < 64, grew_mib
