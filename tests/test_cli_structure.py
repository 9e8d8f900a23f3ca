"""The shape of ``benchmark.cli``: every command of every module is registered, user errors
become one line and exit 2 in one place (the group), and ``python -m benchmark`` works."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import benchmark.cli as cli
from benchmark.cli.common import EXIT_USER_ERROR, FriendlyGroup
from benchmark.errors import AttribBenchError

ROOT = Path(__file__).resolve().parents[1]
RUNNER = CliRunner()
ERROR = AttribBenchError("some/file.json", "field", "is broken", "repair it")
LINE = "error: some/file.json: field: is broken (fix: repair it)\n"


def tree(group: click.Group, path: tuple[str, ...] = ()):
    """``(path, command)`` for every command and group under ``group``, depth first."""
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from tree(cmd, (*path, name))


TREE = list(tree(cli.main))
LEAVES = [(path, cmd) for path, cmd in TREE if not isinstance(cmd, click.Group)]


def module_commands():
    """Every click command defined in a module of the benchmark.cli package."""
    for info in pkgutil.iter_modules(cli.__path__):
        module = importlib.import_module(f"benchmark.cli.{info.name}")
        for value in vars(module).values():
            callback = getattr(value, "callback", None)
            mine = callback is not None and callback.__module__ == module.__name__
            if isinstance(value, click.Command) and mine:
                yield module.__name__, value


def test_every_command_of_every_module_is_registered():
    registered = {id(cmd) for _, cmd in TREE}
    found = list(module_commands())
    assert len(found) >= 28  # 24 commands and 4 groups: the walk really sees the modules
    missing = [f"{mod}.{cmd.name}" for mod, cmd in found if id(cmd) not in registered]
    assert missing == []


def test_the_command_names_of_the_cli():
    names = {" ".join(path) for path, _ in TREE}
    expected = {
        "evaluate", "selfcheck", "validate", "list", "export", "compare", "report",
        "train-tuned", "baselines calibrate", "baselines pin", "leaderboard add",
        "leaderboard verify", "leaderboard build", "leaderboard push", "splits verify",
        "splits push", "splits pretrain", "splits generate", "splits report", "splits freeze",
        "splits import-abc", "splits derive-abu", "import-features abc", "import-scores",
    }  # fmt: skip
    assert expected <= names


def test_the_root_and_every_subgroup_catch_user_errors():
    groups = [cli.main] + [cmd for _, cmd in TREE if isinstance(cmd, click.Group)]
    assert len(groups) >= 5
    assert all(isinstance(g, FriendlyGroup) for g in groups)


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=" ".join)
def test_a_user_error_anywhere_is_one_line_and_exit_2(monkeypatch, path):
    cmd = dict(LEAVES)[path]

    def fail(**_kwargs):
        raise ERROR

    # No parameters, so that parsing cannot fail first (a usage error also exits with 2).
    monkeypatch.setattr(cmd, "params", [])
    monkeypatch.setattr(cmd, "callback", fail)
    result = RUNNER.invoke(cli.main, list(path))
    assert (result.exit_code, result.stderr, result.stdout) == (EXIT_USER_ERROR, LINE, "")
    # The command itself does not catch: without a group the error escapes.
    alone = RUNNER.invoke(cmd, [])
    assert alone.exception is ERROR


def test_a_subgroup_on_its_own_catches_too(monkeypatch):
    splits = cli.main.commands["splits"]
    cmd = splits.commands["verify"]
    monkeypatch.setattr(cmd, "callback", lambda **_: (_ for _ in ()).throw(ERROR))
    result = RUNNER.invoke(splits, ["verify"])
    assert (result.exit_code, result.stderr) == (EXIT_USER_ERROR, LINE)


def test_a_real_user_error_through_a_subgroup():
    result = RUNNER.invoke(cli.main, ["splits", "verify", "no-such-benchmark"])
    assert result.exit_code == EXIT_USER_ERROR
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_other_exceptions_are_not_swallowed(monkeypatch):
    cmd = cli.main.commands["validate"]
    monkeypatch.setattr(cmd, "callback", lambda **_: 1 / 0)
    result = RUNNER.invoke(cli.main, ["validate", "x"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_python_dash_m_benchmark():
    run = subprocess.run(
        [sys.executable, "-m", "benchmark", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "evaluate" in run.stdout and "leaderboard" in run.stdout


def test_the_console_script_is_the_root_group():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["attrib-bench"].partition(":")
    assert getattr(importlib.import_module(module), attr) is cli.main


def test_cli_modules_stay_small():
    sizes = {
        p.name: len(p.read_text().splitlines()) for p in Path(cli.__file__).parent.glob("*.py")
    }
    assert max(sizes.values()) <= 500, sizes


def test_pretrain_refuses_a_hub_recipe(tmp_path):
    result = RUNNER.invoke(cli.main, ["splits", "pretrain", "sd-v1-4", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_USER_ERROR
    assert result.stderr.startswith("error: sd-v1-4: base_model: CompVis/stable-diffusion-v1-4")
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
