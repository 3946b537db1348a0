"""The host side: targets, backends, the runner, results and reports (never shipped to guests)."""

from allocator import __version__

__all__ = ["__version__"]
