"""Docker containers through the Docker SDK for Python (never the docker CLI).

Images are built offline: a cached Debian root filesystem (``images.Rootfs``)
is tarred (``images.RootfsTarball``) and imported as
``arena-harness/rootfs:<suite>-<arch>-<key>``, labelled as a harness base image
and reused. Each boot runs one container, locked down: no network, a read-only
root, every capability dropped, ``no-new-privileges``, pids and memory limits,
the allocator committed into a derived image (no mount from the host). The JSON comes back in the
container's output; the target's deadline is enforced by killing the container.
Every container carries the labels ``arena-harness.run`` and
``arena-harness.owner`` (host and pid), so a later run removes what a crashed
one left (:func:`sweep`). Connects through ``DOCKER_HOST`` or the default socket.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import images
from harness import arches, proc
from harness import probes as probing
from harness.backends.base import Backend, Need, RunContext
from harness.errors import HarnessError, ToolMissing
from harness.model import DEBIAN, Size, Target

MiB = 1 << 20
LABEL = "arena-harness"
IMAGE_REPO = "arena-harness/rootfs"
PAYLOAD_REPO = "arena-harness/probe"
# The arches a container can run here: natively, or through binfmt and qemu-user (riscv64's Python is too
# slow under emulation for a container's deadline to be useful; it has qemu-user targets instead).
ARCHES = ("amd64", "i386", "arm64")


def client() -> Any:
    """A Docker SDK client, or a ToolMissing that says why there is none."""
    try:
        import docker
    except ImportError:
        raise ToolMissing("docker", "the docker Python package", "pip install 'arena-harness[docker]'") from None
    try:
        c = docker.from_env(timeout=120)
        c.ping()
        return c
    except Exception as e:  # noqa: BLE001 - the SDK raises several kinds for "no daemon"
        raise ToolMissing("docker", "a running Docker daemon",
                          "sudo apt-get install -y docker.io, then start dockerd (scripts/setup.sh does both); "
                          "%s" % str(e).split("\n")[0][:160]) from None


def owner_label() -> str:
    return "%s:%d" % (socket.gethostname(), os.getpid())


def sweep(c: Any) -> List[str]:
    """Remove harness containers whose owning process, on this host, is gone (a crashed or killed run).

    A daemon may be shared (``DOCKER_HOST``, a CI runner's): containers owned by another host, or with
    no owner the harness can read, are never touched; their own host's next run sweeps them."""
    removed = []
    host = socket.gethostname()
    for ct in c.containers.list(all=True, filters={"label": LABEL}):
        owner = ct.labels.get("arena-harness.owner", "")
        h, _, pid = owner.rpartition(":")
        if h != host or not pid.isdigit():
            continue
        if not Path("/proc", pid).exists():
            ct.remove(force=True)
            removed.append(ct.name)
    return removed


@dataclass(frozen=True)
class DockerOptions:
    arch: str = "amd64"
    suite: Optional[str] = field(default=None, metadata={DEBIAN: "a Debian release"})
    memory: Size = Size(512 * MiB)
    pids: int = 64

    def validate(self) -> Optional[Tuple[str, str]]:
        if self.arch not in ARCHES:
            return "arch", "%r is not a known arch, options are %s" % (self.arch, ", ".join(ARCHES))
        if self.memory < 64 * MiB:
            return "memory", 'expected at least "64M", got %d bytes' % self.memory
        if self.pids < 8:
            return "pids", "expected at least 8, got %d" % self.pids
        return None


class DockerBackend(Backend[DockerOptions]):
    name: ClassVar[str] = "docker"
    Options: ClassVar[type] = DockerOptions
    description: ClassVar[str] = "a locked-down container from an offline-built Debian image"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._client: Any = None
        self._image: Optional[str] = None  # the imported root filesystem
        self._run_image: Optional[str] = None  # that plus the allocator (:meth:`payload_image`)
        self._container: Any = None

    def guest_arch(self) -> str:
        return self.options.arch

    def accelerator(self) -> Optional[str]:
        """A container of another architecture runs through binfmt and qemu-user: QEMU's TCG."""
        return None if arches.runs_natively(self.options.arch) else "tcg"

    # -- images ------------------------------------------------------------------------------
    def rootfs(self) -> images.Rootfs:
        return images.Rootfs(self.options.arch, self.options.suite or arches.BY_DEBIAN[self.options.arch].suite)

    def recipes(self) -> List[images.Recipe]:
        return [images.RootfsTarball(self.rootfs())]

    def image_tag(self) -> str:
        tar = self.recipes()[0]
        return "%s:%s-%s" % (IMAGE_REPO, tar.name, tar.key())

    def needs(self, cache: images.Cache) -> List[Need]:
        """A reachable Docker daemon first (the client is kept for the boot), then the image tools."""
        try:
            self._client = client()
        except ToolMissing as e:
            return [Need(e.tool, False, e.hint)] + super().needs(cache)
        return [Need("a running Docker daemon", True)] + super().needs(cache)

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        c = self._client or client()
        self._client = c
        tag = self.image_tag()
        try:
            c.images.get(tag)
        except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
            tar = cache.get(self.recipes()[0], log) / "rootfs.tar"
            log("importing %s" % tag)
            repo, _, version = tag.partition(":")
            c.api.import_image_from_file(str(tar), repository=repo, tag=version,
                                         changes=["LABEL %s=base" % LABEL, 'CMD ["python3"]'])
        self._image = tag

    # -- the boot ------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext) -> None:
        """The allocator goes into the image, not through a mount: see :meth:`payload_image`."""
        if self._image is None:
            self.provision(images.Cache(), lambda msg: None)
        self._run_image = self.payload_image(ctx.files)

    def payload_image(self, files: Dict[str, Path]) -> str:
        """The base image plus the job's files in ``/probe`` (read-only), committed once per set of files
        and reused.

        Delivered through the API (``put_archive`` into a created, never started, container, then
        ``commit``), so it works with any daemon ``DOCKER_HOST`` names, also one that does not share this
        machine's filesystem, and the probe's container has no mount from the host at all."""
        c = self._client
        assert self._image is not None
        digest = hashlib.sha256()
        contents = {}
        for name in sorted(files):
            contents[name] = files[name].read_bytes()
            digest.update(b"%d:%s\0%d:" % (len(name), name.encode(), len(contents[name])))
            digest.update(contents[name])
        tag = "%s:%s-%s" % (PAYLOAD_REPO, self._image.partition(":")[2], digest.hexdigest()[:16])
        try:
            c.images.get(tag)
            return tag
        except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound: build it below
            pass
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            d = tarfile.TarInfo("probe")
            d.type, d.mode = tarfile.DIRTYPE, 0o555
            tar.addfile(d)
            for name, data in contents.items():
                f = tarfile.TarInfo("probe/" + name)
                f.size, f.mode = len(data), probing.file_mode(name, files[name])
                tar.addfile(f, io.BytesIO(data))
        helper = c.containers.create(self._image, ["true"], network_disabled=True, labels=self.labels("payload"))
        try:
            helper.put_archive("/", buf.getvalue())
            repo, _, version = tag.partition(":")
            helper.commit(repository=repo, tag=version, changes=["LABEL %s=payload" % LABEL])
        except Exception as e:  # noqa: BLE001 - docker.errors.APIError and friends
            raise HarnessError("docker: cannot add the allocator to %s: %s" % (self._image, e)) from None
        finally:
            helper.remove(force=True)
        return tag

    def labels(self, run_id: str) -> Dict[str, str]:
        """Every container carries the run and its owner, so a later run can sweep what a crashed one left."""
        return {LABEL: "container", "arena-harness.run": run_id, "arena-harness.target": self.target.name,
                "arena-harness.owner": owner_label()}

    def command(self, ctx: RunContext) -> List[str]:
        return ["python3"] + self.agent_args("/probe") + self.serve_args(ctx)

    def execute(self, ctx: RunContext) -> proc.Completed:
        if self._run_image is None:
            self.prepare(ctx)
        c = self._client
        sweep(c)
        name = "ah-%s-%s" % (ctx.run_id, self.target.name)
        start = time.monotonic()
        lines: List[str] = []
        timed_out = False
        returncode: Optional[int] = None
        with open(ctx.log_path, "a", encoding="utf-8", errors="backslashreplace") as log:
            log.write("$ docker run (SDK) %s %s\n" % (self._run_image, " ".join(self.command(ctx))))
            try:
                self._container = c.containers.run(
                    self._run_image,
                    self.command(ctx),
                    name=name,
                    detach=True,
                    network_mode="none",
                    read_only=True,
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    pids_limit=self.options.pids,
                    mem_limit=int(self.options.memory),
                    user="65534:65534",  # nobody: root in the container is never needed
                    environment={"PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C", "HOME": "/"},
                    labels=self.labels(ctx.run_id),
                    # a session's agent keeps the files it is sent in /tmp (the root stays read-only)
                    tmpfs={"/tmp": "rw,exec,nosuid,nodev,size=256m"} if ctx.on_stdin else {},
                    stdin_open=ctx.on_stdin is not None,
                )
                if ctx.on_stdin is not None:  # a session: its messages go to the agent's stdin
                    sock = self._container.attach_socket(params={"stdin": 1, "stream": 1})
                    raw = getattr(sock, "_sock", sock)
                    ctx.on_stdin(raw.sendall, self._container.kill)
            except Exception as e:  # noqa: BLE001 - docker.errors.APIError and friends
                raise HarnessError("docker: cannot start a container from %s: %s" % (self._image, e)) from None
            # Followed as it comes (``exec`` streams it) and capped: a container that printed 400 MB must not
            # become 400 MB in the harness.
            capture = proc.LineCapture(log, ctx.on_line)
            container = self._container
            def follow() -> None:
                for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
                    capture.feed(chunk)

            follower = threading.Thread(target=follow, name="docker-logs", daemon=True)
            follower.start()
            try:
                with proc.stopper(self._container.kill):  # an interrupt kills it now, not at the deadline
                    result = self._container.wait(timeout=ctx.deadline.left(at_least=1.0))
                returncode = int(result.get("StatusCode", -1))
            except Exception:  # noqa: BLE001 - requests' ReadTimeout / ConnectionError
                timed_out = True
                try:
                    self._container.kill()
                except Exception:  # noqa: BLE001 - it may have ended meanwhile
                    pass
            follower.join(timeout=10)  # the stream ends with the container
            lines = capture.close()
            if timed_out:
                log.write("[harness] deadline of %.1fs reached: container killed\n" % ctx.timeout)
        return proc.Completed([], returncode, time.monotonic() - start, "\n".join(lines), timed_out=timed_out,
                              stopped="timeout" if timed_out else None, lines=lines)

    def shutdown(self) -> None:
        if self._container is not None:
            try:
                self._container.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._container = None
        super().shutdown()


def labels_of(c: Any) -> Dict[str, List[str]]:
    """What of the harness's is on the daemon: container and image names (for tests and doctor)."""
    return {
        "containers": [ct.name for ct in c.containers.list(all=True, filters={"label": LABEL})],
        "images": [t for im in c.images.list(filters={"label": LABEL}) for t in im.tags],
    }
