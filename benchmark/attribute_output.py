"""What ``attrib-bench attribute`` shows: the terminal table, the HTML page (jinja2 template
``attribute.html`` through :mod:`benchmark.pages`, autoescaped) and a PNG contact sheet.

File names and ids come from the user's folders and from benchmarks: the page escapes them,
the sheet shows ``$`` literally, and the terminal gets control characters as escapes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from benchmark.attribute import Attribution


def percent(share: float | None) -> str:
    """An influence share as a percentage (``-`` without a calibrator)."""
    return "-" if share is None else f"{100 * share:.1f}%"


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters as escapes, so a hostile
    file name cannot move the cursor or recolour the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def text_lines(result: Attribution) -> list[str]:
    """The terminal report: per query, one row per top-K gallery image, then the rest."""
    lines = [
        f"extractor {result.extractor} ({result.isolation}); gallery {printable(result.gallery)} "
        f"({result.gallery_size} images); top {result.top_k}",
        f"calibration: {result.calibration}",
    ]
    for r in result.queries:
        lines += [
            "",
            f"query {printable(r.name)}",
            f"{'rank':>4}  {'score':>8}  {'influence':>9}  image",
        ]
        shares = r.influence or (None,) * len(r.ids)
        for n, (image_id, score, share) in enumerate(zip(r.ids, r.scores, shares, strict=True)):
            lines.append(f"{n + 1:>4}  {score:>8.4f}  {percent(share):>9}  {printable(image_id)}")
        if r.remaining is not None:
            lines.append(f"{'':>4}  {'':>8}  {percent(r.remaining):>9}  (remaining influence)")
    return lines


def _data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_html(result: Attribution, path: Path) -> None:
    """The page (``templates/attribute.html``, autoescaped): thumbnails embedded as data."""
    from benchmark.fileio import write_text_atomic
    from benchmark.pages import render

    queries = []
    for n, r in enumerate(result.queries):
        shares = r.influence or (None,) * len(r.ids)
        rows = [
            {
                "rank": i + 1,
                "id": image_id,
                "score": f"{score:.4f}",
                "influence": percent(share),
                "thumb": _data_uri(result.thumbnails[f"gallery:{image_id}"]),
            }
            for i, (image_id, score, share) in enumerate(zip(r.ids, r.scores, shares, strict=True))
        ]
        queries.append(
            {
                "name": r.name,
                "thumb": _data_uri(result.thumbnails[f"query:{n}"]),
                "rows": rows,
                "remaining": None if r.remaining is None else percent(r.remaining),
            }
        )
    html = render(
        "attribute.html",
        extractor=result.extractor,
        isolation=result.isolation,
        gallery=result.gallery,
        gallery_size=result.gallery_size,
        top_k=result.top_k,
        calibration=result.calibration,
        queries=queries,
    )
    write_text_atomic(path, html)


def write_sheet(result: Attribution, path: Path) -> None:
    """A PNG contact sheet: one row per query, the query on the left, then its top K."""
    from PIL import Image

    from benchmark.report import _plain, _plt, _short

    plt = _plt()
    cols, rows = result.top_k + 1, len(result.queries)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.2 * rows), squeeze=False)
    for n, r in enumerate(result.queries):
        shares = r.influence or (None,) * len(r.ids)
        cells = [(f"query:{n}", f"query\n{_short(r.name)}")]
        cells += [
            (f"gallery:{i}", f"#{k + 1} {_short(i, 18)}\n{s:.3f}  {percent(p)}")
            for k, (i, s, p) in enumerate(zip(r.ids, r.scores, shares, strict=True))
        ]
        for ax, (key, caption) in zip(axes[n], cells, strict=True):
            with Image.open(io.BytesIO(result.thumbnails[key])) as im:
                ax.imshow(np.asarray(im.convert("RGB")))
            ax.set_title(_plain(caption), fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        if r.remaining is not None:
            axes[n][-1].set_xlabel(f"remaining {percent(r.remaining)}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def save(result: Attribution, out_dir: Path) -> tuple[Path, Path]:
    """Write ``attribution.html`` and ``attribution.png`` into ``out_dir``; return both."""
    html, png = out_dir / "attribution.html", out_dir / "attribution.png"
    write_html(result, html)
    write_sheet(result, png)
    return html, png
