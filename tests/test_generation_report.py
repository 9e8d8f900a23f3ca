"""The generation report's signal check on a run built by hand (no diffusion needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from baselines.noweight import ColorHistogram, Pixels
from benchmark.types import Part
from splits.generate import report
from splits.generate.domain import Domain, ModelSpec
from splits.generate.sources import SourceImage


def noise(path: Path, seed: int) -> SourceImage:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(path)
    return SourceImage(path.stem, path, "openclipart-png", "shapes", "", "g", "CC0-1.0")


def fake_run(root: Path, swap: bool = False) -> Domain:
    """Queries are their model's exemplar (lightly perturbed); base samples are unrelated."""
    distractors = tuple(noise(root / f"d{i}.png", 1000 + i) for i in range(40))
    models = []
    for i, part in enumerate([Part.OBJECT_SEEN] * 4 + [Part.STYLE_SEEN] * 4):
        ex = noise(root / f"ex{i}.png", i)
        spec = ModelSpec(f"{part.value}-{i:03d}", part, "object", "shape", (ex,))
        models.append(spec)
        folder = root / "run" / "models" / spec.model_id
        (folder / "queries").mkdir(parents=True)
        (folder / "base").mkdir()
        queries = []
        for k in range(3):
            qid = f"{spec.model_id}-gpt-{k:02d}"
            like = np.asarray(Image.open(ex.path).resize((64, 64)), dtype=np.int16)
            like = np.clip(like + (k - 1) * 3, 0, 255).astype(np.uint8)
            other = np.asarray(Image.open(noise(root / f"o{i}{k}.png", 500 + 10 * i + k).path))
            custom, base = (other, like) if swap else (like, other)
            Image.fromarray(custom).resize((64, 64)).save(folder / "queries" / f"{qid}.png")
            Image.fromarray(base).resize((64, 64)).save(folder / "base" / f"{qid}.png")
            queries.append({"query_id": qid, "prompt": "p", "prompt_type": "gpt", "seed": k})
        done = {"queries": queries, "seconds": {"customize": 2.0, "sample": 1.0}}
        (folder / "done.json").write_text(json.dumps(done))
    return Domain(distractors, ("a drawing of a shape",) * 40, distractors, tuple(models))


def test_signal_is_positive_when_queries_resemble_their_exemplars(tmp_path):
    domain = fake_run(tmp_path)
    samples = report.collect(domain, tmp_path / "run")
    assert len(samples) == 24
    result = report.signal(domain, samples, Pixels(16), 64, seed=0)
    cells = {(c["part"], c["prompt_type"]): c for c in result["cells"]}
    assert set(cells) == {("object-seen", "all"), ("object-seen", "gpt")} | {
        ("style-seen", "all"),
        ("style-seen", "gpt"),
    }
    for cell in cells.values():
        assert cell["models"] == 4 and cell["queries"] == 12
        assert cell["mAP"]["customized"] == 1.0  # each query's nearest image is its exemplar
        assert cell["mAP"]["base"] < 0.5
        value, low, high = cell["mAP"]["difference"]
        assert low <= value <= high and low > 0
    assert report.all_positive(result)
    # The same inputs give the same numbers (seeded bootstrap).
    assert report.signal(domain, samples, Pixels(16), 64, seed=0) == result


def test_signal_is_negative_when_sides_are_swapped(tmp_path):
    domain = fake_run(tmp_path, swap=True)
    result = report.signal(domain, report.collect(domain, tmp_path / "run"), Pixels(16), 64)
    assert not report.all_positive(result)
    assert all(c["mAP"]["difference"][2] < 0 for c in result["cells"])
    # An interval wholly below zero is a loss, not "includes 0".
    rows = report.markdown_table(result).splitlines()[2:]
    assert rows and all(r.endswith("(below 0) |") for r in rows)
    assert report.interval_mark(-0.1, 0.2) == " (CI includes 0)"
    assert report.interval_mark(0.01, 0.2) == ""


def test_report_files_and_contact_sheet(tmp_path):
    domain = fake_run(tmp_path)
    samples = report.collect(domain, tmp_path / "run")
    results = [report.signal(domain, samples, f, 64) for f in (Pixels(16), ColorHistogram(4))]
    ids = [m.model_id for m in domain.models[:3]]
    sheet = report.contact_sheet(
        domain, tmp_path / "run", ids, tmp_path / "sheet.png", image_size=64
    )
    with Image.open(sheet) as im:
        assert im.size == (64 * 2 * 9 + 18, (128 + 14) * 3 + 14)
    seconds = report.generation_seconds(domain, tmp_path / "run")
    assert seconds == {"customize": 16.0, "sample": 8.0, "models": 8, "reused": 0}
    # A model sampled from another run's delta counts that run's customization time.
    donor = tmp_path / "donor"
    donor.mkdir()
    (donor / "done.json").write_text(json.dumps({"seconds": {"customize": 30.0, "sample": 1}}))
    done = tmp_path / "run" / "models" / domain.models[0].model_id / "done.json"
    info = json.loads(done.read_text())
    done.write_text(json.dumps({**info, "seconds": {"customize": 0.0, "sample": 1.0},
                                "delta_from": donor.as_posix()}))  # fmt: skip
    reused = report.generation_seconds(domain, tmp_path / "run")
    assert reused == {"customize": 44.0, "sample": 8.0, "models": 8, "reused": 1}
    x = report.write_report(
        tmp_path / "x.md", recipe_name="fake", results=results, seconds=reused, sheet=None
    )
    assert "The deltas of 1 models were made in an earlier run" in x.read_text()
    md = report.write_report(
        tmp_path / "r.md", recipe_name="fake", results=results, seconds=seconds, sheet="sheet.png"
    )
    text = md.read_text()
    assert "**positive in every test case**" in text and "![contact sheet](sheet.png)" in text
    assert "| object-seen | all | 4 | 12 | 1.000 |" in text
    numbers = report.load_report(md.with_suffix(".json"))
    assert numbers["results"][1]["feature"]["name"] == "color_histogram"
    assert numbers["version"] is None and numbers["seconds"] == seconds


