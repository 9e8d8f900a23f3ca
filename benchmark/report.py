"""``attrib-bench report``: one result as an HTML page with the pictures AbC's paper shows.

Everything is drawn from the result file alone (per-query ranks, scores and calibrated
influence), except the galleries, which read the query and candidate images from the
benchmark when it is available:

- ``recall_at_k.png``: mean Recall@K for K = 1 .. number of distractors, per test case and
  prompt type (log K), with the chance level of a random ranking (``benchmark.chance``);
- ``test_cases.png``: mAP and Recall@10 per test case and prompt type with their CIs and each
  cell's chance level; ``leaderboard build`` gives every entry of a benchmark version the
  same y-range (``shared_ylim``) so that their plots compare at a glance;
- ``reliability.png``: the calibration reliability diagram on the test queries; a flat
  calibrator (every candidate the same influence) is stated in words instead, since its
  diagram would be a single bar;
- ``gallery.png``: per test case, its best and median query (by the best exemplar's rank):
  the query, then its top candidates by score with exemplars framed in green and each
  candidate's calibrated influence in percent.

Chance levels need the benchmark's gallery size, so they are drawn when the benchmark is
available (as for the gallery).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.chance import cell_chance, recall_curve_chance
from benchmark.errors import AttribBenchError
from benchmark.fileio import write_text_atomic
from benchmark.format import estimate_parts, number
from benchmark.metrics import SHOWN
from benchmark.pages import render, safe_url
from benchmark.types import TEST_CASES

CELL_COLOURS = {
    "object-seen": "#1f77b4",
    "object-unseen": "#17becf",
    "style-seen": "#d62728",
    "style-unseen": "#ff7f0e",
}
EXEMPLAR = "#2ca02c"
CHANCE = "#555555"
BAR_MEASURES = ("mAP", "recall@10")
#: A calibrator threshold b this far above exp(0) = 1 makes every candidate's influence the
#: same (the fit found no usable confidence in the scores); the CLI's summary uses the same
#: rule (``UNIFORM_THRESHOLD``).
FLAT_THRESHOLD = 1e3
CAPTION_CHARS = 22


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain(text: str) -> str:
    """Figure text shown literally: matplotlib reads ``$...$`` as math (and fails on bad math),
    so a submitter's ``$`` is escaped."""
    return str(text).replace("$", r"\$")


def _short(text: str, limit: int = CAPTION_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut), for figure captions."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def is_flat(calibration: dict[str, Any]) -> bool:
    """Whether the fitted calibrator gives every candidate the same influence."""
    c = calibration.get("calibrator")
    return isinstance(c, dict) and float(c.get("threshold", 0.0)) > FLAT_THRESHOLD


def shared_ylim(results: list[dict[str, Any]], measures=BAR_MEASURES) -> dict[str, float]:
    """Per measure, one y-axis top for every entry's bar plot: the largest CI upper end over
    ``results``, rounded up to a multiple of 0.05 (at most 1), so plots of one benchmark
    version compare at a glance."""
    out = {}
    for m in measures:
        top = max(
            (
                c["metrics"][m]["ci_high"]
                for r in results
                for c in r["metrics"]
                if m in c["metrics"]
            ),
            default=1.0,
        )
        out[m] = min(1.0, max(0.05, math.ceil(top * 20 - 1e-9) / 20))
    return out


def cells(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["test_case"], c["prompt_type"]) for c in result["metrics"]]


