"""Pages escape everything (issue 9, item 4): a result whose every string carries an HTML,
script, attribute, URL, template or markdown payload is rendered into the leaderboard site,
a report and the markdown table; no payload may become markup, and every one must show as
the literal text it is.

The hostile result is built as a dict from a shipped result and handed straight to the
render functions, skipping validation on purpose: escaping must hold whatever the store or
the schema let through (defense in depth).
"""

from __future__ import annotations

import ast
import copy
import gzip
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import pytest

from benchmark import leaderboard as lb
from benchmark import pages
from benchmark.errors import ResultError
from benchmark.report import write_report

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "leaderboard" / "results" / "abc-mini@0.2.0" / "pixels.json.gz"

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
CLOSE_SCRIPT = "</script><script>alert(2)</script>"
SINGLE_QUOTE = "' onmouseover='alert(4)"
TEMPLATE = "{{ 7*7 }}"
LINK = "javascript:alert(3)"
#: Everything a string field gets appended: HTML, attribute break-outs, a script end tag, a
#: template expression, markdown table breakers (pipe, newline, backtick), matplotlib math.
PAYLOAD = (
    f" {SCRIPT} {ATTRIBUTE} {CLOSE_SCRIPT} {SINGLE_QUOTE} {TEMPLATE} "
    "a|b\nc `code` [x](javascript:alert(5)) $x^2$ \u2028 &amp; <!--"
)
#: Literal pieces the rendered page's visible text must contain (whitespace-normalized).
VISIBLE = (SCRIPT, ATTRIBUTE, CLOSE_SCRIPT, SINGLE_QUOTE, TEMPLATE, "`code`", "&amp;")


def poison(value: Any) -> Any:
    """Every string value of ``value`` with the payload appended (dict keys, numbers and
    the metric names that index the result are kept, so the result still renders)."""
    if isinstance(value, str):
        return value + PAYLOAD
    if isinstance(value, list):
        return [poison(v) for v in value]
    if isinstance(value, dict):
        return {k: poison(v) for k, v in value.items()}
    return value


def hostile_result(queries_per_cell: int = 3) -> dict[str, Any]:
    """A shipped abc-mini result (trimmed to a few queries per cell) with every string
    poisoned, plus fields a submitter controls: authors, a ``javascript:`` link, flags."""
    with gzip.open(SHIPPED, "rt", encoding="utf-8") as f:
        result = json.load(f)
    kept: dict[tuple[str, str], int] = {}
    queries = []
    for q in result["queries"]:
        cell = (q["test_case"], q["prompt_type"])
        if kept.get(cell, 0) < queries_per_cell:
            kept[cell] = kept.get(cell, 0) + 1
            queries.append(q)
    result["queries"] = queries
    result["submission"]["authors"] = ["Mallory", "Eve"]
    result["flags"] = ["flag"]
    result = poison(result)
    result["submission"]["url"] = LINK
    return result


def hostile_entry(result: dict[str, Any], verified: bool = False) -> lb.Entry:
    key = lb.entry_key(result)
    record = {"digest": "0" * 64} if verified else None
    return lb.Entry(key, Path("unused"), result, "0" * 64, record)


class Page(HTMLParser):
    """Every element with its attributes, the raw text inside each <script>, and the
    visible text (character references decoded, as a browser shows them)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, attrs))
        self._in_script = tag in ("script", "style")
        if tag == "script":
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            if self.scripts:
                self.scripts[-1] += data
        else:
            self.text.append(data)

    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def assert_no_markup_from(page: Page, scripts: int) -> None:
    """Only the page's own ``scripts``; no on* handler; every link http(s) or relative."""
    tags = [tag for tag, _ in page.elements]
    assert tags.count("script") == scripts, tags
    assert "img" not in tags or all(
        dict(attrs).get("src", "").endswith(".png") for tag, attrs in page.elements if tag == "img"
    )
    for tag, attrs in page.elements:
        for name, value in attrs:
            assert not name.lower().startswith("on"), (tag, name, value)
            if name in ("href", "src", "action", "formaction"):
                scheme = urlsplit(value or "").scheme
                assert scheme in ("", "http", "https"), (tag, name, value)


