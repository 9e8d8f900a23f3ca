"""The docs: a short README, and every link resolves to a file inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    REPO / "README.md",
    REPO / "submissions" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_stays_short():
    assert (REPO / "README.md").stat().st_size <= 10 * 1024


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_stay_inside_the_repository(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        assert not re.match(r"[a-z]+:", target), f"{page.name}: external link {target}"
        path = target.split("#", 1)[0]
        if not path:
            continue
        resolved = (page.parent / path).resolve()
        assert resolved.is_relative_to(REPO), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"


def test_license_and_citation_exist():
    assert "MIT License" in (REPO / "LICENSE").read_text(encoding="utf-8")
    citation = (REPO / "CITATION.cff").read_text(encoding="utf-8")
    assert "Evaluating Data Attribution for Text-to-Image Models" in citation
