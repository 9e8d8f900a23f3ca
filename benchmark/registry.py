"""A small registry of lazily imported objects ("module:attr" targets).

Nothing is imported or registered by side effect: an entry is a name, a target string and a
one-line description; the target is imported only when the entry is used.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from benchmark.errors import AttribBenchError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attribute"
    description: str = ""


class Registry:
    def __init__(self, kind: str, entries: tuple[Entry, ...] = ()):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        if ":" not in entry.target:
            raise ValueError(f"{self.kind} {entry.name!r}: target must be 'module:attr'")
        self._entries[entry.name] = entry

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            valid = ", ".join(self.names())
            hint = f"did you mean {close[0]!r}?" if close else f"use one of {valid}"
            raise AttribBenchError(None, self.kind, f"unknown {self.kind} {name!r}", hint)
        return self._entries[name]

    def load(self, name: str) -> Any:
        return load_target(self.get(name).target)


def load_target(target: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted)."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
