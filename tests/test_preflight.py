"""Preflight: the edition as it will be sent, checked against a real local web site, the real
message builder, SpamAssassin and Chromium where installed; a corpus of bad editions, each
with the error it must produce; and the bad input preflight must survive without a traceback.

SQLite only: preflight reads the store through functions tested on both databases.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import newsletter.render
from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config, load_config
from newsletter.context import Context
from newsletter.dkim import generate_key
from newsletter.preflight import Report, Severity, Tools, run_preflight
from newsletter.preflight.commands import run_command
from newsletter.preflight.css import caniemail, check_css, usage_of
from newsletter.preflight.fetch import (
    BadUrlError,
    FetchError,
    LinkResult,
    Response,
    UrllibFetcher,
    fetch_all,
    request_url,
)
from newsletter.preflight.findings import Finding
from newsletter.preflight.headers import check_headers
from newsletter.preflight.htmlscan import scan_html
from newsletter.preflight.images import fetch_findings as image_fetch_findings
from newsletter.preflight.images import markup_findings
from newsletter.preflight.links import link_findings, network_down, unreachable_finding
from newsletter.preflight.size import check_size
from newsletter.preflight.spam import check_spam, parse_report
from newsletter.preflight.textpart import check_text_part
from newsletter.store import Store
from newsletter.tokens import Tokens
from tests.conftest import SECRET, add_article, add_subscribers, make_config
from tests.test_cli import write_config

DAY = date(2026, 11, 24)
CUTOFF = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
PACKAGE_EMAIL = Path(newsletter.render.__file__).parent / "templates" / "email"
AGENT = "preflight-test/1.0"
SPAMASSASSIN = shutil.which("spamassassin")
CHROMIUM = shutil.which("chromium") or (Path("/usr/bin/chromium").exists() and "/usr/bin/chromium") or None


# --- a local article site -----------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 would make a burst of links wait for SYN retries


class ArticleSite:
    """A threaded http.server on 127.0.0.1 playing the newsroom's site: good, moved, missing,
    hanging and HEAD-refusing pages, small and large images. It records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []  # (method, path, user agent)
        self.release = threading.Event()  # set at teardown: hanging requests end
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                method = "GET" if body else "HEAD"
                with site.lock:
                    site.requests.append((method, self.path, self.headers.get("User-Agent", "")))
                path = self.path.partition("?")[0]
                if path.startswith("/ok"):
                    self.reply(200, b"<html>ok</html>", body)
                elif path == "/moved":
                    self.reply(301, b"", body, Location="/ok/moved")
                elif path == "/moved-twice":
                    self.reply(302, b"", body, Location=f"{site.url}/moved")
                elif path == "/loop":
                    self.reply(302, b"", body, Location="/loop")
                elif path == "/elsewhere":
                    self.reply(301, b"", body, Location="javascript:alert(1)")
                elif path == "/slow":
                    site.release.wait(10)
                    self.reply(200, b"late", body)
                elif path == "/no-head":
                    if body:
                        self.reply(200, b"fine by GET", body)
                    else:
                        self.reply(405, b"", body)
                elif path == "/image.png":
                    self.reply(200, b"\x89PNG" + b"\x00" * 96, body, content_type="image/png")
                elif path == "/big.png":
                    self.reply(200, b"\x00" * 2_000_000, body, content_type="image/png")
                elif path == "/streamed.png":  # no Content-Length: the size is only known by reading
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    if body:
                        for _ in range(30):
                            self.wfile.write(b"\x00" * 50_000)
                else:
                    self.reply(404, b"not here", body)

            def reply(self, status: int, data: bytes, body: bool, content_type: str = "text/html", **headers: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="article-site", daemon=True)
        self.thread.start()

    def __call__(self, path: str) -> str:
        return self.url + path

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def site() -> Iterator[ArticleSite]:
    server = ArticleSite()
    try:
        yield server
    finally:
        server.close()


# --- editions ----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store (this module needs no PostgreSQL: it adds no queries)."""
    found = Store(f"sqlite:///{tmp_path / 'newsletter.db'}")
    found.upgrade()
    yield found
    found.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 24, 6, 30, tzinfo=UTC))


def configure(store: Store, tmp_path: Path, **sections: dict[str, Any]) -> Config:
    preflight = {"screenshot_dir": str(tmp_path / "shots"), "link_timeout_seconds": 1, "screenshots": False}
    preflight.update(sections.pop("preflight", {}))
    return make_config(str(store.engine.url), preflight=preflight, **sections)