def test_report_compares_two_versions(tmp_path):
    """A report given an earlier version's JSON prints both side by side, with the change."""
    domain = fake_run(tmp_path)
    samples = report.collect(domain, tmp_path / "run")
    now = [report.signal(domain, samples, Pixels(16), 64)]
    (tmp_path / "old").mkdir()
    swapped = fake_run(tmp_path / "old", swap=True)  # the earlier version: no signal
    before = [
        report.signal(swapped, report.collect(swapped, tmp_path / "old" / "run"), Pixels(16), 64)
    ]
    # An older report: a bare list of results, its version in the file name.
    legacy = tmp_path / "abc-mini-0.2.0-generation.json"
    legacy.write_text(json.dumps(before))
    previous = report.load_report(legacy)
    assert previous["version"] == "0.2.0"
    seconds = report.generation_seconds(domain, tmp_path / "run")
    md = report.write_report(
        tmp_path / "new.md",
        recipe_name="abc-mini",
        results=now,
        seconds=seconds,
        sheet=None,
        version="0.3.0",
        previous=previous,
    )
    text = md.read_text()
    assert text.startswith("# abc-mini 0.3.0: generation report")
    assert "## pixels: recall@10, 0.2.0 vs 0.3.0" in text
    table = report.comparison_table(previous, report.load_report(md.with_suffix(".json")))
    assert table in text
    header, _, *rows = table.splitlines()
    assert "0.2.0 difference [95% CI]" in header and "0.3.0 customized / base" in header
    assert [r.split(" | ")[0] for r in rows] == ["| object-seen", "| style-seen"]
    for row in rows:
        old_cells = {c["part"]: c for c in before[0]["cells"] if c["prompt_type"] == "all"}
        new_cells = {c["part"]: c for c in now[0]["cells"] if c["prompt_type"] == "all"}
        part = row.split(" | ")[0].removeprefix("| ")
        change = (
            new_cells[part]["recall@10"]["difference"][0]
            - old_cells[part]["recall@10"]["difference"][0]
        )
        assert change > 0 and row.endswith(f" | {change:+.3f} |")
        assert "(CI includes 0)" not in row.split(" | ")[5]  # 0.3.0's interval is above 0


def test_load_report_refuses_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"cells": []}))
    with pytest.raises(ValueError, match="not a generation report"):
        report.load_report(path)


def test_report_command_refuses_a_bad_previous_report_in_one_line(tmp_path):
    """Checked before any source is installed or image scored."""
    from click.testing import CliRunner

    from benchmark.cli import main

    bad = tmp_path / "old.json"
    bad.write_text("[not json")
    args = ["splits", "report", "abc-mini", "--run", str(tmp_path), "--previous", str(bad)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith(f"error: {bad}: ")
        and "cannot read report" in lines[0]
    )


def test_per_model_rows_and_the_table_by_exemplar_count(tmp_path):
    domain = fake_run(tmp_path)
    result = report.signal(domain, report.collect(domain, tmp_path / "run"), Pixels(16), 64)
    rows = result["models"]
    assert [r["model_id"] for r in rows] == [m.model_id for m in domain.models]
    assert all(r["exemplars"] == 1 and r["customized"]["recall@10"] == 1.0 for r in rows)
    # Each model's mean over its queries; the cell's mean over the same queries agrees.
    cell = next(
        c for c in result["cells"] if (c["part"], c["prompt_type"]) == ("style-seen", "all")
    )
    base = np.mean([r["base"]["mAP"] for r in rows if r["part"] == "style-seen"])
    assert cell["mAP"]["base"] == pytest.approx(base)

    by_hand = {
        "models": [
            {
                "part": "style-seen",
                "exemplars": n,
                "customized": {"recall@10": c},
                "base": {"recall@10": b},
            }
            for n, c, b in [(1, 1.0, 0.0), (3, 0.5, 0.1), (2, 0.25, 0.0), (12, 0.0, 0.5)]
        ]
    }
    table = report.by_exemplar_count(by_hand).splitlines()
    assert table[2:] == [
        "| style-seen | 1 | 1 | 1.000 | 0.000 | +1.000 |",
        "| style-seen | 2-3 | 2 | 0.375 | 0.050 | +0.325 |",
        "| style-seen | 9+ | 1 | 0.000 | 0.500 | -0.500 |",
    ]
