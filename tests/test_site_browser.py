"""The leaderboard site in a real browser: headless Debian Chromium driven by Selenium.

Chromium comes from the system (``.ci/run`` installs Debian's ``chromium`` and
``chromium-driver`` first; pytest never runs apt-get); without it the test is skipped, saying
so. The page is opened from disk with background networking off: it must load with no console
errors, and sorting and filtering must change the visible rows.
"""

from __future__ import annotations

import copy
import os

import pytest

from baselines.models import baseline_submission
from benchmark import leaderboard as lb
from benchmark.evaluation import RunOptions, evaluate
from benchmark.results import store_result
from tests.conftest import SUBMISSIONS

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, DRIVER) if not os.path.exists(p)]
    if missing:
        pytest.skip(
            f"no {' or '.join(missing)}: run .ci/run as root, or "
            "apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1300,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    quiet = RunOptions(progress=False)
    results = [
        evaluate(SUBMISSIONS / "example_extractor", tiny, options=quiet),
        evaluate(baseline_submission("pixels"), tiny, options=quiet),
        evaluate(baseline_submission("random"), tiny, options=quiet),
    ]
    for r in results:
        store_result(root / lb.RESULTS_DIR, r)
    lb.verify(root, copy.deepcopy(results[1]))  # pixels gets the badge
    lb.build(root, reports=False)
    return root / "site" / "index.html"


def entry_rows(driver) -> list[dict[str, str]]:
    """The board's entry rows as shown: place, name, status, headline, average rank."""
    out = []
    for tr in driver.find_elements("css selector", "#rows tr.entry"):
        cells = tr.find_elements("css selector", ":scope > td")
        out.append(
            {
                "key": tr.get_attribute("data-key"),
                "place": cells[1].text,
                "submission": cells[2].text,
                "status": cells[3].text,
                "headline": float(cells[4].text),
                "average_rank": float(cells[5].text),
            }
        )
    return out


def console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_site_ranks_one_row_per_entry_and_expands_to_cells(browser, site):
    browser.get(site.as_uri())
    assert console_errors(browser) == []
    shown = entry_rows(browser)
    assert len(shown) == 3  # one row per entry
    assert [r["place"] for r in shown] == ["1", "2", "3"]
    heads = [r["headline"] for r in shown]
    assert heads == sorted(heads, reverse=True)  # the default order: headline, best first
    assert {r["submission"]: r["status"] for r in shown} == {
        "example-extractor": "self-reported",
        "pixels": "verified",
        "random": "self-reported",
    }
    assert shown[-1]["submission"] == "random"
    assert all(1.0 <= r["average_rank"] <= 3.0 for r in shown)
    assert browser.find_elements("css selector", "#rows tr.detail") == []

    # One click shows the entry's eight cells with every measure; another hides them.
    browser.find_elements("css selector", "#rows tr.entry button.expand")[0].click()
    [detail] = browser.find_elements("css selector", "#rows tr.detail")
    assert detail.get_attribute("data-key") == shown[0]["key"]
    cells = detail.find_elements("css selector", "tbody tr.cell")
    assert len(cells) == 8
    assert len(detail.find_elements("css selector", "td[data-measure='mAP']")) == 8
    first = cells[0].find_elements("css selector", "td")
    assert first[0].text == "object-seen" and "[" in first[3].text  # value with its CI
    browser.find_elements("css selector", "#rows tr.entry button.expand")[0].click()
    assert browser.find_elements("css selector", "#rows tr.detail") == []

    # Sorting by average rank (best first), then by name; the search filters entries.
    browser.find_element("css selector", "th[data-sort='average_rank']").click()
    ranks = [r["average_rank"] for r in entry_rows(browser)]
    assert ranks == sorted(ranks)
    browser.find_element("css selector", "th[data-sort='submission']").click()
    names = [r["submission"] for r in entry_rows(browser)]
    assert names == sorted(names)  # text columns sort ascending first
    browser.find_element("id", "search").send_keys("pix")
    assert [r["submission"] for r in entry_rows(browser)] == ["pixels"]
    assert console_errors(browser) == []


def test_hostile_strings_render_as_text_in_chromium(browser, site, tmp_path):
    """An entry whose every string carries HTML, script and attribute payloads (built as a
    dict, skipping validation) shows them as literal text; none runs, none becomes markup."""
    from tests.test_hostile_pages import SCRIPT, TEMPLATE, hostile_entry, hostile_result

    evil = hostile_result(1)
    hunt = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    evil["submission"]["name"] += hunt
    evil["submission"]["authors"] = [hunt, "Eve"]
    evil["submission"]["license"] = hunt
    for cell in evil["metrics"]:
        cell["test_case"] += hunt
    page = tmp_path / "index.html"
    entries = [*lb.read_store(site.parents[1]), hostile_entry(evil)]
    page.write_text(lb.render_site(entries), encoding="utf-8")
    browser.get(page.as_uri())
    bench = f"{evil['benchmark']['name']}@{evil['benchmark']['version']}"
    browser.execute_script(  # choose the hostile benchmark (its name breaks CSS selectors)
        "const s = document.getElementById('benchmark'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('change'));",
        bench,
    )
    assert browser.execute_script("return document.getElementById('benchmark').value") == bench
    [tr] = browser.find_elements("css selector", "#rows tr.entry")
    tds = tr.find_elements("css selector", ":scope > td")
    assert tds[2].text.split() == evil["submission"]["name"].split()  # as text
    assert hunt in tds[6].text and hunt in tds[7].text  # authors, license
    href = tds[2].find_element("tag name", "a").get_attribute("href")
    assert href.startswith(tmp_path.as_uri() + "/reports/"), href
    assert tds[9].find_elements("tag name", "a") == []  # the javascript: link is no link
    tr.find_element("css selector", "button.expand").click()
    cells = browser.find_elements("css selector", "#rows tr.detail tbody tr")
    assert len(cells) == len(evil["metrics"])
    for row in cells:
        text = row.find_elements("css selector", "td")[0].text
        assert TEMPLATE in text and SCRIPT in text and "onerror" in text
    assert browser.find_elements("css selector", "img, #rows script, [onerror]") == []
    assert browser.execute_script("return window.pwned === undefined")
    assert console_errors(browser) == []