def stories(store: Store, clock: FixedClock, urls: list[str], end: datetime = CUTOFF, **fields: Any) -> list[str]:
    """Articles published just before ``end`` (the morning's cutoff) linking to ``urls``; their titles."""
    titles = []
    for i, url in enumerate(urls):
        title = f"Story {i}: harbour, bridge & “tide”"
        add_article(store, clock, f"g{i}", end - timedelta(minutes=10 + i), url=url, title=title, **fields)
        titles.append(title)
    return titles


def offline_tools(fetcher: Any = None) -> Tools:
    """The real fetcher unless given, and neither SpamAssassin nor Chromium: the fast checks only."""
    return Tools(fetcher=fetcher or UrllibFetcher(AGENT), which=lambda name: None)


def preflight(config: Config, store: Store, clock: FixedClock, tools: Tools | None = None, **options: Any) -> Report:
    return run_preflight(Context(config, store, clock, Tokens(SECRET, clock)), DAY, tools or offline_tools(), **options)


def templates(tmp_path: Path, html: str | None = None, text: str | None = None) -> str:
    """A template override directory holding ``html`` as email/edition.html and ``text`` as edition.txt."""
    folder = tmp_path / "templates" / "email"
    folder.mkdir(parents=True, exist_ok=True)
    if html is not None:
        (folder / "edition.html").write_text(html, encoding="utf-8")
    if text is not None:
        (folder / "edition.txt").write_text(text, encoding="utf-8")
    return str(folder.parent)


def edited(name: str, old: str, new: str) -> str:
    source = (PACKAGE_EMAIL / name).read_text(encoding="utf-8")
    assert old in source
    return source.replace(old, new, 1)


def errors(report: Report) -> list[Finding]:
    return [f for f in report.findings if f.severity == Severity.ERROR]


def messages(report: Report, check: str, severity: Severity | None = None) -> list[str]:
    return [f.message for f in report.findings if f.check == check and severity in (None, f.severity)]


# --- URLs and fetching, against the local site -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "wire"),
    [
        ("https://news.example.com/a b", None),
        ("https://bücher.example/straße?q=ä", "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4"),
        ("https://EXAMPLE.com./x", "https://example.com/x"),
        ("https://b%C3%BCcher.example/x", "https://xn--bcher-kva.example/x"),  # as the HTML serialiser writes it
        ("http://[::1]:8080/", "http://[::1]:8080/"),
    ],
)
def test_a_url_goes_on_the_wire_in_ascii_with_its_host_in_idna(url: str, wire: str | None) -> None:
    if wire is None:
        with pytest.raises(BadUrlError, match="spaces"):
            request_url(url)
    else:
        assert request_url(url) == wire


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("javascript:alert(1)", "javascript: link"),
        ("/story/1", "relative link"),
        ("htp://news.example.com/", "htp: link"),
        ("https://news.example.com:99999/", "malformed"),
        ("http://[::1/", "malformed"),
        ("https://a..b.example/", "not a valid domain"),
        ("https://exa%20mple.com/", "not a valid domain"),
        ("https://" + "ü" * 70 + ".example/", "not a valid domain"),
        ("https:///path-only", "no host"),
    ],
)
def test_malformed_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(BadUrlError, match=reason):
        request_url(url)


def test_links_against_the_article_site(site: ArticleSite) -> None:
    urls = [site(p) for p in ("/ok/1", "/moved-twice", "/missing", "/no-head", "/loop", "/slow", "/elsewhere")]
    started = time.monotonic()
    results = fetch_all(urls, UrllibFetcher(AGENT), timeout=1, max_redirects=3, concurrency=4, deadline_seconds=10)
    assert time.monotonic() - started < 3  # the hanging page costs its timeout, no more
    ok, moved, missing, no_head, loop, slow, elsewhere = (results[u] for u in urls)
    assert (ok.status, ok.chain) == (200, ())
    assert moved.status == 200 and [s for _, s in moved.chain] == [302, 301] and moved.final_url == site("/ok/moved")
    assert missing.status == 404
    assert no_head.status == 200 and not no_head.chain  # HEAD refused, GET answered
    assert loop.failure == "redirects" and len(loop.chain) == 4
    assert slow.failure == "timeout"
    assert elsewhere.failure == "url" and "javascript" in elsewhere.detail

    found = link_findings(urls, results, timeout=1)
    text = "\n".join(f"{f.severity} {f.message}" for f in found)
    assert f"error 404 Not Found: {site('/missing')}" in text
    assert f"warning redirects: {site('/moved-twice')} → 302 {site('/moved')} → 301 {site('/ok/moved')} → 200" in text
    assert f"error more than 3 redirects: {site('/loop')}" in text
    assert f"warning no answer within 1 s: {site('/slow')}" in text
    assert "error redirects to a malformed address" in text
    assert "info 7 links checked: 2 fine, 1 redirected, 3 broken, 1 unanswered" in text
    with site.lock:
        agents = {agent for _, path, agent in site.requests if path == "/no-head"}
        methods = [method for method, path, _ in site.requests if path == "/no-head"]
    assert agents == {AGENT} and methods[-2:] == ["HEAD", "GET"]


