"""attrib-bench attribute: rank a gallery for new images, with calibrated influence."""

from __future__ import annotations

import re
import shutil

import pytest
from click.testing import CliRunner

from benchmark.attribute import attribute
from benchmark.attribute_output import save, text_lines
from benchmark.errors import AttribBenchError
from benchmark.sandbox import BACKENDS, backend_works
from tests.conftest import SUBMISSIONS

HOSTILE = "<img onerror=alert(1)>.png"
TARGET = "distractor-00007"


def _pixels():
    from baselines.models import baseline_submission

    return baseline_submission("pixels")


def _image_bytes(tiny, ids: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for block in tiny.iter_image_blocks("distractors", ids):
        out.update(zip(block.ids, block.images, strict=True))
    return out


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    """A query (a copy of one gallery image) and a folder gallery: six abc-tiny images, two
    pixel-identical copies of a seventh (a tie), and the query under a hostile file name."""
    root = tmp_path_factory.mktemp("attribute")
    ids = [f"distractor-{i:05d}" for i in (3, 7, 11, 19, 23, 42, 57)]
    data = _image_bytes(tiny, set(ids))
    query = root / "query.png"
    query.write_bytes(data[TARGET])
    gallery = root / "gallery"
    (gallery / "sub").mkdir(parents=True)
    for i in ids[2:]:
        (gallery / f"{i}.png").write_bytes(data[i])
    (gallery / "sub" / "twin-a.png").write_bytes(data[ids[0]])
    (gallery / "twin-b.png").write_bytes(data[ids[0]])
    (gallery / HOSTILE).write_bytes(data[TARGET])
    (gallery / "notes.txt").write_text("not an image, not listed")
    twin = root / "twin.png"
    twin.write_bytes(data[ids[0]])
    return {"query": query, "gallery": gallery, "twin": twin}


def test_gallery_image_ranks_itself_first_on_a_benchmark(tiny, files):
    result = attribute([files["query"]], _pixels(), tiny.root, top_k=5)
    (ranked,) = result.queries
    assert ranked.name == "query.png"
    assert ranked.ids[0] == TARGET
    assert ranked.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert len(ranked.ids) == 5 and list(ranked.scores) == sorted(ranked.scores, reverse=True)
    assert result.gallery_size == len(tiny.distractor_ids)
    # A second call reads the cache and gives the same answer.
    assert attribute([files["query"]], _pixels(), tiny.root, top_k=5) == result


def test_influence_sums_to_one_with_the_remaining_influence(tiny, files):
    result = attribute([files["query"], files["twin"]], _pixels(), tiny.root, top_k=4)
    assert "val" in result.calibration and result.calibrator is not None
    for ranked in result.queries:
        assert ranked.influence is not None and ranked.remaining is not None
        assert sum(ranked.influence) + ranked.remaining == pytest.approx(1.0, abs=1e-9)
        assert min(ranked.influence) >= 0 and ranked.remaining >= 0
        assert list(ranked.influence) == sorted(ranked.influence, reverse=True)
    # The query that is a gallery image gets the largest share of its own influence.
    assert result.queries[0].influence[0] > result.queries[0].influence[1]


def test_folder_gallery_ties_keep_sorted_path_order_and_have_no_calibrator(files):
    result = attribute([files["twin"], files["query"]], _pixels(), files["gallery"], top_k=3)
    twin, query = result.queries
    assert result.gallery_size == 8  # notes.txt is not an image
    assert twin.ids[:2] == ("sub/twin-a.png", "twin-b.png")  # equal scores: path order
    assert twin.scores[0] == twin.scores[1]
    assert query.ids[0] == HOSTILE
    assert twin.influence is None and twin.remaining is None
    assert result.calibration.startswith("none: a folder gallery")
    assert all("-" in line for line in text_lines(result)[-3:])


@pytest.mark.skipif(
    not any(backend_works(b) for b in BACKENDS), reason="no sandbox backend works here"
)
def test_sandboxed_submission(files):
    sub = SUBMISSIONS / "example_extractor"
    result = attribute([files["query"]], sub, files["gallery"], top_k=2)
    assert result.isolation in BACKENDS
    assert result.extractor == "example-extractor"
    assert result.queries[0].ids[0] == HOSTILE


def test_html_and_sheet_escape_a_hostile_file_name(files, tmp_path):
    result = attribute([files["query"]], _pixels(), files["gallery"], top_k=3)
    html, png = save(result, tmp_path / "out")
    page = html.read_text()
    assert HOSTILE not in page and "<img onerror" not in page
    assert "&lt;img onerror=alert(1)&gt;.png" in page
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["missing.png"], "IMAGE"),
        (["NOTE"], "IMAGE"),
        (["QUERY", "--top", "0"], "--top"),
        (["QUERY", "--gallery", "EMPTY"], "--gallery"),
    ],
)
def test_bad_input_is_one_line_exit_2(files, tmp_path, args, field):
    from benchmark.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "note.png").write_text("not a png")
    subst = {"NOTE": tmp_path / "note.png", "QUERY": files["query"], "EMPTY": tmp_path / "empty"}
    argv = ["attribute", *[str(subst.get(a, a)) for a in args], "--baseline", "pixels"]
    out = CliRunner().invoke(main, argv)
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0]


def test_library_refuses_k_below_one(files):
    with pytest.raises(AttribBenchError, match="--top"):
        attribute([files["query"]], _pixels(), files["gallery"], top_k=0)


def test_cli_lists_k_rows_and_writes_the_page(tiny, files, tmp_path):
    from benchmark.cli import main

    out_dir = tmp_path / "out"
    argv = ["attribute", str(files["query"]), "--baseline", "pixels", "--gallery",
            str(tiny.root), "--top", "3", "--out", str(out_dir)]  # fmt: skip
    out = CliRunner().invoke(main, argv)
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if re.match(r"^\s+\d+\s+-?\d\.\d{4}\s", line)]
    assert len(rows) == 3 and rows[0].rstrip().endswith(TARGET)
    assert "remaining influence" in out.output
    assert (out_dir / "attribution.html").is_file() and (out_dir / "attribution.png").is_file()
    shutil.rmtree(out_dir)


def test_terminal_output_escapes_control_characters():
    from benchmark.attribute import Attribution, Ranked

    ranked = Ranked("q\x1b[2J.png", ("evil\x1b[31m.png",), (0.5,), (0.25,), 0.75)
    result = Attribution("x", "g\n", 1, 1, (ranked,), {"temperature": 1.0, "threshold": 0.0},
                         "fitted", "in-process")  # fmt: skip
    text = "\n".join(text_lines(result))
    assert "\x1b" not in text and "evil\\x1b[31m.png" in text and "g\\n" in text
    assert "25.0%" in text and "75.0%" in text
