"""`newsletter articles import` against files written to hurt it, through the real command line.

Each case mixes one attack with good items. Whatever the attack, the command must answer
in one line per problem (a rejection, a warning or one error), never a traceback, and the
good items must be stored whole: nothing half-written, nothing lost.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from newsletter.cleaning import trim_standfirst
from newsletter.cli import cli
from newsletter.store import Store
from newsletter.store.models import Article

GOOD_TITLES = ["First good story", "Last good story"]
_LINE = re.compile(r"(?:  rejected: |  warning: |error: )\S.*")


def write_config(path: Path, db_url: str, **fetch: int) -> Path:
    """A minimal configuration for the import command (the fuller one is in test_cli.py)."""
    lines = [
        "[newsletter]",
        'publication = "The Example Gazette"',
        "[store]",
        f"url = {json.dumps(db_url)}",
        "[sender]",
        'from_address = "breakfast@news.example.com"',
        "[web]",
        'base_url = "https://news.example.com/newsletter"',
        "[fetch]",
        *(f"{key} = {value}" for key, value in fetch.items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def jsonl(*middle: str) -> bytes:
    """Good line, the hostile lines, good line."""
    first, last = (
        json.dumps({"url": f"https://news.example.com/{n}", "title": t, "published_at": "2026-11-24T05:00:00Z"})
        for n, t in zip(("first", "last"), GOOD_TITLES, strict=True)
    )
    return "\n".join([first, *middle, last]).encode("utf-8", "surrogateescape") + b"\n"


def rss(*middle: str, doctype: str = "") -> bytes:
    """A feed of a good item, the hostile items, a good item."""
    first, last = (
        f"<item><title>{t}</title><link>https://news.example.com/{n}</link>"
        "<pubDate>Tue, 24 Nov 2026 05:00:00 GMT</pubDate></item>"
        for n, t in zip(("first", "last"), GOOD_TITLES, strict=True)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}<rss version="2.0"><channel>'
        f"<title>The Example Gazette</title><link>https://news.example.com/</link>"
        f"{first}{''.join(middle)}{last}</channel></rss>\n"
    ).encode("utf-8", "surrogateescape")


def item(title: str, extra: str = "", slug: str = "hostile") -> str:
    return f"<item><title>{title}</title><link>https://news.example.com/{slug}</link>{extra}</item>"


BILLION_LAUGHS = (
    '<!DOCTYPE rss [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]>"
)
QUADRATIC = f'<!DOCTYPE rss [<!ENTITY a "{"x" * 50_000}">]>'


@dataclass(frozen=True)
class Case:
    """A file, and what importing it must do."""

    data: bytes | str  # bytes to write, or the path of an existing file (a device)
    exit_code: int = 0
    says: str = ""  # a rejection, warning or error line must contain this
    stored: list[str] = field(default_factory=lambda: GOOD_TITLES)  # titles in the store afterwards
    name: str = "source.jsonl"
    fetch: dict[str, int] = field(default_factory=dict)
    check: Callable[[list[Article]], None] | None = None


def _no_controls(articles: list[Article]) -> None:
    controls = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
    for article in articles:
        for name in ("title", "author", "image_alt", "image_caption", "standfirst", "body", "section"):
            assert not controls.search(getattr(article, name)), (article.title, name)


def _nothing_from_outside(articles: list[Article]) -> None:
    for article in articles:
        assert "root:" not in article.title + article.body + article.standfirst


CASES: dict[str, Case] = {
    "control characters in json": Case(
        jsonl(
            json.dumps(
                {
                    "url": "https://news.example.com/ctl",
                    "title": "Alert\x1b[2J\x1b]0;owned\x07\x9b31m\x7f here",
                    "author": "\x1b[8mPriya\x00",
                    "image_url": "https://news.example.com/ctl.jpg",
                    "image_caption": "Cap\x85tion\x90",
                    "image_alt": "Alt\x1b",
                    "section": "News\x9c",
                }
            )
        ),
        stored=[*GOOD_TITLES, "Alert[2J]0;owned31m here"],
        check=_no_controls,
    ),
    "control characters in rss": Case(
        rss(item("Alert \u009b2J\u0085 here", "<author>x@paper.example (\u009bPriya\u007f)</author>")),
        name="feed.rss",
        stored=[*GOOD_TITLES, "Alert ›2J… here"],  # feedparser reads C1 as the Windows-1252 it usually is
        check=_no_controls,
    ),
    "raw C0 control bytes in rss": Case(
        rss(item("Bell\x07 and escape\x1b[31m")),
        name="feed.rss",
        says="not well-formed",
        stored=[*GOOD_TITLES, "Bell and escape[31m"],
        check=_no_controls,
    ),
    "lone surrogates in json": Case(
        jsonl(
            '{"url": "https://news.example.com/s", "title": "Half \\ud83d an emoji", "author": "\\udfff",'
            ' "body": "<p>Half\\ud800 a pair</p>"}'
        ),
        stored=[*GOOD_TITLES, "Half an emoji"],
    ),
    "character references to no character in rss": Case(
        rss(item("Refs &#xD800;&#1114112;&#" + "9" * 5000 + ";&#x1b; end", slug="refs")),
        name="feed.rss",
        stored=[*GOOD_TITLES, "Refs \ufffd\ufffd\ufffd\ufffd end"],
    ),
    "dates out of range in json": Case(
        jsonl(
            '{"url": "https://news.example.com/d1", "title": "D1", "published_at": "9999-12-31T23:59:59-12:00"}',
            '{"url": "https://news.example.com/d2", "title": "D2", "published_at": "0001-01-01T00:00:00+14:00"}',
        ),
        says="line 2: published_at '9999-12-31T23:59:59-12:00' is outside the years 1970 to 2100",
    ),
    "date out of range in rss": Case(
        rss(item("Far future", "<pubDate>Fri, 31 Dec 9999 23:59:59 -1200</pubDate>")),
        name="feed.rss",
        says="item 2 “Far future”: its date 'Fri, 31 Dec 9999 23:59:59 -1200' is outside the years 1970 to 2100",
    ),
    "json array nested 100,000 deep": Case(jsonl("[" * 100_000 + "]" * 100_000), says="line 2: nested too deeply"),
    "json object nested 100,000 deep": Case(
        jsonl('{"a":' * 100_000 + "1" + "}" * 100_000), says="line 2: nested too deeply"
    ),
    "unclosed json nested 100,000 deep": Case(jsonl("[" * 100_000), says="line 2: nested too deeply"),
    "html body nested 100,000 deep": Case(
        jsonl(json.dumps({"url": "https://news.example.com/deep", "title": "Deep", "body": "<div>" * 100_000 + "x"})),
        stored=[*GOOD_TITLES, "Deep"],
    ),
    "html body leaving formatting open in every paragraph": Case(
        jsonl(
            json.dumps(
                {
                    "url": "https://news.example.com/wide",
                    "title": "Wide",
                    "body": "".join(f'<p>x<b title="{i:04}{"y" * 100}"></p>' for i in range(4000)),
                }
            )
        ),
        stored=[*GOOD_TITLES, "Wide"],
    ),
    "5,000-digit issue number": Case(
        jsonl('{"url": "https://news.example.com/n", "title": "N", "issue_number": ' + "9" * 5000 + "}"),
        says="line 2: a number with 5000 digits; at most 40 are allowed",
    ),
    "huge floats": Case(
        jsonl(
            '{"url": "https://news.example.com/f1", "title": 1e999999}',
            '{"url": "https://news.example.com/f2", "title": "F2", "priority": -1e999999}',
            '{"url": "https://news.example.com/f3", "title": "F3", "priority": NaN}',
        ),
        says="line 2: title must be a string, not float",
    ),
    "invalid utf-8 in json": Case(
        jsonl('{"url": "https://news.example.com/u", "title": "Caf\udce9"}'), says="line 2: not UTF-8 text"
    ),
    "invalid utf-8 in rss": Case(
        rss(item("Caf\udce9 opens", slug="cafe")), name="feed.rss", stored=[*GOOD_TITLES, "Café opens"]
    ),
    "duplicate guids": Case(
        jsonl(
            '{"guid": "dup", "url": "https://news.example.com/d", "title": "Dup one"}',
            '{"guid": "dup", "url": "https://news.example.com/d", "title": "Dup two"}',
        ),
        says="line 3: same guid as line 2; ignored",
        stored=[*GOOD_TITLES, "Dup one"],
    ),
    "xml nested 100,000 deep": Case(
        rss(item("Deep", "<description>" + "<x>" * 100_000 + "</x>" * 100_000 + "</description>")),
        name="feed.rss",
        stored=[*GOOD_TITLES, "Deep"],
    ),
    "unclosed xml nested 100,000 deep": Case(
        rss(item("Deep", "<x>" * 100_000)), name="feed.rss", says="not well-formed", stored=[*GOOD_TITLES, "Deep"]
    ),
    "billion laughs": Case(
        rss(item("&lol9;"), doctype=BILLION_LAUGHS), name="feed.rss", stored=[*GOOD_TITLES, "&lol9;"]
    ),
    "quadratic entity blowup": Case(
        rss(item("&a;" * 20_000), doctype=QUADRATIC),
        name="feed.rss",
        says="not well-formed",
        stored=[*GOOD_TITLES, trim_standfirst("&a;" * 20_000, 500)],  # never expanded
    ),
    "external entity": Case(
        rss(item("&xxe;"), doctype='<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'),
        name="feed.rss",
        says="not well-formed",
        stored=[*GOOD_TITLES, "&xxe;"],  # never expanded
        check=_nothing_from_outside,
    ),
    "a file over fetch.max_bytes": Case(
        jsonl(" " * 2000),
        exit_code=1,
        says="larger than fetch.max_bytes (1,000 bytes)",
        stored=[],
        fetch={"max_bytes": 1000},
    ),
    "/dev/zero": Case("/dev/zero", exit_code=1, says="/dev/zero: larger than fetch.max_bytes", stored=[]),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_hostile_source_gets_one_line_answers_and_keeps_the_good_items(
    case: Case, db_url: str, tmp_path: Path, runner: CliRunner
) -> None:
    if isinstance(case.data, str):
        if not os.path.exists(case.data) or sys.platform == "win32":
            pytest.skip(f"needs {case.data}")
        source = case.data
    else:
        source = str(tmp_path / case.name)
        Path(source).write_bytes(case.data)
    config = write_config(tmp_path / "newsletter.toml", db_url, **case.fetch)

    started = time.monotonic()
    result: Result = runner.invoke(cli, ["--config", str(config), "articles", "import", source])
    took = time.monotonic() - started

    assert result.exit_code == case.exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert all(_LINE.fullmatch(line) for line in lines), lines
    assert all(len(line) < 400 for line in lines), [line[:100] for line in lines]
    if case.exit_code:
        assert result.stdout == "" and len(lines) == 1 and lines[0].startswith(f"error: {source}: ")
    else:
        assert re.fullmatch(rf"{re.escape(source)}: \d+ new, 0 updated, 0 unchanged, \d+ rejected\n", result.stdout)
    if case.says:
        assert any(case.says in line for line in lines), lines
    assert took < 30, f"took {took:.1f} s"

    store = Store(db_url)
    try:
        with store.session() as session:
            articles = list(session.scalars(select(Article)))
            assert sorted(a.title for a in articles) == sorted(case.stored)
            for article in articles:
                assert article.url.startswith("https://news.example.com/") and article.guid
            if case.check:
                case.check(articles)
    finally:
        store.dispose()
