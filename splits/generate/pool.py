"""Install the sources, assign roles (``domain``), and load images at model resolution."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from splits.generate import sources
from splits.generate.domain import BLANK, Domain, DomainConfig, build_domain


def install_sources(cache: Path) -> dict[str, Path]:
    return {name: sources.install_debian(name, cache / "debian") for name in sources.PACKAGES}


def _catalog(cache: Path | None) -> tuple[list, list]:
    """(stamps, drawings): the sources installed (once) and cataloged under ``cache``."""
    from benchmark.paths import cache_root

    roots = install_sources(cache or cache_root() / "sources")
    stamps = sources.tuxpaint_images(roots["tuxpaint-stamps-default"])
    drawings = sources.openclipart_images(roots["openclipart-svg"], roots["openclipart-png"])
    return stamps, drawings


def load_domain(cache: Path | None, cfg: DomainConfig) -> Domain:
    """Install (once) and catalog the sources under ``cache`` (default: attrib-bench's cache)."""
    stamps, drawings = _catalog(cache)
    fingerprint = rendering_fingerprint(cfg.content_check_size) if cfg.content_checks else None
    return build_domain(stamps, drawings, cfg, fingerprint)


def content_audit(
    domain: Domain, catalog: Sequence[sources.SourceImage], fingerprint: Callable[..., str]
) -> dict[str, object]:
    """What the images of a domain look like, as ``splits audit`` prints it: ids naming more
    than one file, flat renderings, and pretraining images (what the base model trains on,
    distractors included) rendered byte-identical to an exemplar."""
    exemplars = [(m, e) for m in domain.models for e in m.exemplars]
    trained = {fingerprint(p) for p in domain.pretrain} - {BLANK}
    shown = {fingerprint(e) for _, e in exemplars} - {BLANK}
    leaked = [(m, e) for m, e in exemplars if fingerprint(e) in trained]
    by_part = Counter(m.part.value for m in {m.model_id: m for m, _ in leaked}.values())
    ids = Counter(s.image_id for s in catalog)
    return {
        "pretraining images": len(domain.pretrain),
        "exemplars": len(exemplars),
        "ids naming more than one file (catalog)": sum(1 for n in ids.values() if n > 1),
        "blank pretraining images": sum(fingerprint(p) == BLANK for p in domain.pretrain),
        "blank exemplars": sum(fingerprint(e) == BLANK for _, e in exemplars),
        "blank distractors": sum(fingerprint(d) == BLANK for d in domain.distractors),
        "pretraining images rendered like an exemplar": sum(
            fingerprint(p) in shown for p in domain.pretrain
        ),
        "exemplars with a copy in pretraining": len(leaked),
        "models with such an exemplar, by part": dict(sorted(by_part.items())),
    }


def audit_recipe(cache: Path | None, cfg: DomainConfig) -> dict[str, object]:
    """:func:`content_audit` of a recipe's domain, rendered at ``cfg.content_check_size``."""
    stamps, drawings = _catalog(cache)
    fingerprint = rendering_fingerprint(cfg.content_check_size)
    domain = build_domain(stamps, drawings, cfg, fingerprint if cfg.content_checks else None)
    return content_audit(domain, [*stamps, *drawings], fingerprint)


def rendering_fingerprint(size: int) -> Callable[[sources.SourceImage], str]:
    """sha256 of an image rendered at ``size`` as :func:`load_images` renders it, or BLANK
    when it is one flat colour; each image is rendered once."""
    seen: dict[Path, str] = {}

    def fingerprint(item: sources.SourceImage) -> str:
        if item.path not in seen:
            pixels = np.asarray(sources.square_rgb(item.path, size))
            flat = bool((pixels == pixels.reshape(-1, 3)[0]).all())
            seen[item.path] = BLANK if flat else hashlib.sha256(pixels.tobytes()).hexdigest()
        return seen[item.path]

    return fingerprint


def load_images(items, size: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """uint8 [N, size, size, 3]: transparency flattened on white, padded square, resized."""
    out = np.empty((len(items), size, size, 3), np.uint8)
    for i, item in enumerate(items):
        out[i] = np.asarray(sources.square_rgb(item.path, size))
        if progress:
            progress(1)
    return out