@pytest.fixture(scope="module")
def hostile():
    return hostile_result()


# --------------------------------------------------------------------------------------------
# the report


def test_report_shows_every_payload_as_text(hostile, tmp_path):
    page_text = write_report(hostile, tmp_path / "r").read_text(encoding="utf-8")
    page = Page(page_text)
    assert_no_markup_from(page, scripts=0)
    visible = page.visible()
    for piece in VISIBLE:
        assert piece in visible, piece
    assert visible.count(TEMPLATE) >= 10  # name, kind, description, cells, flags, ...: literal
    assert "Mallory" in visible and "Eve" in visible
    # The javascript: link is shown as text, never as a link.
    assert LINK in visible
    assert all(dict(attrs).get("href") is None for tag, attrs in page.elements if tag == "a")
    # The figures were drawn: a "$x^2$" in a name is literal text for matplotlib too. (The
    # shipped pixels calibrator is flat: stated in words, no reliability diagram.)
    assert "is flat" in visible
    for png in ("recall_at_k.png", "test_cases.png"):
        assert (tmp_path / "r" / png).stat().st_size > 1000


def test_report_with_skipped_calibration_and_an_http_link(hostile, tmp_path):
    result = copy.deepcopy(hostile)
    result["calibration"] = {"skipped": "no val split" + PAYLOAD}
    result["submission"]["url"] = "https://example.org/paper?a=1&b=<2>"
    page = Page(write_report(result, tmp_path / "r").read_text(encoding="utf-8"))
    assert_no_markup_from(page, scripts=0)
    assert "skipped: no val split" in page.visible() and SCRIPT in page.visible()
    links = [dict(a)["href"] for tag, a in page.elements if tag == "a"]
    assert links == ["https://example.org/paper?a=1&b=<2>"]  # escaped in the file, intact here


def test_report_is_byte_reproducible(hostile, tmp_path):
    a = write_report(hostile, tmp_path / "a").read_bytes()
    b = write_report(hostile, tmp_path / "b").read_bytes()
    assert a == b


# --------------------------------------------------------------------------------------------
# the site


def test_site_data_is_inert_json_and_the_script_builds_text_only(hostile):
    entries = [hostile_entry(hostile, verified=True)]
    text = lb.render_site(entries)
    page = Page(text)
    assert_no_markup_from(page, scripts=2)  # the data block and the page's own code
    data_block, code = page.scripts
    assert "<" not in data_block and ">" not in data_block and "&" not in data_block
    assert "\u2028" not in data_block
    data = json.loads(data_block)
    assert data["rows"] == json.loads(json.dumps(lb.site_rows(entries)))  # round trip
    row = data["rows"][0]
    assert row["submission"] == hostile["submission"]["name"]
    assert row["test_case"].endswith(PAYLOAD) and TEMPLATE in row["prompt_type"]
    # The report link is a relative path inside the site, every segment percent-encoded.
    assert row["report"].startswith("reports/") and row["report"].endswith("/index.html")
    assert not re.search(r"[<>\"' :]", row["report"]), row["report"]
    # The page's script never parses data as HTML.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code, sink
    assert TEMPLATE not in page.visible()  # nothing of the data is static page text


def test_site_links_refuse_dot_segments():
    result = hostile_result(1)
    result["submission"]["name"] = ".."
    row = lb.site_rows([hostile_entry(result)])[0]
    assert row["report"] is None  # shown as plain text by the page's script


def test_site_is_byte_reproducible(hostile):
    entries = [hostile_entry(hostile)]
    assert lb.render_site(entries).encode() == lb.render_site(copy.deepcopy(entries)).encode()


# --------------------------------------------------------------------------------------------
# the markdown table


