"""One error type for every user-facing problem.

Every message names the file, the field and the fix on one line, so the CLI can print it
without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class AttribBenchError(Exception):
    """A problem the user can fix: bad input, a missing file, an unknown name."""

    def __init__(self, source: str | Path | None, field: str | None, problem: str, fix: str):
        self.source = str(source) if source is not None else None
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def __reduce__(self):
        # Raised in a worker process (parallel generation), it crosses back by pickle.
        return type(self), (self.source, self.field, self.problem, self.fix)

    def line(self) -> str:
        where = ": ".join(p for p in (self.source, self.field) if p)
        head = f"{where}: " if where else ""
        return f"{head}{self.problem} (fix: {self.fix})"


class BenchmarkError(AttribBenchError):
    """A benchmark cannot be found, verified or read."""


class SubmissionError(AttribBenchError):
    """A submission is malformed, incomplete or unsafe to load."""


class ResultError(AttribBenchError):
    """A result file is invalid or results cannot be compared."""
