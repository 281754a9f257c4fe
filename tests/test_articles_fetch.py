"""Fetching feeds over HTTP from a real server on 127.0.0.1: conditional requests, limits, failures."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from newsletter.articles import fetch_feeds, import_source
from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config, FeedConfig
from newsletter.context import Context
from newsletter.demo.sink import free_port
from newsletter.errors import ArticleImportError
from newsletter.store import Store
from newsletter.store.models import FeedState
from newsletter.tokens import Tokens
from tests.conftest import make_config, replace
from tests.test_articles import DATA, count_articles, stored, write_config


@pytest.fixture
def ctx(db_url: str, store: Store, clock: FixedClock, tokens: Tokens) -> Context:
    """Importing sends no mail: the test configuration without the SMTP server the shared ``ctx`` starts."""
    return Context(make_config(db_url), store, clock, tokens)


RSS = (DATA / "gazette.rss").read_bytes()
RSS_LATER = (DATA / "gazette-updated.rss").read_bytes()
LAST_MODIFIED = "Tue, 24 Nov 2026 05:50:00 GMT"


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    etag: str = ""
    status: int = 200
    declare_length: bool = True
    stall_seconds: float = 0.0
    location: str = ""


@dataclass
class FeedServer:
    """A real HTTP server in a thread; ``requests`` holds (path, headers) of everything asked."""

    base: str
    routes: dict[str, Route]
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def asked(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        feeds = self.server.feeds
        feeds.requests.append((self.path, dict(self.headers.items())))
        route = feeds.routes.get(self.path)
        try:
            if route is None:
                self.send_error(404)
                return
            if route.etag and self.headers.get("If-None-Match") == route.etag:
                self.send_response(304)
                self.send_header("ETag", route.etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(route.status)
            self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            if route.location:
                self.send_header("Location", route.location)
            if route.etag:
                self.send_header("ETag", route.etag)
                self.send_header("Last-Modified", LAST_MODIFIED)
            if route.declare_length:
                self.send_header("Content-Length", str(len(route.body)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if route.stall_seconds:
                self.wfile.write(route.body[:100])
                self.wfile.flush()
                self.server.stop.wait(route.stall_seconds)
            self.wfile.write(route.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on purpose (too big, too slow)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, feeds: FeedServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.feeds = feeds
        self.stop = threading.Event()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    feeds = FeedServer(base="", routes={"/feed.xml": Route(RSS, etag='"v1"')})
    server = _Server(feeds)
    feeds.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="feed-server", daemon=True)
    thread.start()
    try:
        yield feeds
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def with_feeds(config: Config, *feeds: tuple[str, str]) -> Config:
    return dataclasses.replace(config, feeds=tuple(FeedConfig(url=url, section=section) for url, section in feeds))


def test_a_second_fetch_asks_with_the_etag_and_a_304_imports_nothing(store, clock, ctx, feed_server) -> None:
    url = feed_server.url("/feed.xml")
    ctx = replace(ctx, config=with_feeds(ctx.config, (url, "Gazette")))

    (first,) = fetch_feeds(ctx)
    assert (first.new, first.rejected, first.ok, first.not_modified) == (5, 1, True, False)
    with store.session() as session:
        state = session.get(FeedState, url)
        assert state is not None
        assert (state.etag, state.last_modified, state.fetched_at) == ('"v1"', LAST_MODIFIED, clock.now())
        assert state.status == f"{url}: 5 new, 0 updated, 0 unchanged, 1 rejected"
    before = stored(store)
    assert {a.section for a in before.values()} == {"Gazette"}

    clock.advance(3600)
    (second,) = fetch_feeds(ctx)

    first_request, second_request = feed_server.asked("/feed.xml")
    assert "If-None-Match" not in first_request
    assert second_request["If-None-Match"] == '"v1"'
    assert second_request["If-Modified-Since"] == LAST_MODIFIED
    assert second_request["User-Agent"].startswith("BreakfastInRed/")
    assert second.not_modified and second.ok
    assert (second.new, second.updated, second.rejected) == (0, 0, 0)
    assert second.describe() == f"{url}: unchanged since the last fetch (304 Not Modified); nothing to import"
    after = stored(store)
    assert {g: a.updated_at for g, a in after.items()} == {g: a.updated_at for g, a in before.items()}
    with store.session() as session:
        state = session.get(FeedState, url)
        assert state is not None and state.fetched_at == clock.now() and state.etag == '"v1"'

    # The feed changes: a new ETag, a full download, and only the differences are written.
    feed_server.routes["/feed.xml"] = Route(RSS_LATER, etag='"v2"')
    (third,) = fetch_feeds(ctx)
    assert (third.new, third.updated, third.unchanged, third.rejected) == (1, 1, 4, 2)
    with store.session() as session:
        assert session.get(FeedState, url).etag == '"v2"'  # type: ignore[union-attr]


def test_a_hand_import_of_a_url_reads_it_all_even_when_unchanged(ctx, feed_server) -> None:
    url = feed_server.url("/feed.xml")
    import_source(ctx, url)
    again = import_source(ctx, url)
    assert (again.not_modified, again.unchanged) == (False, 5)
    assert all("If-None-Match" not in headers for headers in feed_server.asked("/feed.xml"))


@pytest.mark.parametrize("declare_length", [True, False], ids=["Content-Length", "no length"])
def test_an_oversized_response_is_refused_and_nothing_is_written(store, db_url, ctx, feed_server, declare_length):
    feed_server.routes["/huge.xml"] = Route(RSS + b"<!--" + b"x" * 50_000 + b"-->", declare_length=declare_length)
    config = make_config(db_url, fetch={"max_bytes": 20_000})
    url = feed_server.url("/huge.xml")
    with pytest.raises(ArticleImportError) as caught:
        import_source(replace(ctx, config=config), url)
    assert str(caught.value) == f"{url}: the response is larger than fetch.max_bytes (20,000 bytes); refusing it"
    assert count_articles(store) == 0
    with store.session() as session:
        state = session.get(FeedState, url)
        assert state is not None and state.status == str(caught.value) and state.etag == ""


def test_a_server_that_stalls_is_given_up_on_after_the_timeout(store, db_url, ctx, feed_server) -> None:
    feed_server.routes["/slow.xml"] = Route(RSS, stall_seconds=5)
    config = make_config(db_url, fetch={"timeout": 1})
    url = feed_server.url("/slow.xml")
    with pytest.raises(ArticleImportError) as caught:
        import_source(replace(ctx, config=config), url)
    assert str(caught.value) == f"{url}: no complete answer within fetch.timeout (1 s)"
    assert count_articles(store) == 0


def test_http_errors_and_unreachable_servers_are_one_line_naming_the_url(ctx, feed_server) -> None:
    missing = feed_server.url("/gone.xml")
    with pytest.raises(ArticleImportError) as caught:
        import_source(ctx, missing)
    assert str(caught.value) == f"{missing}: the server answered 404 Not Found"

    closed = f"http://127.0.0.1:{free_port()}/feed.xml"
    with pytest.raises(ArticleImportError) as caught:
        import_source(ctx, closed)
    assert str(caught.value) == f"{closed}: cannot connect (Connection refused)"
    assert "\n" not in str(caught.value)


def test_redirects_are_followed_between_http_urls_only(ctx, feed_server) -> None:
    feed_server.routes["/moved.xml"] = Route(status=301, location=feed_server.url("/feed.xml"))
    feed_server.routes["/to-ftp.xml"] = Route(status=302, location="ftp://127.0.0.1/feed.xml")
    assert import_source(ctx, feed_server.url("/moved.xml")).new == 5
    with pytest.raises(ArticleImportError) as caught:
        import_source(ctx, feed_server.url("/to-ftp.xml"))
    assert str(caught.value) == f"{feed_server.url('/to-ftp.xml')}: the server answered 302 Found"


def test_one_failing_feed_does_not_stop_the_others(store, db_url, ctx, feed_server) -> None:
    closed = f"http://127.0.0.1:{free_port()}/feed.xml"
    not_a_feed = str(DATA / "not-a-feed.html")
    config = with_feeds(
        make_config(db_url),
        (closed, ""),
        (not_a_feed, ""),
        (feed_server.url("/feed.xml"), ""),
        (str(DATA / "culture.atom"), ""),
    )
    down, broken, gazette, culture = fetch_feeds(replace(ctx, config=config))
    assert down.error == f"{closed}: cannot connect (Connection refused)" and not down.ok
    assert broken.error == f"{not_a_feed}: not an RSS or Atom feed, nor JSON Lines"
    assert (gazette.ok, gazette.new, culture.ok, culture.new) == (True, 5, True, 2)
    assert count_articles(store) == 7
    with store.session() as session:
        states = {s.url: s.status for s in session.scalars(select(FeedState))}
    assert states == {
        closed: down.error,
        feed_server.url("/feed.xml"): gazette.describe(),
    }


def test_cli_fetch_reports_every_feed_and_exits_1_when_one_failed(runner, db_url, tmp_path, feed_server) -> None:
    good = feed_server.url("/feed.xml")
    closed = f"http://127.0.0.1:{free_port()}/feed.xml"
    config = write_config(tmp_path, db_url, feeds=[(good, "News"), (closed, "")], timeout=5)

    result = runner.invoke(cli, ["--config", str(config), "articles", "fetch"])

    assert result.exit_code == 1
    assert result.stdout == f"{good}: 5 new, 0 updated, 0 unchanged, 1 rejected\n"
    assert f"error: {closed}: cannot connect (Connection refused)\n" in result.stderr
    assert "  rejected: item 5 “An item with no link at all”: no link to the article\n" in result.stderr
    assert "Traceback" not in result.output

    config = write_config(tmp_path, db_url, feeds=[(good, "News")])
    again = runner.invoke(cli, ["--config", str(config), "articles", "fetch"])
    assert again.exit_code == 0, again.output
    assert again.stdout == f"{good}: unchanged since the last fetch (304 Not Modified); nothing to import\n"


def test_cli_import_of_an_unreachable_url_is_one_line(runner, db_url, tmp_path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/feed.xml"
    result = runner.invoke(cli, ["--config", str(write_config(tmp_path, db_url)), "articles", "import", closed])
    assert result.exit_code == 1
    assert result.stderr == f"error: {closed}: cannot connect (Connection refused)\n"
