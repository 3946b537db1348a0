"""Probes: what runs in a target, and how what it printed becomes result documents.

A probe is a program the guest agent runs in the target (its argv, with files the
harness delivers read-only beside the allocator). The host gets back the
program's exit status, its stdout and its stderr (capped), and the probe turns
them into documents of the allocator's shape (:mod:`harness.document`), one per
result name. Kinds:

- ``model``: the allocator zipapp's policies (go-2012-pre, go-2012, go-modern);
- ``go``: a real Go runtime (:mod:`harness.probes.go`, built per architecture);
- ``jvm``: the guest's own OpenJDK (:mod:`harness.probes.jvm`);
- ``program``: a user's program that prints one JSON line with at least ``outcome``.
"""