def test_images_are_sized_by_head_or_by_reading_at_most_a_megabyte(site: ArticleSite) -> None:
    urls = [site("/image.png"), site("/big.png"), site("/streamed.png")]
    limits = dict.fromkeys(urls, 1_000_001)
    results = fetch_all(urls, UrllibFetcher(AGENT), timeout=2, max_redirects=2, concurrency=3, deadline_seconds=10,
                        read_limits=limits)  # fmt: skip
    assert results[urls[0]].size == 100
    assert results[urls[1]].size == 2_000_000  # from HEAD's Content-Length: nothing downloaded
    assert results[urls[2]].size == 1_000_001  # read up to the limit and no further


def test_a_hanging_site_does_not_hold_preflight_past_its_deadline(site: ArticleSite) -> None:
    urls = [site(f"/slow?{i}") for i in range(6)]
    started = time.monotonic()
    results = fetch_all(urls, UrllibFetcher(AGENT), timeout=5, max_redirects=0, concurrency=2, deadline_seconds=1)
    assert time.monotonic() - started < 3  # not the 15 s six hanging pages would take two at a time
    assert {r.failure for r in results.values()} <= {"deadline", "timeout"}
    assert any(r.failure == "deadline" for r in results.values())


def test_no_network_is_one_warning_however_many_links() -> None:
    def offline(method: str, url: str, *, timeout: float, read_limit: int = 0) -> Response:
        raise FetchError("dns", "the host name does not resolve")

    urls = [f"https://news.example.com/story/{i}" for i in range(300)]
    results = fetch_all(urls, offline, timeout=1, max_redirects=2, concurrency=8, deadline_seconds=10)
    assert network_down(results)
    found = unreachable_finding(results)
    assert found.severity == Severity.WARNING and "300 links and images not checked" in found.message
    # one link failing while others answer is that link's fault, not the network's
    results[urls[0]] = LinkResult(urls[0], status=200)
    assert not network_down(results)


# --- checks over plain data ------------------------------------------------------------------------


def test_size_against_gmails_clipping() -> None:
    over = check_size(110 * 1024, 140 * 1024)
    assert over[0].severity == Severity.ERROR and "110.0 KB, 10.0 KB over" in over[0].message
    assert check_size(95 * 1024, 120 * 1024)[0].severity == Severity.WARNING
    assert check_size(20 * 1024, 30 * 1024)[0].severity == Severity.INFO


def test_text_part_must_carry_every_story_and_link() -> None:
    text = "STORY ONE: A LONG\n  HEADLINE\n* Story two\n  https://news.example.com/2\n"
    found = check_text_part(
        ["Story one: a long headline", "Story two", "Story three"],
        ["https://news.example.com/2", "https://news.example.com/3", "mailto:desk@news.example.com"],
        text,
    )
    assert [(f.severity, f.target) for f in found] == [
        (Severity.ERROR, "Story one: a long headline"),  # the text part's capitals are another headline
        (Severity.ERROR, "Story three"),
        (Severity.WARNING, "https://news.example.com/3"),
    ]


def test_images_without_alt_sizes_or_a_web_address_and_images_that_fail() -> None:
    html = (
        '<img src="https://cdn.example.com/a.jpg" width="10" height="10" alt="A">'
        '<img src="https://cdn.example.com/b.jpg" width="10"><img src="logo.png" alt="" height="5" width="5">'
    )
    found = markup_findings(scan_html(html).images)
    assert [(f.severity, f.message.split(":")[0]) for f in found] == [
        (Severity.ERROR, "no alt text"),
        (Severity.WARNING, "1 image with no height attribute (the layout jumps as it loads, and Outlook may draw it "
                           "at its full size)"),
        (Severity.WARNING, "cannot be loaded by a mail client (not an http or https address)"),
    ]  # fmt: skip
    results = {
        "https://a/1.png": LinkResult("https://a/1.png", status=404, reason="Not Found"),
        "https://a/2.png": LinkResult("https://a/2.png", status=200, size=1_000_001),
        "https://a/3.png": LinkResult("https://a/3.png", failure="deadline"),
        "https://a/4.png": LinkResult("https://a/4.png", status=200, size=3_000),
    }
    found = image_fetch_findings(list(results), results)
    assert [f.message for f in found] == [
        "cannot be loaded (404 Not Found): https://a/1.png",
        "over 1 MB (slow on a phone; keep images under 1 MB): https://a/2.png",
        "1 image not checked in time: https://a/3.png",
    ]
    assert {f.severity for f in found} == {Severity.WARNING}


