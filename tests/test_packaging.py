"""Packaging facts that can drift apart: the version, the pytest markers, the extras, and
that a submitter's install (no ``[generate]`` extra) still imports and evaluates."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib

import pytest

from benchmark import __version__
from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
GENERATE_ONLY = ("diffusers", "transformers")
BUILTIN_MARKS = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_package_version_is_the_one_in_pyproject():
    assert PYPROJECT["project"]["version"] == __version__


def test_declared_markers_are_exactly_the_used_ones():
    """--strict-markers refuses undeclared marks; this refuses declared ones nobody uses."""
    declared = {m.split(":")[0] for m in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]}
    used = set()
    for path in (REPO / "tests").glob("*.py"):
        used |= set(re.findall(r"pytest\.mark\.(\w+)", path.read_text(encoding="utf-8")))
    assert used - BUILTIN_MARKS == declared


def test_generation_dependencies_are_an_extra_that_dev_includes():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert set(GENERATE_ONLY) <= _names(extras["generate"])
    assert not set(GENERATE_ONLY) & _names(project["dependencies"])
    assert f"{project['name']}[generate]" in extras["dev"]  # the README's setup gets it all


def test_library_code_never_imports_generation_packages():
    """Only splits/generate (maintainers) may import diffusers or transformers."""
    offenders = []
    for package in ("benchmark", "baselines"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                offenders += [
                    f"{path.relative_to(REPO)}: {n}"
                    for n in names
                    if n.split(".")[0] in GENERATE_ONLY
                ]
    assert offenders == []


BLOCKED_RUN = """
import importlib, importlib.abc, pkgutil, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)

sys.meta_path.insert(0, Blocked())
import benchmark, baselines
for package in (benchmark, baselines):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
from benchmark.cli import main
main(["evaluate", "--baseline", "pixels", "-b", "abc-tiny", "--quiet"])
"""


@pytest.mark.slow
def test_a_submitter_install_without_the_generate_extra_evaluates(tiny):
    code = BLOCKED_RUN.format(blocked=set(GENERATE_ONLY))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "mAP" in out.stdout
