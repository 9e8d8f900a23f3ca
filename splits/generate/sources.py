"""Real source images that install offline, each with its license.

Inputs come from Debian packages, fetched with ``apt-get download`` and unpacked with
``dpkg -x`` into a cache folder (no dependencies are installed, nothing is written outside the
folder):

- ``tuxpaint-stamps-default``: photo-like cut-outs in categories (``animals/birds/...``) with
  an English caption in a sibling ``.txt`` file. GPL-2.0-or-later.
- ``openclipart-svg`` / ``openclipart-png``: public-domain drawings; the SVG's metadata names
  the artist (``dc:creator``) and a title. The PNG renderings are used as images.

Every image becomes a :class:`SourceImage` with a stable id, its category, an English caption,
its group (artist, for style groups) and the license of its package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import AttribBenchError


@dataclass(frozen=True)
class Package:
    name: str
    license: str
    url: str
    description: str


PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package(
            "tuxpaint-stamps-default",
            "GPL-2.0-or-later",
            "https://tuxpaint.org/",
            "Tux Paint stamps: photo cut-outs by category, with captions",
        ),
        Package(
            "openclipart-svg",
            "CC0-1.0",
            "https://openclipart.org/",
            "Open Clip Art Library 0.18, SVG (metadata: title, artist)",
        ),
        Package(
            "openclipart-png",
            "CC0-1.0",
            "https://openclipart.org/",
            "Open Clip Art Library 0.18, PNG renderings",
        ),
    )
}


@dataclass(frozen=True)
class SourceImage:
    image_id: str
    path: Path
    package: str
    category: str
    caption: str
    group: str
    license: str


def install_debian(package: str, root: Path) -> Path:
    """Unpack a Debian package's files into ``root/package`` (idempotent); return that folder."""
    dest = root / package
    marker = dest / ".installed"
    if marker.is_file():
        return dest
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise AttribBenchError(
            None,
            package,
            "apt-get and dpkg are needed to fetch sources",
            "run generation on a Debian or Ubuntu machine",
        )
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True
        )
        debs = sorted(Path(tmp).glob(f"{package}_*.deb"))
        if done.returncode != 0 or not debs:
            last = (done.stderr.strip().splitlines() or ["no .deb downloaded"])[-1]
            raise AttribBenchError(
                None,
                package,
                f"apt-get download failed ({last})",
                "run `apt-get update` first, as root",
            )
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        subprocess.run(["dpkg", "-x", str(debs[0]), str(dest)], check=True)
        marker.write_text(debs[0].name + "\n")
    return dest


MAX_PIXELS = 4096 * 4096  # a few renderings are huge (600M pixels): skip, never decode them


def _png_pixels(path: Path) -> int:
    """Width x height from a PNG's IHDR chunk, without decoding (0 if not a PNG)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0
    return int.from_bytes(head[16:20], "big") * int.from_bytes(head[20:24], "big")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_RENDERING_FOLDERS = {"cartoon", "filled", "outlined", "photo"}


def tuxpaint_images(root: Path) -> list[SourceImage]:
    """Stamps with an English caption, one per stamp (``*_mirror.png`` variants skipped)."""
    base = root / "usr/share/tuxpaint/stamps"
    pkg = PACKAGES["tuxpaint-stamps-default"]
    out = []
    for png in sorted(base.rglob("*.png")):
        if png.stem.endswith("_mirror") or png.stem.endswith("_back"):
            continue
        txt = png.with_suffix(".txt")
        if not txt.is_file():
            continue
        caption = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
        rel = png.relative_to(base).with_suffix("")
        # Some leaves are renderings, not kinds ("fruit/cartoon"): the kind is their parent.
        folders = [p for p in rel.parent.parts if p not in _RENDERING_FOLDERS]
        out.append(
            SourceImage(
                image_id="tuxpaint-" + _slug(rel.as_posix()),
                path=png,
                package=pkg.name,
                category=folders[-1] if folders else rel.parent.name,
                caption=caption.rstrip("."),
                group=pkg.name,
                license=pkg.license,
            )
        )
    return out


_CREATOR = re.compile(r"<dc:creator>\s*<cc:Agent>\s*<dc:title>([^<]*)</dc:title>", re.S)
_TITLE = re.compile(r"<dc:title>([^<]*)</dc:title>")


def openclipart_images(svg_root: Path, png_root: Path) -> list[SourceImage]:
    """Drawings with a PNG rendering and a named artist."""
    svg_base = svg_root / "usr/share/openclipart/svg"
    png_base = png_root / "usr/share/openclipart/png"
    pkg = PACKAGES["openclipart-png"]
    out = []
    for svg in sorted(svg_base.rglob("*.svg")):
        rel = svg.relative_to(svg_base).with_suffix("")
        png = png_base / rel.with_suffix(".png")
        if not png.is_file() or _png_pixels(png) > MAX_PIXELS:
            continue
        head = svg.read_text(encoding="utf-8", errors="replace")[:50_000]
        creator = _CREATOR.search(head)
        if not creator or not creator.group(1).strip():
            continue
        title = _TITLE.search(head)
        caption = title.group(1).strip() if title else rel.name.replace("_", " ")
        out.append(
            SourceImage(
                image_id="openclipart-" + _slug(rel.as_posix()),
                path=png,
                package=pkg.name,
                category=rel.parts[0] if len(rel.parts) > 1 else "misc",
                caption=caption,
                group=creator.group(1).strip(),
                license=pkg.license,
            )
        )
    return out


def square_rgb(path: Path, size: int, background: tuple[int, int, int] = (255, 255, 255)):
    """Load an image, flatten transparency onto ``background``, pad to a square, resize."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, (*background, 255))
        canvas.alpha_composite(im)
        rgb = canvas.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), background)
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)