def _cells(line: str) -> list[str]:
    """A GitHub table row's cells: split on pipes not escaped with a backslash."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_markdown_table_keeps_its_columns_and_holds_no_html(hostile):
    plain = copy.deepcopy(hostile)
    plain["submission"]["name"] = "plain"
    entries = [hostile_entry(hostile), hostile_entry(plain)]
    text = lb.markdown(entries)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(entries)  # header, rule, one line per entry: no newline leak
    widths = {len(_cells(line)) for line in table}
    assert widths == {8}  # place, name, status, headline, average rank, authors, license, date
    for needle in ("<", ">", "\u2028"):
        assert needle not in text
    assert not re.search(r"(?<!\\)`", "\n".join(table))  # no code span can open in the table
    name_cell = next(
        cell
        for cell in (_cells(line)[1].strip() for line in table[2:])
        if not cell.startswith("[plain]")
    )
    # The hostile name is one link whose text is the escaped name and whose target is a
    # percent-encoded path inside site/.
    m = re.fullmatch(r"\[(.*)\]\((site/reports/[^\s()<>]*/index\.html)\)", name_cell)
    assert m, name_cell
    assert "{{ 7\\*7 }}" in m.group(1) and "&lt;script&gt;" in m.group(1)


# --------------------------------------------------------------------------------------------
# the helpers and the engine


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(3)",
        "JavaScript:alert(3)",
        " javascript:alert(3)",
        "java\tscript:alert(3)",
        "java\nscript:alert(3)",
        "vbscript:msgbox(1)",
        "data:text/html,<script>alert(1)</script>",
        "//evil.example/x",
        "/etc/passwd",
        "../../secrets",
        "reports/../../x",
        "https:alert(1)",
        "http:\\\\evil.example",
        "file:///etc/passwd",
        "",
        None,
        42,
    ],
)
def test_safe_url_refuses(url):
    assert pages.safe_url(url) is None


@pytest.mark.parametrize(
    "url", ["https://example.org/a?b=1&c=2", "http://example.org", "reports/x/index.html"]
)
def test_safe_url_keeps(url):
    assert pages.safe_url(url) == url


def test_script_json_cannot_close_the_script_or_break_js():
    text = pages.script_json({"a": "</script><!--\u2028\u2029&'", "b": [1.5, None]})
    assert re.fullmatch(r"[\x20-\x7e]*", text) and not re.search(r"[<>&']", text)
    assert json.loads(text) == {"a": "</script><!--\u2028\u2029&'", "b": [1.5, None]}
    with pytest.raises(ResultError, match="NaN"):
        pages.script_json({"x": float("nan")})


def test_md_text_escapes_table_and_html_syntax():
    assert pages.md_text("a|b\nc`d`<b>&[x](y)*z*_w_$m$\\") == (
        "a\\|b c\\`d\\`&lt;b&gt;&amp;\\[x\\](y)\\*z\\*\\_w\\_\\$m\\$\\\\"
    )


def test_the_engine_escapes_and_refuses_undefined_variables(tmp_path):
    env = pages.environment()
    assert env.autoescape is True and env.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        pages.render("leaderboard.html")  # no ``data``
    assert str(env.from_string("{{ x }}").render(x=TEMPLATE + SCRIPT)) == (
        "{{ 7*7 }}&lt;script&gt;alert(1)&lt;/script&gt;"
    )


def _string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal (f-string parts included) of a module, docstrings left out."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_python_module_assembles_html():
    """HTML lives in templates only: no string literal in the package's code holds a tag
    (the guard that keeps the next page from bypassing the engine)."""
    tag = re.compile(
        r"<(?:html|head|body|table|tr|td|th|p|ul|li|h[1-6]|img|a|script|span|div)\b", re.I
    )
    offenders = [
        f"{path.name}:{line}"
        for path in sorted((REPO / "benchmark").glob("*.py"))
        for line, text in _string_literals(ast.parse(path.read_text(encoding="utf-8")))
        if tag.search(text)
    ]
    assert offenders == []