GOOD_HEAD = (
    "From: Breakfast in red <breakfast@news.example.com>\r\n"
    "Reply-To: desk@news.example.com\r\n"
    "Subject: Breakfast in red: Tuesday\r\n"
    "Date: Tue, 24 Nov 2026 06:00:00 +0000\r\n"
    "Message-ID: <20261124.1.abc@news.example.com>\r\n"
    'List-Id: "Breakfast in red" <breakfast-in-red.news.example.com>\r\n'
    "List-Unsubscribe: <https://news.example.com/u/x>,\r\n <mailto:breakfast@news.example.com?subject=u>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
)
SIGNED = (
    "DKIM-Signature: v=1; a=ed25519-sha256; d=news.example.com; s=s1;\r\n"
    " h=from:subject:date:message-id:list-unsubscribe:list-unsubscribe-post; bh=x; b=y\r\n"
)


def header_errors(head: str, dkim_domain: str = "news.example.com") -> list[str]:
    found = check_headers((head + "\r\nbody\r\n").encode(), dkim_domain)
    return [f.message for f in found if f.severity == Severity.ERROR]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("From: Breakfast in red <breakfast@news.example.com>\r\n", ""), "no From header"),
        (("Subject:", "From: x@news.example.com\r\nSubject:"), "From appears 2 times"),
        (("<breakfast@news.example.com>\r\n", "<breakfast at news>\r\n"), "From must hold exactly one valid address"),
        (("Tue, 24 Nov 2026 06:00:00 +0000", "yesterday"), "Date is not an RFC 5322 date"),
        (("<20261124.1.abc@news.example.com>", "20261124"), "Message-ID is not <left@right>"),
        (("<breakfast-in-red.news.example.com>", "<nodots>"), "List-Id is not"),
        (("<https://news.example.com/u/x>", "<http://news.example.com/u/x>"), "no https URI"),
        (("<https://news.example.com/u/x>,", "https://news.example.com/u/x,"), "must be <URI>s"),
        (("List-Unsubscribe=One-Click", "List-Unsubscribe=one-click"), "must be exactly"),
        (("Reply-To: desk@news.example.com", "Reply-To: desk@"), "Reply-To is not a valid address"),
        (("d=news.example.com", "d=mailer.example.net"), "does not align with the From domain news.example.com"),
        ((":list-unsubscribe-post", ""), "does not cover list-unsubscribe-post"),
        (("DKIM-Signature", "X-Not-Signature"), "no DKIM-Signature although [dkim] signs"),
    ],
)
def test_a_bad_header_is_an_error(change: tuple[str, str], expected: str) -> None:
    good = SIGNED + GOOD_HEAD
    assert header_errors(good) == []
    old, new = change
    assert old in good
    found = header_errors(good.replace(old, new, 1))
    assert any(expected in message for message in found), found


def test_a_parent_domain_signature_aligns_and_no_dkim_is_a_warning() -> None:
    parent = SIGNED.replace("d=news.example.com", "d=example.com") + GOOD_HEAD
    assert header_errors(parent, "example.com") == []
    unsigned = check_headers((GOOD_HEAD + "\r\n").encode(), "")
    assert [f.severity for f in unsigned] == [Severity.WARNING] and "Gmail's and Yahoo's" in unsigned[0].message


def test_css_features_clients_ignore_are_found_and_grouped_per_client() -> None:
    html = """<!DOCTYPE html><html><head><style>
      /* dark mode */
      @media (prefers-color-scheme: dark) { td.card:hover > a { color: var(--ink) !important; } }
      @import url("x.css");
    </style></head><body>
      <div style="display:flex; gap: 2rem; background-image: linear-gradient(red, blue)">
        <img src="https://cdn.example.com/a.webp" alt="" width="10" height="10"><video></video></div>
    </body></html>"""
    usage = usage_of(scan_html(html))
    assert {"display", "gap", "background-image"} <= usage.property
    assert ("display", "flex") in usage.value and "linear-gradient" in usage.function and "rem" in usage.unit
    assert {"media", "import"} <= usage.at_rule and "prefers-color-scheme" in usage.media_feature
    assert "hover" in usage.pseudo_class and {"class", "child", "chaining"} <= usage.selector
    assert {"important", "custom_property", "css_comment", "doctype"} <= usage.flags
    assert "webp" in usage.image_format and "video" in usage.element

    found = check_css(scan_html(html))
    warnings = [f for f in found if f.severity == Severity.WARNING]
    outlook = next(f for f in warnings if f.message.startswith("Outlook does not support"))
    assert "(Windows, Windows Mail)" in outlook.message and "css-display-flex" in outlook.target.split(",")
    assert len({f.message.split(" does not")[0] for f in warnings}) == len(warnings)  # one line per client
    assert found[-1].severity == Severity.INFO and "caniemail" in found[-1].message


