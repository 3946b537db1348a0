"""The guest side of the harness: what runs inside a target, shipped in the same zipapp as the allocator.

Stdlib only, and Python 3.9 at the oldest (Debian 11's python3), like :mod:`allocator`.
"""
