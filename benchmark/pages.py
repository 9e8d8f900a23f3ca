"""The one template engine for every HTML page the project writes (leaderboard site, reports).

Strings in a result (names, descriptions, test cases, flags, ...) come from submitters, so no
page is assembled by string formatting: templates under ``benchmark/templates/`` are rendered
by a jinja2 environment with autoescaping on and undefined variables as errors. Data that
must reach a page in another form goes through one of these helpers:

- :func:`script_json`: JSON for an inline ``<script>`` block (``<``, ``>``, ``&``, ``'`` and
  U+2028/U+2029 as ``\\u`` escapes, so no string can close the script or the page's markup);
- :func:`safe_url`: a link a submitter gave (``http(s)://`` or a relative path inside the
  site), anything else (``javascript:``, ``data:``, ``//host``, ``..``) refused;
- :func:`site_href`: a relative link built from path segments (percent-encoded, dot segments
  refused), for report links in the site and the markdown table;
- :func:`md_text`: a result string as literal text in a GitHub markdown table cell.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from markupsafe import Markup

from benchmark.errors import ResultError

TEMPLATES = Path(__file__).resolve().parent / "templates"

_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "'": "\\u0027",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
#: Control characters, whitespace and backslashes: browsers drop or reinterpret them in URLs
#: (``java\tscript:`` is ``javascript:``), so a link holding one is refused outright.
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\\\u2028\u2029]")
#: GitHub markdown punctuation that could start a link, code span, emphasis or math, or end
#: a table cell; each is backslash-escaped. ``<``, ``>`` and ``&`` become HTML entities.
_MD_PUNCTUATION = re.compile(r"([\\`*_\[\]|~$])")


@functools.cache
def environment() -> jinja2.Environment:
    """The shared environment: autoescape on, undefined variables raise, templates from the
    package's ``templates`` folder."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["script_json"] = script_json
    return env


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context`` (every string in it is escaped)."""
    return environment().get_template(template).render(**context)


def script_json(data: Any) -> Markup:
    """``data`` as compact, key-sorted JSON safe to place inside an HTML ``<script>`` block."""
    if isinstance(data, jinja2.Undefined):  # filters receive undefined values unchecked
        raise jinja2.UndefinedError(f"script_json of an undefined value ({data._undefined_name})")
    try:
        text = json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except ValueError:
        raise ResultError(
            None, "metrics", "holds NaN or infinity", "re-run the evaluation; values are finite"
        ) from None
    for char, escape in _JSON_ESCAPES.items():
        text = text.replace(char, escape)
    return Markup(text)


def safe_url(url: Any) -> str | None:
    """``url`` if it is an ``http(s)://`` URL or a relative path that stays inside the site,
    else None (``javascript:``, ``data:``, protocol-relative, absolute or ``..`` paths)."""
    if not isinstance(url, str) or not url or _URL_UNSAFE.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme:
        return url if parts.scheme in ("http", "https") and parts.netloc else None
    if parts.netloc or url.startswith("/"):
        return None
    segments = parts.path.split("/")
    return None if any(s in (".", "..") for s in segments) else url


def site_href(*segments: str) -> str | None:
    """A relative link from path segments, each percent-encoded; None if a segment is empty,
    ``.`` or ``..`` (such a link would leave the folder it names)."""
    if any(not isinstance(s, str) or s in ("", ".", "..") for s in segments):
        return None
    return "/".join(quote(s, safe="@") for s in segments)


def md_text(value: Any) -> str:
    """``value`` as literal text in a markdown table cell: one line, no HTML, no markup."""
    text = " ".join(str(value).split())  # newlines, tabs, U+2028: one space
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_PUNCTUATION.sub(r"\\\1", text)