def test_the_bundled_caniemail_data_carries_its_licence_and_source() -> None:
    data = caniemail()
    assert data["source"]["repository"] == "https://github.com/hteumeuleu/caniemail"
    assert set(data["clients"]) >= {"gmail", "outlook", "apple-mail", "yahoo", "samsung-email"}
    assert len(data["features"]) > 250
    folder = Path(newsletter.preflight.__file__).parent / "data"
    assert "MIT License" in (folder / "CANIEMAIL-LICENSE").read_text()
    assert "scripts/caniemail_data.py" in (folder / "README.md").read_text()


SPAM_REPORT = """X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm
X-Spam-Status: Yes, score=6.3 required=5.0 tests=HTML_MESSAGE,MIME_HTML_ONLY,
\tLOTS_OF_MONEY autolearn=no version=4.0.1
Subject: win

Content analysis details:   (6.3 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
 0.0 HTML_MESSAGE           BODY: HTML included in message
 1.1 MIME_HTML_ONLY         BODY: Message only has text/html MIME parts
 5.2 LOTS_OF_MONEY          Huge... sums of money
                            (more description)

"""


def test_spamassassins_report_is_read_and_judged_against_the_threshold() -> None:
    result = parse_report(SPAM_REPORT)
    assert result is not None and result.score == 6.3
    assert [r[0] for r in result.rules] == ["LOTS_OF_MONEY", "MIME_HTML_ONLY", "HTML_MESSAGE"]
    assert parse_report("no report at all") is None

    def fake(argv: list[str], data: bytes, timeout: float) -> Any:
        assert "--local" in argv and "--nocreate-prefs" in argv
        return run_command(["cat"], SPAM_REPORT.encode(), 5)

    found = check_spam(b"message", fake, lambda name: "/usr/bin/" + name, threshold=5.0)
    assert found[0].severity == Severity.WARNING and "LOTS_OF_MONEY +5.2" in found[0].message
    assert check_spam(b"message", fake, lambda name: "/usr/bin/" + name, 7.0)[0].severity == Severity.INFO
    missing = check_spam(b"message", fake, lambda name: None, 5.0)
    assert missing[0].severity == Severity.INFO and "not installed" in missing[0].message


def test_a_command_that_hangs_is_stopped_at_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_command(["sleep", "30"], b"", 0.3)
    assert time.monotonic() - started < 5


def test_an_edition_that_has_gone_out_is_checked_as_stored(store: Store, clock: FixedClock, tmp_path: Path) -> None:
    from newsletter.publish import send_edition

    # a real-looking site (example domains are never fetched), answered by a fake fetcher
    stories(store, clock, ["https://gazette.co.uk/a", "https://gazette.co.uk/b"])
    add_subscribers(store, clock, 1)
    config = configure(store, tmp_path, delivery={"transport": "maildir", "maildir": str(tmp_path / "outbox")},
                       web={"base_url": "https://gazette.co.uk/newsletter"})  # fmt: skip
    assert send_edition(Context(config, store, clock, Tokens(SECRET, clock)), day=DAY).outcome == "sent"
    asked: list[str] = []

    def fetcher(method: str, url: str, *, timeout: float, read_limit: int = 0) -> Response:
        asked.append(url)
        return Response(200, "OK")

    report = preflight(config, store, clock, offline_tools(fetcher))
    assert report.origin == "stored copy, sent" and errors(report) == [], report.text_lines()
    # the stored copy's tracked links read back as the stories; its public page is checked now it exists
    assert set(asked) == {
        "https://gazette.co.uk/a",
        "https://gazette.co.uk/b",
        "https://gazette.co.uk/newsletter/editions/2026-11-24",
    }