def recall_curves(result: dict[str, Any], ks: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """Mean Recall@K at each K per cell, from the stored exemplar ranks."""
    by_cell: dict[tuple[str, str], list[np.ndarray]] = {}
    for q in result["queries"]:
        ranks = np.array([e["rank"] for e in q["exemplars"]])
        recall = (ranks[None, :] <= ks[:, None]).mean(axis=1)
        by_cell.setdefault((q["test_case"], q["prompt_type"]), []).append(recall)
    return {cell: np.mean(v, axis=0) for cell, v in by_cell.items() if cell in cells(result)}


def plot_recall_curves(
    result: dict[str, Any], path: Path, num_distractors: int, chance: bool = True
) -> Path:
    """Recall@K curves per cell; with ``chance`` (the gallery size is the benchmark's, not a
    guess), the random-ranking level min(K, N)/N as a dotted line."""
    plt = _plt()
    ks = np.unique(np.geomspace(1, max(num_distractors, 2), 200).astype(int))
    curves = recall_curves(result, ks)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (case, prompt), recall in curves.items():
        ax.plot(
            ks,
            recall,
            color=CELL_COLOURS.get(case, "grey"),
            linestyle="-" if prompt == "gpt" else "--",
            label=_plain(f"{_short(case)} / {_short(prompt, 8)}"),
        )
    if chance:
        ax.plot(
            ks,
            recall_curve_chance(result, ks, num_distractors),
            color=CHANCE,
            linestyle=":",
            label="random ranking",
        )
    ax.set_xscale("log")
    ax.set_xlabel("K (candidates retrieved)")
    ax.set_ylabel("Recall@K (fraction of exemplars)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_plain(f"{_short(result['submission']['name'], 40)}: Recall@K"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cell_bars(
    result: dict[str, Any],
    path: Path,
    measures=BAR_MEASURES,
    *,
    ylim: dict[str, float] | None = None,
    num_distractors: int | None = None,
) -> Path:
    """Bars with CIs per cell; ``ylim`` fixes each measure's y-axis top (shared across the
    entries of a board); with ``num_distractors``, each cell's chance level as a black tick."""
    plt = _plt()
    cl = cells(result)
    fig, axes = plt.subplots(1, len(measures), figsize=(5 * len(measures), 4), squeeze=False)
    x = np.arange(len(cl))
    for ax, measure in zip(axes[0], measures, strict=True):
        values, lo, hi = [], [], []
        for cell in result["metrics"]:
            est = cell["metrics"][measure]
            v = est["value"] if est["value"] is not None else est["lower"]
            values.append(v)
            lo.append(max(v - est["ci_low"], 0))
            hi.append(max(est["ci_high"] - v, 0))
        colours = [CELL_COLOURS.get(case, "grey") for case, _ in cl]
        ax.bar(x, values, color=colours, yerr=[lo, hi], capsize=3, alpha=0.85)
        ticks = [_plain(f"{_short(c)} {_short(p, 8)}") for c, p in cl]
        ax.set_xticks(x, ticks, fontsize=8, rotation=35, ha="right")
        if num_distractors:
            level = cell_chance(result, num_distractors, measure)
            ax.hlines(
                [level.get(c, np.nan) for c in cl],
                x - 0.4,
                x + 0.4,
                colors=CHANCE,
                linestyles=":",
                label="random ranking",
            )
            ax.legend(fontsize=7, loc="upper right")
        top = (ylim or {}).get(measure)
        ax.set_ylim(0, top if top else None)
        ax.set_ylabel(f"{measure} (95% CI)")
        ax.grid(axis="y", alpha=0.3)
    name = _short(result["submission"]["name"], 40)
    fig.suptitle(_plain(f"{name} per test case and prompt type"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(result: dict[str, Any], path: Path) -> Path | None:
    cal = result["calibration"]
    if "test" not in cal or is_flat(cal):
        return None
    plt = _plt()
    bins = cal["test"]["reliability"]
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    used = [b for b in bins if b["count"]]
    width = [b["upper"] - b["lower"] for b in used]
    ax.bar(
        [b["lower"] for b in used],
        [b["accuracy"] for b in used],
        width=width,
        align="edge",
        alpha=0.7,
        edgecolor="black",
        label="fraction that are exemplars",
    )
    ax.plot(
        [b["confidence"] for b in used],
        [b["accuracy"] for b in used],
        "o",
        color="black",
        markersize=3,
        label="mean influence in bin",
    )
    for b in used:
        ax.annotate(
            f"{b['count']}",
            (b["lower"] + (b["upper"] - b["lower"]) / 2, b["accuracy"]),
            ha="center",
            va="bottom",
            fontsize=6,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("calibrated influence of a candidate")
    ax.set_ylabel("fraction of candidates that are exemplars")
    t = cal["test"]
    ax.set_title(f"ECE {t['ece']:.4f}, exemplar NLL {t['exemplar_nll']:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# galleries


def pick_queries(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Per test case: its best and its median query by the best exemplar's rank."""
    picks = []
    for case in [p.value for p in TEST_CASES]:
        qs = [q for q in result["queries"] if q["test_case"] == case]
        if not qs:
            continue
        qs.sort(key=lambda q: (min(e["rank"] for e in q["exemplars"]), q["query_id"]))
        picks.append(("best", qs[0]))
        picks.append(("median", qs[len(qs) // 2]))
    return picks


def top_candidates(query: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The query's k best candidates by score: its exemplars and stored top distractors."""
    items = [
        {"id": e["id"], "score": e["score"], "influence": e.get("influence"), "exemplar": True}
        for e in query["exemplars"]
        if e["score"] is not None
    ]
    for d in query.get("top_distractors", []):
        influence = d[2] if len(d) > 2 else None
        items.append({"id": d[0], "score": d[1], "influence": influence, "exemplar": False})
    items.sort(key=lambda c: (-c["score"], not c["exemplar"], c["id"]))
    return items[:k]


def _images(bench, table: str, ids: set[str]) -> dict[str, Any]:
    from benchmark.features import decode

    out = {}
    for block in bench.iter_image_blocks(table, ids):
        for image_id, data in zip(block.ids, block.images, strict=True):
            out[image_id] = decode(data)
    return out


def plot_gallery(result: dict[str, Any], bench, path: Path, k: int = 6) -> Path:
    plt = _plt()
    picks = pick_queries(result)
    rows = [(label, q, top_candidates(q, k)) for label, q in picks]
    query_imgs = _images(bench, "queries", {q["query_id"] for _, q, _ in rows})
    wanted = {c["id"] for _, _, cands in rows for c in cands}
    gallery = _images(bench, "exemplars", wanted)
    gallery.update(_images(bench, "distractors", wanted - set(gallery)))
    fig, axes = plt.subplots(
        len(rows), k + 1, figsize=(1.9 * (k + 1), 2.25 * len(rows)), squeeze=False
    )
    for r, (label, q, cands) in enumerate(rows):
        ax = axes[r][0]
        ax.imshow(query_imgs[q["query_id"]])
        best = min(e["rank"] for e in q["exemplars"])
        ax.set_title(
            _plain(
                f"{_short(q['test_case'])} {_short(q['prompt_type'], 8)}\n"
                f"{label}: exemplar rank {best}"
            ),
            fontsize=9,
        )
        for c, cand in enumerate(cands):
            ax = axes[r][c + 1]
            ax.imshow(gallery[cand["id"]])
            share = "" if cand["influence"] is None else f"{100 * cand['influence']:.1f}%"
            ax.set_title(f"{share} s={cand['score']:.2f}", fontsize=9)
            if cand["exemplar"]:
                for side in ax.spines.values():
                    side.set_edgecolor(EXEMPLAR)
                    side.set_linewidth(3)
        for c in range(len(cands) + 1, k + 1):
            axes[r][c].set_visible(False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        _plain(
            f"{_short(result['submission']['name'], 40)}: query | top {k} candidates by "
            "score (green frame: an exemplar; calibrated influence in %)"
        ),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# the page


MEASURES = SHOWN  # the registry's table columns (benchmark.metrics.MEASURES)


def _calibration_text(cal: dict[str, Any]) -> str:
    if "test" not in cal:
        return f"skipped: {cal.get('skipped')}"
    c, t = cal["calibrator"], cal["test"]
    if is_flat(cal):
        return (
            f"fitted on {cal['fitted_on']} is flat: its threshold b "
            f"{number(c['threshold'], '.3g')} is far above every exp(score / tau), so each "
            "candidate of a query gets the same influence (the scores carried no usable "
            "confidence) and its reliability diagram would be a single bar; on test queries "
            f"exemplar mass {number(t['exemplar_mass'], '.3f')}, ECE {number(t['ece'], '.4f')}"
        )
    return (
        f"fitted on {cal['fitted_on']}: tau {number(c['temperature'], '.4g')}, "
        f"b {number(c['threshold'], '.4g')}; on test queries exemplar NLL "
        f"{number(t['exemplar_nll'], '.3f')}, exemplar mass {number(t['exemplar_mass'], '.3f')}, "
        f"ECE {number(t['ece'], '.4f')}"
    )


def page_context(
    result: dict[str, Any], figures: list[tuple[str, str]], gallery: bool, chance: bool = False
) -> dict[str, Any]:
    """Everything ``templates/report.html`` shows, as plain values (the template escapes
    them); ``figures`` are (title, file name in the report folder)."""
    b, s, settings = result["benchmark"], result["submission"], result["settings"]
    authors = s.get("authors", [])
    url = s.get("url")
    return {
        "name": s["name"],
        "kind": s["kind"],
        "description": s.get("description", ""),
        "authors": [str(a) for a in authors] if isinstance(authors, list) else [str(authors)],
        "url": safe_url(url),
        "url_refused": url if url and safe_url(url) is None else None,
        "license": str(s.get("license", "")),
        "date": str(s.get("date", "")),
        "chance": chance,
        "bench_name": b["name"],
        "bench_version": b["version"],
        "manifest": str(b["manifest_sha256"])[:16],
        "submission_sha": str(s["sha256"])[:16],
        "harness": result["harness"]["version"],
        "tie_policy": settings["tie_policy"],
        "seed": settings["seed"],
        "ci_level": number(settings["ci_level"], ".0%"),
        "measures": MEASURES,
        "rows": [
            {
                "test_case": cell["test_case"],
                "prompt_type": cell["prompt_type"],
                "queries": cell["num_queries"],
                "estimates": [estimate_parts(cell["metrics"][m]) for m in MEASURES],
            }
            for cell in result["metrics"]
        ],
        "calibration": _calibration_text(result["calibration"]),
        "flags": [str(f) for f in result["flags"]],
        "figures": figures,
        "gallery": gallery,
    }


def report_dir(root: str | Path, result: dict[str, Any]) -> Path:
    """``root/<benchmark>@<version>/<submission>``: each entry's report in its own folder (as
    ``leaderboard build`` files them under ``site/reports/``), never one shared by all; the
    parts are checked store names, so the folder stays inside ``root``."""
    from benchmark.store import entry_key

    return Path(root).joinpath(*entry_key(result).split("/"))


def refuse_shared(out: Path, result: dict[str, Any]) -> None:
    """Refuse to write into a folder that holds another entry's report."""
    marker = out / "index.html"
    if not marker.is_file():
        return
    page = marker.read_text(encoding="utf-8", errors="replace")
    mine = f'data-entry="{site_href_entry(result)}"'
    if "data-entry=" in page and mine not in page:
        raise AttribBenchError(
            out, "--out", "holds another entry's report", "give each entry its own folder"
        )


def site_href_entry(result: dict[str, Any]) -> str:
    """The entry key as the report page records it (percent-encoded, inert in an attribute)."""
    from benchmark.pages import site_href

    return site_href(*report_entry(result).split("/")) or ""


def report_entry(result: dict[str, Any]) -> str:
    b = result["benchmark"]
    return f"{b['name']}@{b['version']}/{result['submission']['name']}"


def write_report(
    result: dict[str, Any],
    out_dir: str | Path,
    bench=None,
    *,
    ylim: dict[str, float] | None = None,
) -> Path:
    """Write ``index.html`` and its PNGs into ``out_dir``; ``bench`` enables the gallery and
    the chance levels; ``ylim`` fixes the bar plots' y-axes (see :func:`shared_ylim`).

    The page is rendered by the autoescaping template engine (``benchmark.pages``): no string
    of the result reaches it unescaped. A folder holding another entry's report is refused.
    """
    out = Path(out_dir)
    refuse_shared(out, result)
    out.mkdir(parents=True, exist_ok=True)
    num_distractors = len(bench.distractor_ids) if bench is not None else 0
    known = num_distractors > 0
    if not known:  # the x-axis range only: no chance level is drawn from a guess
        num_distractors = max(e["rank"] for q in result["queries"] for e in q["exemplars"])
    bars = plot_cell_bars(
        result,
        out / "test_cases.png",
        ylim=ylim,
        num_distractors=num_distractors if known else None,
    )
    figures = [
        ("Recall@K", plot_recall_curves(result, out / "recall_at_k.png", num_distractors, known)),
        ("Per test case", bars),
    ]
    reliability = plot_reliability(result, out / "reliability.png")
    if reliability:
        figures.append(("Calibration", reliability))
    if bench is not None:
        figures.append(("Gallery", plot_gallery(result, bench, out / "gallery.png")))
    context = page_context(result, [(t, p.name) for t, p in figures], bench is not None, known)
    context["entry"] = site_href_entry(result)
    context["digest"] = result_digest(result)
    context["complete"] = int(bench is not None)
    path = out / "index.html"
    write_text_atomic(path, render("report.html", **context))
    return path


def result_digest(result: dict[str, Any]) -> str:
    """sha256 of the result's canonical JSON: which result a report page was drawn from."""
    text = json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def complete_report(out_dir: str | Path, result: dict[str, Any]) -> bool:
    """True if ``out_dir`` holds a report of exactly ``result`` that was drawn with its
    benchmark (gallery and chance levels): rebuilding it without the benchmark would lose
    them, so ``leaderboard build`` keeps it."""
    page = Path(out_dir) / "index.html"
    if not page.is_file():
        return False
    head = page.read_text(encoding="utf-8", errors="replace")[:4096]
    return f'data-result="{result_digest(result)}" data-complete="1"' in head
