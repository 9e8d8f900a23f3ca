"""``attrib-bench``: a thin command line over the library.

One module per command family; this module builds the root group and registers every command
explicitly (nothing registers itself by being imported). Every user-facing problem is an
:class:`~benchmark.errors.AttribBenchError`; :class:`~benchmark.cli.common.FriendlyGroup`
prints its one line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import click

from benchmark import __version__
from benchmark.cli import attribute, baselines, evaluate, imports, leaderboard, scale, splits
from benchmark.cli.common import EXIT_USER_ERROR, FriendlyGroup

__all__ = ["EXIT_USER_ERROR", "FriendlyGroup", "main"]


@click.group(cls=FriendlyGroup)
@click.version_option(__version__, prog_name="attrib-bench")
def main() -> None:
    """Evaluate training-data attribution for text-to-image models (the AbC protocol)."""


for _command in (
    evaluate.evaluate,
    evaluate.selfcheck,
    evaluate.validate,
    evaluate.list_,
    evaluate.export,
    evaluate.compare,
    evaluate.report,
    scale.merge,
    attribute.attribute,
    baselines.train_tuned,
    baselines.baselines,
    leaderboard.leaderboard,
    splits.splits,
    imports.import_features,
    imports.import_scores_cmd,
):
    main.add_command(_command)
splits.splits.add_command(imports.splits_import_abc)
splits.splits.add_command(imports.splits_derive_abu)
del _command
