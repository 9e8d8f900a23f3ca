"""Frozen value types shared by the whole harness."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from benchmark.errors import AttribBenchError


class Part(StrEnum):
    """A part of a benchmark: four test cases plus the train and val parts."""

    OBJECT_SEEN = "object-seen"
    OBJECT_UNSEEN = "object-unseen"
    STYLE_SEEN = "style-seen"
    STYLE_UNSEEN = "style-unseen"
    TRAIN = "train"
    VAL = "val"

    @property
    def is_test(self) -> bool:
        return self not in (Part.TRAIN, Part.VAL)


TEST_CASES: tuple[Part, ...] = tuple(p for p in Part if p.is_test)

# Upstream (AbC) names for the test cases, accepted wherever a test case is named.
PART_ALIASES: dict[str, Part] = {
    "observed-imagenet": Part.OBJECT_SEEN,
    "imagenet-seen": Part.OBJECT_SEEN,
    "seen-objects": Part.OBJECT_SEEN,
    "unobserved-imagenet": Part.OBJECT_UNSEEN,
    "imagenet-unseen": Part.OBJECT_UNSEEN,
    "unseen-objects": Part.OBJECT_UNSEEN,
    "bam-fg": Part.STYLE_SEEN,
    "bamfg": Part.STYLE_SEEN,
    "artchive": Part.STYLE_UNSEEN,
}


def parse_part(name: str, source: str | None = None, field: str = "test case") -> Part:
    """Resolve a part name or an upstream alias (case and ``_``/``-`` insensitive)."""
    key = name.strip().lower().replace("_", "-")
    try:
        return Part(key)
    except ValueError:
        pass
    if key in PART_ALIASES:
        return PART_ALIASES[key]
    valid = ", ".join(p.value for p in Part)
    raise AttribBenchError(
        source, field, f"unknown test case {name!r}", f"use one of {valid} (or an AbC alias)"
    )


class PromptType(StrEnum):
    """AbC's prompt types; metrics are never pooled across them."""

    GPT = "gpt"
    MEDIA = "media"
    OBJECT = "object"


class TiePolicy(StrEnum):
    """Where an exemplar goes among distractors with exactly its score.

    ``pessimistic`` (default) ranks it after every tied distractor, so a constant scorer
    gets the worst rank rather than the best. ``optimistic`` ranks it before them. Ties among
    a query's own exemplars never matter: they are all positives.
    """

    PESSIMISTIC = "pessimistic"
    OPTIMISTIC = "optimistic"


@dataclass(frozen=True)
class CustomModel:
    """One customized text-to-image model: the ground truth of its queries."""

    model_id: str
    part: Part
    category: str
    exemplar_ids: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    """One synthesized image, sampled from ``model_id``."""

    query_id: str
    model_id: str
    part: Part
    prompt: str
    prompt_type: PromptType
    seed: int
    scheduler: str
