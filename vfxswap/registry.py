"""Registries: each stage's named implementations, listed without importing any of them.

A stage (face detectors and landmarkers, maskers, colour matches, model architectures, farm
formats) owns one `Registry` in its package's `__init__`; an entry is a name and the
"module:attribute" that implements it. Job options take their choices from it (`vfxswap.jobspec`),
and the stage loads the one a job asks for with `get`, which imports it only then, so listing the
choices costs nothing. Adding an implementation is one new module plus one line in its registry.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Iterator

from vfxswap.errors import VfxSwapError


class Registry:
    """Names -> "module:attribute" for one kind of implementation, loaded on first `get`."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind  # what an entry is, for error messages: "colour match", "face detector"
        self._entries = dict(entries)
        self._loaded: dict[str, Any] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, name: str, flag: str | None = None) -> str:
        """`name` when registered, else one line naming the choices (and the option, if given)."""
        if name not in self._entries:
            choices = ", ".join(self._entries)
            raise VfxSwapError(f"{flag} {name}: unknown {self.kind} (choose from {choices})" if flag else
                               f"unknown {self.kind} {name!r} (choose from {choices})")
        return name

    def get(self, name: str) -> Any:
        """The implementation registered as `name`, imported on first use."""
        self.check(name)
        if name not in self._loaded:
            module, _, attribute = self._entries[name].partition(":")
            self._loaded[name] = getattr(import_module(module), attribute)
        return self._loaded[name]
