"""Source catalogs on miniature package trees laid out like the real Debian packages."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from benchmark.errors import AttribBenchError
from splits.generate import sources

SVG = """<svg xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:cc="http://creativecommons.org/ns#">
<metadata><rdf:RDF><cc:Work><dc:title>{title}</dc:title>
<dc:creator><cc:Agent><dc:title>{artist}</dc:title></cc:Agent></dc:creator>
</cc:Work></rdf:RDF></metadata></svg>"""


def png(path: Path, size=(30, 20), alpha: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA" if alpha else "RGB", size, (200, 10, 10, 0) if alpha else (1, 2, 3)).save(path)


def test_tuxpaint_catalog(tmp_path):
    stamps = tmp_path / "usr/share/tuxpaint/stamps"
    png(stamps / "animals/birds/robin.png")
    (stamps / "animals/birds/robin.txt").write_text("A robin.\nde.utf8=Ein Rotkehlchen.\n")
    png(stamps / "animals/birds/robin_mirror.png")
    png(stamps / "animals/birds/nocaption.png")
    png(stamps / "food/fruit/cartoon/pear.png")
    (stamps / "food/fruit/cartoon/pear.txt").write_text("A pear\n")
    images = sources.tuxpaint_images(tmp_path)
    assert [i.image_id for i in images] == [
        "tuxpaint-animals-birds-robin",
        "tuxpaint-food-fruit-cartoon-pear",
    ]
    assert images[1].category == "fruit"
    img = images[0]
    assert (img.category, img.caption, img.license) == ("birds", "A robin", "GPL-2.0-or-later")


def test_openclipart_catalog_reads_artist_and_title(tmp_path):
    svg = tmp_path / "usr/share/openclipart/svg"
    pngs = tmp_path / "usr/share/openclipart/png"
    for name, artist in (("cat_01", "Ada"), ("dog_01", ""), ("owl_01", "Grace")):
        (svg / "animals").mkdir(parents=True, exist_ok=True)
        (svg / "animals" / f"{name}.svg").write_text(SVG.format(title=name[:3], artist=artist))
    png(pngs / "animals/cat_01.png")
    png(pngs / "animals/dog_01.png")  # no artist: skipped
    (svg / "animals").mkdir(parents=True, exist_ok=True)
    (svg / "animals" / "huge_01.svg").write_text(SVG.format(title="huge", artist="Ada"))
    png(pngs / "animals/huge_01.png", size=(5000, 4000), alpha=False)  # too big: skipped
    # owl has no PNG rendering: skipped
    images = sources.openclipart_images(tmp_path, tmp_path)
    assert [(i.image_id, i.group, i.caption, i.category) for i in images] == [
        ("openclipart-animals-cat-01", "Ada", "cat", "animals")
    ]
    assert images[0].license == "CC0-1.0"


def test_square_rgb_flattens_alpha_and_pads(tmp_path):
    png(tmp_path / "a.png", size=(40, 10))
    im = sources.square_rgb(tmp_path / "a.png", 16)
    assert im.size == (16, 16) and im.mode == "RGB"
    assert im.getpixel((0, 0)) == (255, 255, 255)  # transparent and padding -> white


def test_install_is_idempotent_and_errors_cleanly(tmp_path, monkeypatch):
    done = tmp_path / "tuxpaint-stamps-default"
    done.mkdir()
    (done / ".installed").write_text("tuxpaint-stamps-default_1_all.deb\n")
    assert sources.install_debian("tuxpaint-stamps-default", tmp_path) == done
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(AttribBenchError, match="apt-get and dpkg"):
        sources.install_debian("openclipart-svg", tmp_path)


def test_every_package_has_a_license():
    assert all(p.license and p.url for p in sources.PACKAGES.values())


def test_load_images_at_model_resolution(tmp_path):
    from splits.generate.pool import load_images

    png(tmp_path / "a.png", size=(40, 10))
    png(tmp_path / "b.png", size=(8, 8), alpha=False)
    items = [
        sources.SourceImage(n, tmp_path / f"{n}.png", "p", "c", "", "g", "CC0-1.0")
        for n in ("a", "b")
    ]
    seen = []
    arr = load_images(items, 16, seen.append)
    assert arr.shape == (2, 16, 16, 3) and arr.dtype.name == "uint8"
    assert tuple(arr[1, 8, 8]) == (1, 2, 3) and seen == [1, 1]
