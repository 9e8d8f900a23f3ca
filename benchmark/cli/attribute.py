"""The ``attribute`` command: the AbC demo over :func:`benchmark.attribute.attribute`."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import (
    ensure_dir,
    sandbox_options,
    submission_option,
    submission_or_baseline,
    weights_option,
)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@submission_option("Extractor submission folder (runs in the sandbox).")
@click.option("--baseline", default=None, help="A catalog baseline instead, e.g. pixels.")
@weights_option
@click.option(
    "--gallery",
    "-g",
    default=None,
    help="A benchmark (name or folder; its distractors are ranked) or a folder of images "
    "(default: the default benchmark).",
)
@click.option("--top", "top_k", type=int, default=10, show_default=True, help="Rows per image.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("attribution"),
    show_default=True,
    help="Folder for attribution.html and attribution.png.",
)
@click.option("--device", default=None, help="torch device (default: cuda if available).")
@sandbox_options
def attribute(images, submission, baseline, weights, gallery, top_k, out, device, sandbox=None):
    """Rank a gallery for generated IMAGES; print the top K with calibrated influence.

    Equal scores keep gallery order (a benchmark's distractor order, a folder's sorted paths).
    """
    from benchmark.attribute import attribute as run
    from benchmark.attribute_output import save, text_lines

    source = submission_or_baseline(submission, baseline, weights)
    ensure_dir(out, "--out", create=False)
    result = run(list(images), source, gallery, top_k, device=device, sandbox=sandbox)
    click.echo("\n".join(text_lines(result)))
    html, png = save(result, ensure_dir(out, "--out"))
    click.echo(f"\nwrote {html} and {png}")
