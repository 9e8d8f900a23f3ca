"""Install the sources, assign roles (``domain``), and load images at model resolution."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from splits.generate import sources
from splits.generate.domain import BLANK, Domain, DomainConfig, build_domain


def install_sources(cache: Path) -> dict[str, Path]:
    return {name: sources.install_debian(name, cache / "debian") for name in sources.PACKAGES}


def load_domain(cache: Path | None, cfg: DomainConfig) -> Domain:
    """Install (once) and catalog the sources under ``cache`` (default: attrib-bench's cache)."""
    from benchmark.paths import cache_root

    roots = install_sources(cache or cache_root() / "sources")
    stamps = sources.tuxpaint_images(roots["tuxpaint-stamps-default"])
    drawings = sources.openclipart_images(roots["openclipart-svg"], roots["openclipart-png"])
    fingerprint = rendering_fingerprint(cfg.content_check_size) if cfg.content_checks else None
    return build_domain(stamps, drawings, cfg, fingerprint)


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
