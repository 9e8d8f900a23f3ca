"""Strict YAML for configs people review: duplicate keys, aliases and deep nesting refused.

PyYAML's ``safe_load`` keeps the last of two equal keys silently (a reviewer reads one value,
the harness uses the other), expands aliases (a few hundred bytes can stand for gigabytes once
the config is serialized) and recurses per nesting level (deep nesting is a RecursionError).
"""

from __future__ import annotations

from functools import cache
from typing import Any

MAX_DEPTH = 32  # nesting levels of mappings/lists


class YamlRefused(Exception):
    """YAML that parses but that submission.yaml does not allow (duplicates, aliases, depth)."""

    def __init__(self, field: str | None, problem: str, fix: str):
        super().__init__(problem)
        self.field, self.problem, self.fix = field, problem, fix


@cache
def strict_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses duplicate keys (PyYAML keeps the last one silently,
    so a reviewer could read one value and the harness use another), anchors/aliases and
    merge keys (an alias bomb expands exponentially when the config is later serialized), and
    nesting deeper than ``MAX_DEPTH`` (deep nesting overflows the parser's stack)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            event = self.peek_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise YamlRefused(
                    None, f"line {line}: anchors and aliases are not allowed", "write values out"
                )
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    raise YamlRefused(
                        None,
                        f"line {line}: nested deeper than {MAX_DEPTH} levels",
                        "flatten the config",
                    )
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                line = key_node.start_mark.line + 1
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlRefused(
                        None, f"line {line}: merge keys (<<) are not allowed", "write keys out"
                    )
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class reports it
                    continue
                if first is not None:
                    raise YamlRefused(
                        str(key)[:80],
                        f"duplicate key (lines {first} and {line})",
                        "write each key once",
                    )
                seen[key] = line
            return super().construct_mapping(node, deep)

    return StrictLoader


def load_strict_yaml(text: str) -> Any:
    """Parse ``text`` with :func:`strict_loader`.

    Raises:
        YamlRefused: duplicate keys, anchors/aliases, merge keys or too deep nesting.
        yaml.YAMLError: not YAML at all.
    """
    import yaml

    return yaml.load(text, Loader=strict_loader())
