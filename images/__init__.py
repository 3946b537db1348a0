"""The image pipeline: recipes that build guest artefacts (kernels, initramfs, root filesystems, disks,
container images) into a content-addressed cache, and the files they are made from.

- ``images/cache.py``: the cache (keys, per-key locks, atomic publication, prune);
- ``images/recipes.py``: each kind of artefact and how it is built (and the go probe, built with Go);
- ``images/kbuild.py`` and ``images/kconfig.py``: kernels built from Debian's kernel source, and their configs;
- ``images/qemu/``: the QEMU guests' init scripts.

The harness imports this package; nothing here imports the harness's backends.
"""

from images.cache import (
    BUILD_TIMEOUT,
    CACHE_ENV,
    MMDEBSTRAP,
    BuildError,
    Cache,
    Entry,
    Log,
    Recipe,
    Tool,
    cache_root,
    recipe_text,
)
from images.kbuild import KernelBuild, KernelConfigError, SourceKernelKit
from images.recipes import (
    GO,
    Cpio,
    GoProbe,
    Initramfs,
    KernelKit,
    KvmVerdict,
    Rootfs,
    RootfsTarball,
    Snapshot,
    SshDisk,
    build_step,
    ensure_binfmt,
    host_arch,
    mmdebstrap,
    module_closure,
)

__all__ = [
    "BUILD_TIMEOUT", "CACHE_ENV", "MMDEBSTRAP", "BuildError", "Cache", "Entry", "Log", "Recipe", "Tool",
    "cache_root", "recipe_text", "Cpio", "Initramfs", "KernelKit", "KvmVerdict", "Rootfs", "RootfsTarball", "Snapshot",
    "SshDisk",
    "build_step", "ensure_binfmt", "host_arch", "mmdebstrap", "module_closure", "GO", "GoProbe",
    "KernelBuild", "KernelConfigError", "SourceKernelKit",
]
