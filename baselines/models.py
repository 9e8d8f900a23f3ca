"""Loading a catalog baseline by name, plain (:class:`baselines.backbone.Baseline`) or tuned
(``BACKBONE.tuned_BENCHMARK``, :class:`baselines.tuned.Tuned`), and wrapping it as a
submission the harness evaluates like any other.

Import order is one-way: catalog -> nets/backbone -> heads/tuned -> models.
"""

from __future__ import annotations

from pathlib import Path

from baselines.backbone import Baseline, code_sha256
from baselines.catalog import HERE, get_spec, split_name
from baselines.tuned import Tuned, find_heads
from baselines.weights import file_sha256, resolve_weights
from benchmark.submission import Submission

#: The extractor entry recorded in a baseline submission (recognised by
#: :func:`benchmark.submission.is_builtin`).
ENTRY = "baselines.models:load_baseline"


def load_baseline(
    name: str, weights: str | Path | None = None, random_weights: bool = False
) -> Baseline | Tuned:
    """A catalog baseline, or ``BACKBONE.tuned_BENCHMARK`` with its trained heads."""
    base, bench = split_name(name)
    backbone = Baseline(base, weights, random_weights)
    if bench is None:
        return backbone
    return Tuned(backbone, find_heads(name, weights))


def baseline_submission(name: str, weights: str | Path | None = None) -> Submission:
    """A catalog baseline as an extractor :class:`~benchmark.submission.Submission`.

    It is identified by what makes its features: the catalog code, the weights' sha256 and
    the heads' sha256 (tuned), which the result records under ``submission.files``.
    """
    spec = get_spec(name)
    bench = split_name(name)[1]
    hashes = {"code:baselines": code_sha256()}
    if spec.weights is not None:
        hashes[f"weights:{spec.weights.filename}"] = file_sha256(resolve_weights(spec, weights))
    description = spec.description
    if bench is not None:
        heads = find_heads(name, weights)
        hashes[f"heads:{heads.path.name}"] = heads.sha256
        description += f"; tuned heads trained on {bench} (AbC's two linear heads)"
    config = {
        "schema_version": 1,
        "name": name,
        "kind": "extractor",
        "description": description,
        "license": spec.license,
        "authors": ["attrib-bench maintainers (catalog entry)"],
        "extractor": {
            "entry": ENTRY,
            "kwargs": {"name": name, "weights": None if weights is None else str(weights)},
        },
    }
    return Submission(HERE, config, hashes)