def test_a_made_edition_is_checked_as_saved_when_asked(store: Store, clock: FixedClock, tmp_path: Path) -> None:
    from newsletter.preparation import prepare_edition

    stories(store, clock, ["https://news.example.com/a"])
    config = configure(store, tmp_path)
    made = prepare_edition(Context(config, store, clock, Tokens(SECRET, clock)), DAY)
    add_article(store, clock, "late", CUTOFF - timedelta(minutes=1), url="https://news.example.com/late", title="Late")
    again = preflight(config, store, clock, check_links=False)  # what send would make now: the late story too
    saved = preflight(config, store, clock, check_links=False, stored=True)  # what was made
    assert again.origin.startswith("as send would make it now; made") and saved.origin == "stored copy, made"
    assert errors(again) == errors(saved) == []
    sizes = [next(m for m in messages(r, "size") if m.startswith("HTML part")) for r in (again, saved)]
    assert sizes[0] != sizes[1] and made.status.value == "ready"


# --- the corpus: bad editions, each with its error -------------------------------------------------


def test_a_good_edition_has_no_errors(store: Store, clock: FixedClock, tmp_path: Path, site: ArticleSite) -> None:
    titles = stories(store, clock, [site("/ok/1"), site("/ok/2"), site("/no-head")])
    report = preflight(configure(store, tmp_path), store, clock)
    assert errors(report) == [], report.text_lines()
    assert report.ok and report.exit_code == 0 and report.subject.startswith("Breakfast in red")
    assert "3 links checked: 3 fine" in messages(report, "links")
    assert any("not https" in m for m in messages(report, "links", Severity.WARNING))  # the test site is http
    assert report.origin.startswith("as send would make it now")
    # the reader's own unsubscribe link and the edition's page (public once sent) are not fetched
    with site.lock:
        paths = {path for _, path, _ in site.requests}
    assert not any("unsubscribe" in p or "editions" in p for p in paths)
    assert len(titles) == 3


def test_a_good_edition_signed_with_dkim_has_aligned_covering_signature(
    store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    stories(store, clock, ["https://news.example.com/a"])
    pem, _ = generate_key("ed25519-sha256")
    dkim = {"domain": "news.example.com", "selector": "s1", "algorithm": "ed25519-sha256", "key": pem.decode()}
    report = preflight(configure(store, tmp_path, dkim=dkim), store, clock, check_links=False)
    assert errors(report) == [] and not messages(report, "headers", Severity.WARNING), report.text_lines()


FOOTER = '<tr><td class="footer">'
MASTHEAD = '<h1 class="masthead-name">'
TEXT_STORY = '* {{ story.title | wordwrap(70, wrapstring="\\n  ") }}'
BAD_EDITIONS: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (what to change, the check, words of its error); SITE is the article site's address
    "oversized HTML": (
        {"html": (FOOTER, '<tr><td>{{ "Lorem ipsum. " * 9000 }}</td></tr>' + FOOTER)},
        "size",
        "over Gmail's clipping limit",
    ),
    "broken link": ({"url": "/missing"}, "links", "404 Not Found"),
    "missing alt": (
        {"html": (MASTHEAD, '<img src="SITE/image.png" width="100" height="20">' + MASTHEAD)},
        "images",
        "no alt text: SITE/image.png",
    ),
    "bad header": (
        {"web": {"base_url": "http://news.example.com/newsletter"}},
        "headers",
        "List-Unsubscribe has no https URI",
    ),
    "missing text-part story": (
        {"text": (TEXT_STORY, "*")},
        "text part",
        "story missing from the plain-text part: Story 1",
    ),
}


@pytest.mark.parametrize("name", list(BAD_EDITIONS))
def test_each_bad_edition_reports_its_error(
    name: str, store: Store, clock: FixedClock, tmp_path: Path, site: ArticleSite
) -> None:
    change, check, words = BAD_EDITIONS[name]
    words = words.replace("SITE", site.url)
    sections: dict[str, Any] = {"web": change["web"]} if "web" in change else {}
    html = edited("edition.html", *[s.replace("SITE", site.url) for s in change["html"]]) if "html" in change else None
    text = edited("edition.txt", *change["text"]) if "text" in change else None
    if html or text:
        sections["newsletter"] = {"templates": templates(tmp_path, html, text)}
    stories(store, clock, [site(change.get("url", "/ok/a")), site("/ok/b")])
    report = preflight(configure(store, tmp_path, **sections), store, clock)
    assert any(words in f.message for f in errors(report) if f.check == check), report.text_lines()
    assert report.exit_code == 1
    assert {f.check for f in errors(report)} == {check}  # that error alone


# --- bad input: findings, never a traceback ----------------------------------------------------------


