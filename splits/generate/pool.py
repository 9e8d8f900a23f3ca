"""Install the sources, assign roles (``domain``), and load images at model resolution."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from splits.generate import sources
from splits.generate.domain import Domain, DomainConfig, build_domain


def install_sources(cache: Path) -> dict[str, Path]:
    return {name: sources.install_debian(name, cache / "debian") for name in sources.PACKAGES}


def load_domain(cache: Path | None, cfg: DomainConfig) -> Domain:
    """Install (once) and catalog the sources under ``cache`` (default: attrib-bench's cache)."""
    from benchmark.paths import cache_root

    roots = install_sources(cache or cache_root() / "sources")
    stamps = sources.tuxpaint_images(roots["tuxpaint-stamps-default"])
    drawings = sources.openclipart_images(roots["openclipart-svg"], roots["openclipart-png"])
    return build_domain(stamps, drawings, cfg)


def load_images(items, size: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """uint8 [N, size, size, 3]: transparency flattened on white, padded square, resized."""
    out = np.empty((len(items), size, size, 3), np.uint8)
    for i, item in enumerate(items):
        out[i] = np.asarray(sources.square_rgb(item.path, size))
        if progress:
            progress(1)
    return out
