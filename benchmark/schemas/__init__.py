"""JSON schemas of every file attrib-bench reads or writes, and one validator for them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from benchmark.errors import AttribBenchError

_HERE = Path(__file__).parent


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads((_HERE / f"{name}.schema.json").read_text(encoding="utf-8"))


def validate(obj: Any, name: str, source: str | Path | None) -> None:
    """Validate ``obj`` against ``<name>.schema.json``; raise one line naming the field."""
    import jsonschema

    schema = load_schema(name)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        # The message quotes the offending value: cut it so a huge string stays one short line.
        message = err.message
        if len(message) > 300:
            message = f"{message[:120]} ... {message[-120:]}"
        raise AttribBenchError(
            source,
            field[:200],
            f"fails the {name} schema: {message}",
            f"see benchmark/schemas/{name}.schema.json",
        )