def test_an_edition_with_300_links(store: Store, clock: FixedClock, tmp_path: Path, site: ArticleSite) -> None:
    many = site("/ok/many/")
    links = f'{{% for i in range(300) %}}<a href="{many}{{{{ i }}}}">{{{{ i }}}}</a> {{% endfor %}}'
    html = edited("edition.html", '<tr><td class="footer">', f'<tr><td>{links}</td></tr><tr><td class="footer">')
    lines = f"{{% for i in range(300) %}}{many}{{{{ i }}}}\n{{% endfor %}}"
    text = edited("edition.txt", "View in your browser:", f"{lines}\nView in your browser:")
    stories(store, clock, [site("/ok/1")])
    config = configure(store, tmp_path, newsletter={"templates": templates(tmp_path, html, text)},
                       preflight={"link_concurrency": 16})  # fmt: skip
    started = time.monotonic()
    report = preflight(config, store, clock)
    assert time.monotonic() - started < 10
    assert errors(report) == [], report.text_lines()
    assert "301 links checked: 301 fine" in messages(report, "links")


def test_a_link_server_that_hangs(store: Store, clock: FixedClock, tmp_path: Path, site: ArticleSite) -> None:
    stories(store, clock, [site("/slow"), site("/ok/1")])
    started = time.monotonic()
    report = preflight(configure(store, tmp_path, preflight={"link_check_seconds": 5}), store, clock)
    assert time.monotonic() - started < 3.5
    assert f"no answer within 1 s: {site('/slow')}" in messages(report, "links", Severity.WARNING)
    assert report.ok


def test_malformed_urls(store: Store, clock: FixedClock, tmp_path: Path, site: ArticleSite) -> None:
    bad = ["htp://news.example.com/x", "https://exa mple.com/", "javascript:alert(1)", "/relative", ""]
    anchors = "".join(f'<a href="{u}">bad</a>' for u in bad)
    html = edited("edition.html", '<tr><td class="footer">', f'<tr><td>{anchors}</td></tr><tr><td class="footer">')
    # an article URL can be malformed too: a port out of range passes the importer's check
    stories(store, clock, [site("/ok/1"), "https://news.example.com:99999/story"])
    config = configure(store, tmp_path, newsletter={"templates": templates(tmp_path, html)})
    report = preflight(config, store, clock)
    found = messages(report, "links", Severity.ERROR)
    assert len([m for m in found if m.startswith("malformed link")]) == 6, report.text_lines()
    assert any("htp: link" in m for m in found) and any("javascript: link" in m for m in found)
    assert any("empty link" in m for m in found) and any("port out of range" in m.lower() for m in found)


def test_non_ascii_domains(store: Store, clock: FixedClock, tmp_path: Path) -> None:
    asked: list[str] = []

    def fetcher(method: str, url: str, *, timeout: float, read_limit: int = 0) -> Response:
        asked.append(url)
        return Response(200, "OK")

    stories(store, clock, ["https://bücher.de/straße", "https://" + "ä" * 64 + ".de/x"])
    report = preflight(configure(store, tmp_path), store, clock, offline_tools(fetcher))
    assert "https://xn--bcher-kva.de/stra%C3%9Fe" in asked
    invalid = messages(report, "links", Severity.ERROR)
    assert len(invalid) == 1 and "is not a valid domain" in invalid[0], report.text_lines()


def test_links_and_images_on_example_domains_are_one_warning_and_never_fetched(
    store: Store, clock: FixedClock, tmp_path: Path, site: ArticleSite
) -> None:
    asked: list[str] = []

    def fetcher(method: str, url: str, *, timeout: float, read_limit: int = 0) -> Response:
        asked.append(url)
        return Response(200, "OK")

    urls = ["https://news.example.com/a", "https://bücher.example/b", "https://shop.test/c", site("/ok/1")]
    stories(store, clock, urls, image_url="https://img.example.org/p.jpg", image_alt="Harbour")
    report = preflight(configure(store, tmp_path), store, clock, offline_tools(fetcher))
    assert asked == [site("/ok/1")], asked
    found = messages(report, "links", Severity.WARNING)
    assert any(
        m.startswith("4 links and images on domains reserved for examples (news.example.com, bücher.example, "
                     "shop.test and 1 more)") for m in found
    ), "\n".join(report.text_lines())  # fmt: skip
    assert report.ok


def test_an_html_part_of_5_mb(store: Store, clock: FixedClock, tmp_path: Path, site: ArticleSite) -> None:
    padding = '<tr><td>{{ "Lorem ipsum dolor sit amet. " * 190000 }}</td></tr><tr><td class="footer">'
    html = edited("edition.html", '<tr><td class="footer">', padding)
    stories(store, clock, [site("/ok/1")])
    config = configure(store, tmp_path, newsletter={"templates": templates(tmp_path, html)})
    report = preflight(config, store, clock, Tools(fetcher=UrllibFetcher(AGENT)))  # SpamAssassin declines it
    size = messages(report, "size", Severity.ERROR)
    assert len(size) == 1 and re.match(r"HTML part is 5\d{3}\.\d KB, 5\d{3}\.\d KB over", size[0]), report.text_lines()
    assert any("too big for a spam score" in m for m in messages(report, "spam")) or SPAMASSASSIN is None


