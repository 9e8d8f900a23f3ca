"""The leaderboard site in a real browser: headless Debian Chromium driven by Selenium.

The test setup installs Debian's ``chromium`` and ``chromium-driver`` when they are missing
(``apt-get``; CI runs as root). The page is opened from disk with background networking off:
it must load with no console errors, and sorting and filtering must change the visible rows.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess

import pytest

from baselines.models import baseline_submission
from benchmark import leaderboard as lb
from benchmark.evaluation import RunOptions, evaluate
from benchmark.results import store_result
from tests.conftest import SUBMISSIONS

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _install_chromium() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(DRIVER):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"needs {CHROMIUM} and {DRIVER}: apt-get install chromium chromium-driver")
    cmd = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "chromium",
        "chromium-driver",
    ]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(cmd, env=env, capture_output=True, check=True)


@pytest.fixture(scope="module")
def browser():
    _install_chromium()
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


def rows(driver) -> list[dict[str, str]]:
    out = []
    for tr in driver.find_elements("css selector", "#rows tr"):
        cells = tr.find_elements("css selector", "td")
        out.append(
            {
                "submission": cells[0].text,
                "status": cells[1].text,
                "test_case": cells[2].text,
                "prompt": cells[3].text,
                "mAP": float(cells[5].text.split()[0]),
            }
        )
    return out


def test_site_loads_sorts_and_filters_in_chromium(browser, site):
    from selenium.webdriver.support.ui import Select

    browser.get(site.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    shown = rows(browser)
    assert len(shown) == 3 * 8  # three entries x eight cells
    assert {r["status"] for r in shown if r["submission"] == "pixels"} == {"verified"}
    assert {r["status"] for r in shown if r["submission"] != "pixels"} == {"self-reported"}
    # Default view: grouped by test case, best mAP first within each cell.
    for case in ("object-seen", "style-unseen"):
        cell = [
            r["mAP"] for r in shown if r["test_case"] == case and r["prompt"] == shown[0]["prompt"]
        ]
        assert cell == sorted(cell, reverse=True)

    # Filtering by test case and prompt type changes the visible rows.
    Select(browser.find_element("id", "test-case")).select_by_value("style-seen")
    shown = rows(browser)
    assert len(shown) == 6 and {r["test_case"] for r in shown} == {"style-seen"}
    Select(browser.find_element("id", "prompt-type")).select_by_value("object")
    shown = rows(browser)
    assert len(shown) == 3 and {r["prompt"] for r in shown} == {"object"}
    assert [r["mAP"] for r in shown] == sorted((r["mAP"] for r in shown), reverse=True)

    # Clicking mAP flips the order; clicking the submission header sorts by name.
    browser.find_element("css selector", "th[data-sort='mAP']").click()
    assert [r["mAP"] for r in rows(browser)] == sorted(r["mAP"] for r in shown)
    browser.find_element("css selector", "th[data-sort='submission']").click()
    names = [r["submission"] for r in rows(browser)]
    assert names == sorted(names)

    # Ungrouped, all cells: a global order by the chosen metric.
    Select(browser.find_element("id", "test-case")).select_by_value("all")
    Select(browser.find_element("id", "prompt-type")).select_by_value("all")
    browser.find_element("id", "group").click()
    browser.find_element("css selector", "th[data-sort='recall@10']").click()
    values = [
        float(td.text.split()[0])
        for td in browser.find_elements("css selector", "#rows td[data-measure='recall@10']")
    ]
    assert len(values) == 24 and values == sorted(values, reverse=True)
    browser.find_element("id", "search").send_keys("pix")
    assert {r["submission"] for r in rows(browser)} == {"pixels"}
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors


def test_hostile_strings_render_as_text_in_chromium(browser, site, tmp_path):
    """An entry whose every string carries HTML, script and attribute payloads (built as a
    dict, skipping validation) shows them as literal text; none runs, none becomes markup."""
    from tests.test_hostile_pages import SCRIPT, TEMPLATE, hostile_entry, hostile_result

    evil = hostile_result(1)
    hunt = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    evil["submission"]["name"] += hunt
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
    shown = browser.find_elements("css selector", "#rows tr")
    assert len(shown) == len(evil["metrics"])
    for tr in shown:
        tds = tr.find_elements("css selector", "td")
        assert tds[0].text.split() == evil["submission"]["name"].split()  # as text
        assert TEMPLATE in tds[2].text and SCRIPT in tds[2].text and "onerror" in tds[2].text
        href = tds[0].find_element("tag name", "a").get_attribute("href")
        assert href.startswith(tmp_path.as_uri() + "/reports/"), href
    assert browser.find_elements("css selector", "img, #rows script, [onerror]") == []
    assert browser.execute_script("return window.pwned === undefined")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
