"""`Registry[T]`: the one name -> object table behind operators, intervention kinds, probes,
architectures and figures.

Explicit on purpose: an object is in a registry because some module registered it (core code
imports its modules statically) or because an installed distribution declares it in the
registry's entry-point group (plug-ins such as `saes`' operator; loaded on first use). Names are
snake_case; registering a second object under a taken name, or asking for an unknown one, raises
an error that names what is known. Iteration follows registration order.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from workbench.errors import WorkbenchError

T = TypeVar("T")

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_MISSING: Any = object()


class RegistryError(WorkbenchError):
    """A bad registration: a taken name, a name that is not snake_case, a plug-in that fails."""


class UnknownNameError(RegistryError):
    """A lookup of a name nobody registered; the message lists the known names."""


class Registry(Mapping[str, T], Generic[T]):
    """Names (snake_case) to objects of one kind, in registration order.

    `kind` labels error messages ("operator", "intervention kind", ...). `group` names an
    entry-point group whose plug-ins are loaded lazily: one by name on a lookup that misses, all on
    listing. `name_of`, when given, reads an object's own name, which must equal the name it is
    registered under."""

    def __init__(self, kind: str, group: str | None = None,
                 name_of: Callable[[T], str] | None = None) -> None:
        self.kind, self.group, self.name_of = kind, group, name_of
        self._items: dict[str, T] = {}
        self._plugins_loaded = group is None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"

    # ----- registration ----------------------------------------------------------------------
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = _MISSING) -> Any:
        """Add `obj` under `name`; without `obj`, a decorator that does so."""
        if obj is _MISSING:
            return lambda o: self.register(name, o)
        if not isinstance(name, str) or not SNAKE_CASE.match(name):
            raise RegistryError(f"{self.kind} name {name!r} is not snake_case "
                                f"(lower-case words joined by '_')")
        if self.name_of is not None and self.name_of(obj) != name:
            raise RegistryError(f"{self.kind} {name!r}: the object calls itself "
                                f"{self.name_of(obj)!r}")
        held = self._items.get(name, _MISSING)
        if held is not _MISSING and held is not obj:
            raise RegistryError(f"{self.kind} {name!r} registered twice ({_label(held)} and "
                                f"{_label(obj)}); known: {list(self._items)}")
        self._items[name] = obj
        return obj

    # ----- lookup ----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            self._load_plugin(name)
        if name not in self._items:
            where = (f" (plug-ins: entry-point group {self.group!r} of the installed "
                     f"distributions)" if self.group else "")
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {self.names()}{where}")
        return self._items[name]

    def get(self, name: str, default: Any = _MISSING) -> Any:  # type: ignore[override]
        """The object registered as `name`; an unknown name raises `UnknownNameError` (listing
        the known ones) unless a `default` is given."""
        try:
            return self[name]
        except UnknownNameError:
            if default is _MISSING:
                raise
            return default

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._items:
            self._load_plugin(name)
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self.load_plugins()
        return iter(list(self._items))

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._items)

    def names(self) -> list[str]:
        """Every name, plug-ins included, in registration order."""
        return list(self)

    # ----- plug-ins --------------------------------------------------------------------------
    def _entry_points(self) -> list[importlib.metadata.EntryPoint]:
        if self.group is None:
            return []
        return list(importlib.metadata.entry_points(group=self.group))

    def _load(self, ep: importlib.metadata.EntryPoint) -> None:
        try:
            obj = ep.load()
        except Exception as e:  # a broken plug-in must say which one it is
            raise RegistryError(f"{self.kind} plug-in {ep.name!r} ({ep.value}, entry-point group "
                                f"{self.group!r}) failed to load: {type(e).__name__}: {e}") from e
        self.register(ep.name, obj)

    def _load_plugin(self, name: str) -> None:
        if self._plugins_loaded:
            return
        for ep in self._entry_points():
            if ep.name == name:
                self._load(ep)

    def load_plugins(self) -> None:
        """Load every plug-in of the entry-point group (once)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        try:
            for ep in self._entry_points():
                self._load(ep)  # one already loaded by name registers the same object: a no-op
        except BaseException:
            self._plugins_loaded = False
            raise


def _label(obj: object) -> str:
    mod, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{mod}.{name}" if mod and name else repr(obj)


__all__ = ["SNAKE_CASE", "Registry", "RegistryError", "UnknownNameError"]