# --- SpamAssassin and Chromium, where installed ---------------------------------------------------------


@pytest.mark.skipif(SPAMASSASSIN is None, reason="spamassassin is not installed (Debian: spamassassin)")
def test_spamassassin_scores_the_edition(store: Store, clock: FixedClock, tmp_path: Path) -> None:
    stories(store, clock, ["https://news.example.com/a", "https://news.example.com/b"])
    report = preflight(configure(store, tmp_path), store, clock, Tools(fetcher=UrllibFetcher(AGENT),
                       which=lambda name: shutil.which(name) if name == "spamassassin" else None),
                       check_links=False)  # fmt: skip
    spam = messages(report, "spam")
    assert len(spam) == 1 and spam[0].startswith("SpamAssassin score "), report.text_lines()
    assert messages(report, "spam", Severity.INFO) == spam  # the stock edition is far below 5


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: chromium)")
def test_screenshots_at_phone_and_desktop_width_without_the_network(
    store: Store, clock: FixedClock, tmp_path: Path, site: ArticleSite
) -> None:
    stories(store, clock, ["https://news.example.com/a"], image_url=site("/image.png?screenshot"), image_alt="Dawn")
    config = configure(store, tmp_path, preflight={"screenshots": True})
    report = preflight(config, store, clock, Tools(fetcher=UrllibFetcher(AGENT),
                       which=lambda name: CHROMIUM if name.startswith("chromium") else None),
                       check_links=False)  # fmt: skip
    folder = tmp_path / "shots" / DAY.isoformat()
    assert report.screenshots == [str(folder / "edition-375.png"), str(folder / "edition-600.png")], report.text_lines()
    for path in report.screenshots:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Content-Security-Policy" in (folder / "edition.html").read_text()
    with site.lock:
        assert not [p for _, p, _ in site.requests if "screenshot" in p]  # the image was never fetched


# --- the command ---------------------------------------------------------------------------------------


def test_the_command_reports_in_text_and_json(runner: CliRunner, tmp_path: Path, site: ArticleSite) -> None:
    path = write_config(tmp_path / "newsletter.toml", "sqlite:///site.db", None,
                        preflight={"link_timeout_seconds": 1, "screenshots": False})  # fmt: skip
    config = load_config(path, {})
    assert config.preflight.screenshot_dir == str(tmp_path.resolve() / "preflight")
    store = Store(config.store.url)
    store.upgrade()
    now = FixedClock(datetime.now(UTC))
    stories(store, now, [site("/ok/1"), site("/missing")], end=now.now())  # in the next edition, whenever now is
    store.dispose()

    result = runner.invoke(cli, ["--config", str(path), "preflight"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "error    links" in result.stdout and f"404 Not Found: {site('/missing')}" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].endswith("not ready: fix the errors above")

    result = runner.invoke(cli, ["--config", str(path), "preflight", "--json", "--no-links"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summary = lines[-1]
    assert summary["summary"] is True and summary["errors"] == 0 and summary["ok"] is True
    assert all({"severity", "check", "message"} <= set(line) for line in lines[:-1])
    assert {"severity": "info", "check": "links", "message": "2 links and 0 images not fetched (--no-links)"} in lines

    bad = runner.invoke(cli, ["--config", str(path), "preflight", "--date", "someday"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: chromium)")
def test_a_fresh_project_with_the_demo_articles_gets_a_clean_report(runner: CliRunner, tmp_path: Path) -> None:
    from newsletter.clock import SystemClock
    from newsletter.demo.newsroom import seed

    folder = tmp_path / "site"
    assert runner.invoke(cli, ["init", "--dir", str(folder)]).exit_code == 0
    config = load_config(folder / "newsletter.toml", {})
    store = Store(config.store.url)
    clock = SystemClock()
    seed(Context(config, store, clock, Tokens(config.require_secret_key(), clock)), 0)
    store.dispose()
    result = runner.invoke(cli, ["--config", str(folder / "newsletter.toml"), "preflight", "--no-links"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("error")], result.stdout
    shots = [line.removeprefix("screenshot: ") for line in lines if line.startswith("screenshot: ")]
    assert len(shots) == 2 and all(Path(s).is_file() for s in shots)
    assert Path(shots[0]).parent.parent == folder.resolve() / "preflight"
    assert "ready to send" in lines[-1]
