"""Backends are found by name: ``harness/backends/<name>.py`` holds a class whose ``name`` is that word.

The CLI value, the YAML ``backend:`` value and the module name are the same
word; adding a backend touches no other module.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, Dict, List, Type

if TYPE_CHECKING:
    from harness.backends.base import Backend

_NOT_BACKENDS = {"base", "console", "jail", "nsexec"}  # the backends' helpers
_cache: Dict[str, "Type[Backend[Any]]"] = {}
_extra: Dict[str, "Type[Backend[Any]]"] = {}


def names() -> List[str]:
    found = {
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_") and m.name not in _NOT_BACKENDS
    }
    return sorted(found | set(_extra))


def get(name: str) -> "Type[Backend[Any]]":
    """The backend class called ``name``; KeyError (listing the known ones) if there is none."""
    if name in _cache:
        return _cache[name]
    if name not in names():
        raise KeyError("unknown backend %r; known: %s" % (name, ", ".join(names())))
    from harness.backends.base import Backend

    module = importlib.import_module("%s.%s" % (__name__, name.replace("-", "_")))
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Backend) and getattr(obj, "name", None) == name
    ]
    if len(found) != 1:
        raise KeyError("module %s defines no backend class named %r" % (module.__name__, name))
    _cache[name] = found[0]
    return found[0]


def register(cls: "Type[Backend[Any]]") -> "Type[Backend[Any]]":
    """Register a backend class defined outside this package (a plugin's, or a unit test's fake)."""
    _extra[cls.name] = cls
    _cache[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _extra.pop(name, None)
    _cache.pop(name, None)
