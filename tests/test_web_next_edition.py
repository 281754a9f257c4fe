"""The admin's next-edition page: its state, a preview as readers get it, and the editors' controls."""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.security import generate_password_hash

from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.context import Context
from newsletter.demo.sink import free_port
from newsletter.preparation import prepare_edition
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.models import Article, Edition, EditionStatus, StaffUser
from newsletter.tokens import Tokens
from newsletter.web import create_app
from tests.conftest import SECRET, add_article, add_subscribers, make_config, morning_articles

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
DAY = date(2026, 11, 24)  # the edition due at the fixed clock (06:30 UTC, after the 06:00 send)
PAGE = f"/admin/next?date={DAY}"
PREVIEW = f"/admin/next/preview?date={DAY}"


def make_app(config: Config, store: Store, clock: FixedClock) -> Flask:
    # A cheap hash keeps these tests fast; `staff add` itself uses werkzeug's default (scrypt).
    cheap = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
    with store.session() as session:
        if session.scalars(select(StaffUser).where(StaffUser.username == "ana")).first() is None:
            session.add(StaffUser(username="ana", password_hash=cheap, created_at=clock.now()))
    return create_app(config, store=store, clock=clock)


# The site at the root of its host, so paths here are the app's own; serving under
# base_url's path is tested in test_web.py.
SITE = {"base_url": "https://news.example.com"}


@pytest.fixture
def config(db_url: str, smtp_sink) -> Config:
    return make_config(db_url, smtp_sink, web=SITE)


@pytest.fixture
def app(config: Config, store: Store, clock: FixedClock) -> Flask:
    return make_app(config, store, clock)


def browser(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_REFERER"] = "https://localhost/admin/"
    return client


def token_on(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    found = CSRF.search(page.get_data(as_text=True))
    assert found is not None
    return found.group(1)


def logged_in(app: Flask) -> FlaskClient:
    client = browser(app)
    data = {"csrf_token": token_on(client, "/admin/login"), "username": "ana", "password": PASSWORD}
    assert client.post("/admin/login", data=data).status_code == 302
    return client


@pytest.fixture
def staff(app: Flask) -> FlaskClient:
    return logged_in(app)


def article_id(store: Store, guid: str) -> int:
    with store.session() as session:
        return session.scalars(select(Article.id).where(Article.guid == guid)).one()


def post(client: FlaskClient, path: str, **fields: str):
    """A form on the page, sent as the browser sends it: with its token and the page's date."""
    data = {"csrf_token": token_on(client, PAGE), "date": DAY.isoformat(), **fields}
    return client.post(path, data=data)


def text_of(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return unescape(response.get_data(as_text=True))


def plain(html: str) -> str:
    """The page's text without its tags."""
    return re.sub(r"<[^>]+>", "", html)


def lead_headline(preview: str) -> str:
    found = re.search(r'class="lead-headline"[^>]*>\s*<a [^>]*>([^<]+)</a>', preview)
    assert found, "no lead headline in the preview"
    return found.group(1).strip()


def story_order(html: str, titles: list[str]) -> list[str]:
    """The given titles in the order they appear in ``html``."""
    found = {t: html.find(t) for t in titles}
    assert all(pos >= 0 for pos in found.values()), found
    return sorted(titles, key=found.__getitem__)


def flashed(client: FlaskClient, response) -> str:
    """The page a redirect leads to, with its flashed notice."""
    assert response.status_code == 303, response.status_code
    location = urlsplit(response.headers["Location"])
    assert location.path == "/admin/next"
    page = text_of(client, f"{location.path}?{location.query}" if location.query else location.path)
    notices = re.findall(r'<p class="notice" role="status">(.*?)</p>', page, re.S)
    assert notices, "no notice on the page"
    return " ".join(notices)


# --- the login --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/next", PAGE, PREVIEW])
def test_nothing_without_a_login(app, path):
    response = browser(app).get(path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/admin/login" and parse_qs(location.query)["next"] == [path]


def test_actions_need_a_login(app, store, clock):
    morning_articles(store, clock)
    story = article_id(store, "story-2")
    client = browser(app)
    token = token_on(client, "/admin/login")  # a valid form token, but nobody logged in
    for action in ("pin", "unpin", "hide", "unhide", "priority"):
        refused = client.post(
            f"/admin/next/articles/{story}/{action}", data={"csrf_token": token, "date": DAY, "priority": "3"}
        )
        assert refused.status_code == 302 and "/admin/login" in refused.headers["Location"], action
    refused = client.post("/admin/next/test-copy", data={"csrf_token": token, "email": "x@example.org"})
    assert refused.status_code == 302 and "/admin/login" in refused.headers["Location"]
    with store.session() as session:
        article = session.get(Article, story)
        assert article is not None and article.pinned_for is None and not article.hidden


def test_the_admin_nav_links_to_the_page(staff):
    assert 'href="/admin/next">Next edition</a>' in staff.get("/admin/editions").get_data(as_text=True)


# --- state and preview ----------------------------------------------------------------------


def test_not_made_shows_the_next_edition_with_its_stories_and_a_framable_preview(staff, store, clock):
    morning_articles(store, clock)
    response = staff.get("/admin/next")
    assert response.status_code == 200
    page = unescape(response.get_data(as_text=True))
    assert "Next edition: Tuesday 24 November 2026" in plain(page) and "2026-11-24" in page
    assert "not made" in page and "Breakfast in red" in page
    reading = ["Story story-0", "Story story-1", "Story story-2"]
    assert story_order(page, reading) == reading  # the lead, then Sport (its first story is newer), then News
    assert f'src="/admin/next/preview?date={DAY}"' in page
    csp = response.headers["Content-Security-Policy"]
    assert "frame-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"

    preview = staff.get(PREVIEW)
    assert preview.status_code == 200
    html = preview.get_data(as_text=True)
    assert "Good morning, Ana" in html and "NLGREET" not in html and "NLUNSUB" not in html
    assert "https://news.example.com/unsubscribe/PREVIEW" in html
    assert lead_headline(html) == "Story story-0"
    csp = preview.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in csp and "default-src 'none'" in csp and "script-src" not in csp
    assert "style-src 'unsafe-inline'" in csp and "img-src https: http: data:" in csp
    assert preview.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert preview.headers["Cache-Control"] == "no-store"


def test_made_sending_sent_and_skipped(staff, store, clock, ctx, smtp_sink):
    # Skipped: the edition was made with nothing in it.
    prepare_edition(ctx, DAY)
    page = text_of(staff, PAGE)
    assert ">skipped<" in page and "No stories yet" in page

    # Made: articles arrived, and the edition was made again.
    morning_articles(store, clock)
    prepare_edition(ctx, DAY)
    page = text_of(staff, PAGE)
    assert ">made<" in page and "Story story-0" in page and "Pin as lead" in page

    # Sending, then sent: the stories are fixed and the preview is the stored copy.
    with store.session() as session:
        session.execute(update(Edition).where(Edition.date == DAY).values(status=EditionStatus.SENDING))
    page = text_of(staff, PAGE)
    assert ">sending<" in page and "its stories are fixed" in page and "Pin as lead" not in page
    with store.session() as session:
        session.execute(update(Edition).where(Edition.date == DAY).values(status=EditionStatus.READY))
    add_subscribers(store, clock, 1)
    report = send_edition(ctx, day=DAY)
    assert report.outcome == "sent", report.message
    page = text_of(staff, PAGE)
    assert ">sent<" in page and "its stories are fixed" in page and "3 stories" in page
    assert f'href="/admin/editions/{DAY}"' in page
    html = text_of(staff, PREVIEW)
    assert lead_headline(html) == "Story story-0" and "Good morning, Ana" in html

    # The next edition is now tomorrow's: nothing published for it yet.
    page = text_of(staff, "/admin/next")
    assert "Next edition: Wednesday 25 November 2026" in plain(page) and "not made" in page


# --- the editors' controls --------------------------------------------------------------------


def test_pin_changes_the_lead_and_unpin_gives_it_back(staff, store, clock, caplog):
    morning_articles(store, clock)
    story = article_id(store, "story-2")
    assert lead_headline(text_of(staff, PREVIEW)) == "Story story-0"
    caplog.set_level("INFO", logger="newsletter.web.admin")
    response = post(staff, f"/admin/next/articles/{story}/pin")
    assert response.headers["Location"].endswith(f"/admin/next?date={DAY}")
    assert f"“Story story-2” leads the edition of {DAY}" in flashed(staff, response)
    assert any("ana" in r.getMessage() and "leads the edition" in r.getMessage() for r in caplog.records)
    assert lead_headline(text_of(staff, PREVIEW)) == "Story story-2"
    page = text_of(staff, PAGE)
    assert "pinned as lead" in page and "Unpin" in page
    assert story_order(page, ["Story story-2", "Story story-0"]) == ["Story story-2", "Story story-0"]

    response = post(staff, f"/admin/next/articles/{story}/unpin")
    assert f"no longer leads the edition of {DAY}" in flashed(staff, response)
    assert lead_headline(text_of(staff, PREVIEW)) == "Story story-0"


def test_hide_removes_a_story_and_unhide_brings_it_back(staff, store, clock):
    morning_articles(store, clock)
    story = article_id(store, "story-1")
    assert "Story story-1" in text_of(staff, PREVIEW)
    response = post(staff, f"/admin/next/articles/{story}/hide")
    assert "“Story story-1” hidden" in flashed(staff, response)
    assert "Story story-1" not in text_of(staff, PREVIEW)
    page = text_of(staff, PAGE)
    hidden = page[page.index("Hidden stories") :]
    assert "Story story-1" in hidden and "Unhide" in hidden
    assert "Story story-1" not in page[: page.index("Hidden stories")]

    response = post(staff, f"/admin/next/articles/{story}/unhide")
    assert "shown again" in flashed(staff, response)
    assert "Story story-1" in text_of(staff, PREVIEW)
    page = text_of(staff, PAGE)
    assert "Unhide" not in page and "Story story-1" in page[: page.index("Hidden stories")]


def test_priority_reorders_stories_within_a_section(staff, store, clock):
    morning_articles(store, clock, count=5)  # News: 0 (the lead), 2, 4; Sport: 1, 3
    news = ["Story story-2", "Story story-4"]
    assert story_order(text_of(staff, PREVIEW), news) == news  # the newest first
    # With no pictures the lead is the highest-priority story: keep story-0 there.
    response = post(staff, f"/admin/next/articles/{article_id(store, 'story-0')}/priority", priority="10")
    assert "changed priority" in flashed(staff, response)
    response = post(staff, f"/admin/next/articles/{article_id(store, 'story-4')}/priority", priority="5")
    assert "changed priority" in flashed(staff, response)
    assert story_order(text_of(staff, PREVIEW), news) == news[::-1]
    page = text_of(staff, PAGE)
    assert story_order(page, news) == news[::-1] and "priority 5" in page
    assert 'name="priority" type="number"' in page and 'value="5"' in page
    # Sport keeps its order; the lead is still the lead.
    assert story_order(text_of(staff, PREVIEW), ["Story story-1", "Story story-3"]) == [
        "Story story-1",
        "Story story-3",
    ]
    assert lead_headline(text_of(staff, PREVIEW)) == "Story story-0"
    assert (
        post(staff, f"/admin/next/articles/{article_id(store, 'story-4')}/priority", priority=" -1000 ").status_code
        == 303
    )


@pytest.mark.parametrize("priority", ["", "abc", "1001", "-1001", "1.5", "1e3", "١", "99999999999999999999", "--1"])
def test_a_bad_priority_is_refused(staff, store, clock, priority):
    morning_articles(store, clock)
    story = article_id(store, "story-2")
    assert post(staff, f"/admin/next/articles/{story}/priority", priority=priority).status_code == 400
    with store.session() as session:
        assert session.scalars(select(Article.priority).where(Article.id == story)).one() == 0


@pytest.mark.parametrize("action", ["pin", "unpin", "hide", "unhide", "priority"])
def test_actions_need_the_form_token(staff, store, clock, action):
    morning_articles(store, clock)
    story = article_id(store, "story-2")
    response = staff.post(f"/admin/next/articles/{story}/{action}", data={"date": DAY.isoformat(), "priority": "1"})
    assert response.status_code == 400 and "This form has expired" in response.get_data(as_text=True)
    forged = staff.post(
        f"/admin/next/articles/{story}/{action}",
        data={"csrf_token": "forged", "date": DAY.isoformat(), "priority": "1"},
    )
    assert forged.status_code == 400
    with store.session() as session:
        article = session.get(Article, story)
        assert article is not None and article.pinned_for is None and not article.hidden and article.priority == 0


def test_test_copy_needs_the_form_token(staff, smtp_sink):
    assert staff.post("/admin/next/test-copy", data={"email": "ana@example.org"}).status_code == 400
    assert smtp_sink.handler.received == []


@pytest.mark.parametrize("action", ["pin", "unpin", "hide", "unhide", "priority"])
@pytest.mark.parametrize("absent", [9999, 2**31 - 1, 2**31, 99999999999, 10**30])
def test_an_unknown_article_is_404(staff, store, clock, action, absent):
    morning_articles(store, clock)
    assert post(staff, f"/admin/next/articles/{absent}/{action}", priority="1").status_code == 404


def test_a_sent_edition_refuses_changes_with_a_notice(staff, store, clock, ctx):
    morning_articles(store, clock)
    add_subscribers(store, clock, 1)
    assert send_edition(ctx, day=DAY).outcome == "sent"
    for guid, action in (("story-2", "pin"), ("story-0", "hide"), ("story-0", "pin")):
        response = post(staff, f"/admin/next/articles/{article_id(store, guid)}/{action}")
        notice = flashed(staff, response)
        assert f"The edition of {DAY} is sent, so its stories are fixed" in notice, notice
    # A story published after the send time is not in it: pinning it for that date is refused too.
    add_article(store, clock, "late", datetime(2026, 11, 24, 6, 20, tzinfo=UTC))
    notice = flashed(staff, post(staff, f"/admin/next/articles/{article_id(store, 'late')}/pin"))
    assert "its stories are fixed" in notice or "after the send time" in notice, notice
    with store.session() as session:
        assert session.scalars(select(Article).where(Article.pinned_for.is_not(None))).all() == []
        assert session.scalars(select(Article).where(Article.hidden.is_(True))).all() == []
    assert lead_headline(text_of(staff, PREVIEW)) == "Story story-0"


def test_a_too_old_story_can_be_pinned_in(staff, store, clock):
    morning_articles(store, clock)
    add_article(store, clock, "archive", datetime(2026, 11, 20, 9, 0, tzinfo=UTC), title="From the archive")
    page = text_of(staff, PAGE)
    too_old = page[page.index("Too old to go in") : page.index("Hidden stories")]
    assert "From the archive" in too_old and "Pin as lead" in too_old
    assert "From the archive" not in text_of(staff, PREVIEW)
    response = post(staff, f"/admin/next/articles/{article_id(store, 'archive')}/pin")
    assert "leads the edition" in flashed(staff, response)
    assert lead_headline(text_of(staff, PREVIEW)) == "From the archive"
    assert "Too old to go in" not in text_of(staff, PAGE)


# --- test copies ------------------------------------------------------------------------------


def test_a_test_copy_reaches_the_address_and_is_remembered(staff, store, clock, smtp_sink):
    morning_articles(store, clock)
    page = text_of(staff, PAGE)
    assert 'id="test-email" name="email" type="email"' in page and 'value=""' in page
    response = post(staff, "/admin/next/test-copy", email=" Ana@Example.org ")
    assert f"A test copy of the edition of {DAY} went to ana@example.org" in flashed(staff, response)
    (copy,) = smtp_sink.handler.received
    assert copy.rcpt_tos == ["ana@example.org"]
    message = copy.message
    assert message["Subject"].startswith("[Test] ")
    assert "Story story-0" in message.get_body(("html",)).get_content()
    assert 'value="ana@example.org"' in text_of(staff, PAGE)
    with store.session() as session:  # nothing recorded
        assert session.scalars(select(Edition)).all() == []


@pytest.mark.parametrize("address", ["", "not an address", "a@b@c", "ana@example.org\r\nBcc: x@example.org"])
def test_a_bad_address_gets_a_notice_and_no_mail(staff, store, clock, smtp_sink, address):
    morning_articles(store, clock)
    notice = flashed(staff, post(staff, "/admin/next/test-copy", email=address))
    assert "No test copy sent" in notice
    assert smtp_sink.handler.received == []


def test_a_test_copy_with_the_mail_server_down_is_a_notice_not_an_error(db_url, store, clock):
    config = make_config(db_url, smtp={"port": free_port()}, web=SITE)  # nothing listens there
    staff = logged_in(make_app(config, store, clock))
    morning_articles(store, clock)
    response = post(staff, "/admin/next/test-copy", email="ana@example.org")
    notice = flashed(staff, response)
    assert "The test copy to ana@example.org could not be sent:" in notice and "\n" not in notice.strip()
    assert 'value="ana@example.org"' in text_of(staff, PAGE)


def test_a_test_copy_of_a_sent_edition_is_its_stored_copy(staff, store, clock, ctx, smtp_sink):
    morning_articles(store, clock)
    add_subscribers(store, clock, 1)
    assert send_edition(ctx, day=DAY).outcome == "sent"
    add_article(store, clock, "later", datetime(2026, 11, 24, 5, 30, tzinfo=UTC), title="Too late for it")
    smtp_sink.handler.received.clear()
    flashed(staff, post(staff, "/admin/next/test-copy", email="ana@example.org"))
    (copy,) = smtp_sink.handler.received
    html = copy.message.get_body(("html",)).get_content()
    assert "Story story-0" in html and "Too late for it" not in html


# --- dates ---------------------------------------------------------------------------------------

BAD_DATES = [
    "garbage",
    "2026-13-01",
    "2026-02-30",
    "2026-1-1",
    "20261124",
    "2026-11-24T00:00",
    "99999-01-01",
    "0000-01-01",
    "２０２６-１１-２４",
    "2026-11-24%00",
    "%3Cscript%3E",
    "-2026-11-24",
]
# Real dates no edition can be made for: the ends of the calendar, the far future.
EDGE_DATES = ["0001-01-01", "9999-12-31", "2027-06-01"]


@pytest.mark.parametrize("value", BAD_DATES + EDGE_DATES + ["0001-01-03", "1970-01-01"])
def test_garbage_or_impossible_dates_are_never_an_error(staff, store, clock, value):
    morning_articles(store, clock)
    expected = (400,) if value in BAD_DATES else (404,) if value in EDGE_DATES else (200,)
    for path in (f"/admin/next?date={value}", f"/admin/next/preview?date={value}"):
        response = staff.get(path)
        assert response.status_code in expected, (path, response.status_code)
        assert "<script>" not in response.get_data(as_text=True)
    story = article_id(store, "story-2")
    token = token_on(staff, PAGE)
    for action in ("pin", "unpin", "hide", "unhide", "priority", "test-copy"):
        path = "/admin/next/test-copy" if action == "test-copy" else f"/admin/next/articles/{story}/{action}"
        response = staff.post(
            path, data={"csrf_token": token, "date": unescape(value), "priority": "1", "email": "ana@example.org"}
        )
        assert response.status_code in (303, 400, 404), (action, value, response.status_code)
        if response.status_code == 303:  # a real date the library refused: the notice says why
            target = urlsplit(response.headers["Location"])
            assert staff.get(f"{target.path}?{target.query}").status_code in (200, 404)


def test_other_dates_can_be_looked_at(staff, config, store, clock):
    morning_articles(store, clock)
    tomorrow = text_of(staff, "/admin/next?date=2026-11-25")
    assert "Edition of Wednesday 25 November 2026" in plain(tomorrow) and "not made" in tomorrow
    assert f'href="/admin/next?date={DAY}"' in tomorrow and 'href="/admin/next">Next edition</a>' in tomorrow
    assert staff.get("/admin/next/preview?date=2026-11-25").status_code == 200
    future = staff.get("/admin/next?date=2026-11-27")
    assert future.status_code == 404 and "is not due yet" in unescape(future.get_data(as_text=True))
    assert staff.get("/admin/next/preview?date=2026-11-27").status_code == 404
    day_before = DAY - timedelta(days=1)
    assert "not made" in text_of(staff, f"/admin/next?date={day_before}")


# --- preflight and the zones still to come (SQLite: their store functions run on both elsewhere) ----

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
BAD_URL = "https://news.example.com:99999/story"  # passes the importer; no client could open it


@pytest.fixture
def offline_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin's preflight with no network and no SpamAssassin (a second of CI per run)."""
    import newsletter.web.admin
    from newsletter.preflight import Tools

    def fetcher(method: str, url: str, *, timeout: float, read_limit: int = 0):
        raise AssertionError(f"preflight fetched {url}: tests never use the network")

    monkeypatch.setattr(newsletter.web.admin, "preflight_tools", lambda config: Tools(fetcher, which=lambda n: None))


def rows(page: str) -> list[tuple[str, str, str]]:
    """The preflight report's rows: (severity, check, finding)."""
    table = page.split('class="data preflight-report"', 1)[1].split("</table>", 1)[0]
    found = re.findall(r"<tr[^>]*><td>(.*?)</td><td>(.*?)</td><td[^>]*>(.*?)</td></tr>", table, re.S)
    return [(plain(a), plain(b), plain(c)) for a, b, c in found]


@SQLITE_ONLY
def test_preflight_runs_when_asked_and_shows_its_report(staff, store, clock, offline_preflight, caplog):
    caplog.set_level(logging.INFO, logger="newsletter")
    morning_articles(store, clock)
    page = text_of(staff, PAGE)
    assert ">Run preflight</button>" in page and "preflight-report" not in page  # not on every page load
    response = post(staff, "/admin/next/preflight")
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"].endswith("frame-src 'self'")
    page = unescape(response.get_data(as_text=True))
    assert "Ready to send" in page and ">Run preflight again</button>" in page
    found = rows(page)
    assert ("warning", "headers", found[0][2]) == found[0] and "not signed" in found[0][2]  # errors, then warnings
    assert not [r for r in found if r[0] == "error"] and any(r[0] == "info" and r[1] == "size" for r in found)
    assert "admin ana: preflight of the edition of 2026-11-24: 0 errors" in caplog.text

    add_article(store, clock, "bad", datetime(2026, 11, 24, 5, 30, tzinfo=UTC), url=BAD_URL, title="Harbour")
    page = unescape(post(staff, "/admin/next/preflight").get_data(as_text=True))
    assert "Not ready: fix the errors" in page
    assert rows(page)[0] == ("error", "links", f"malformed link: malformed address (Port out of range 0-65535): "
                                               f"{BAD_URL}")  # fmt: skip


@SQLITE_ONLY
def test_preflight_needs_the_form_token_and_a_login(app, staff, store, clock, offline_preflight):
    morning_articles(store, clock)
    assert staff.post("/admin/next/preflight", data={"date": DAY.isoformat()}).status_code == 400
    assert staff.post("/admin/next/preflight", data={"csrf_token": "forged", "date": "x"}).status_code == 400
    client = browser(app)
    token = token_on(client, "/admin/login")
    refused = client.post("/admin/next/preflight", data={"csrf_token": token, "date": DAY.isoformat()})
    assert refused.status_code == 302 and "/admin/login" in refused.headers["Location"]


@SQLITE_ONLY
def test_an_edition_the_scheduler_held_says_so_with_the_way_to_send_it(staff, store, clock, ctx, smtp_sink):
    from newsletter.due import send_scheduled
    from newsletter.preflight import Tools

    morning_articles(store, clock)
    add_article(store, clock, "bad", datetime(2026, 11, 24, 5, 30, tzinfo=UTC), url=BAD_URL, title="Harbour")
    offline = Tools(fetcher=lambda *a, **k: pytest.fail("fetched"), which=lambda n: None)
    assert send_scheduled(ctx, tools=offline).held
    override = "newsletter send --date 2026-11-24 --ignore-preflight"
    page = plain(text_of(staff, PAGE))
    assert "Held: preflight found 1 error when the scheduler was about to send this edition" in page
    assert f"links: malformed link: malformed address (Port out of range 0-65535): {BAD_URL}" in page
    assert override in page
    edition = plain(text_of(staff, f"/admin/editions/{DAY}"))
    assert "Held by preflight since 24 Nov 2026 06:30" in edition and override in edition


@SQLITE_ONLY
def test_the_edition_page_lists_the_zones_still_to_come(db_url, store, clock, smtp_sink):
    from newsletter.store.models import Subscriber

    config = make_config(db_url, smtp_sink, web=SITE, newsletter={"per_reader_timezone": True})
    staff = logged_in(make_app(config, store, clock))
    morning_articles(store, clock)
    readers = add_subscribers(store, clock, 4)
    zones = {readers[1]: "America/New_York", readers[2]: "America/New_York", readers[3]: "America/Los_Angeles"}
    with store.session() as session:
        for email, zone in zones.items():
            session.execute(update(Subscriber).where(Subscriber.email == email).values(timezone=zone))
    send_edition(Context(config, store, clock, Tokens(SECRET, clock)), day=DAY)  # London's readers only, at 06:30
    page = plain(text_of(staff, f"/admin/editions/{DAY}"))
    assert "Zones still to come" in page
    new_york = page.index("America/New_York at 2026-11-24 11:00 GMT (2 readers)")
    assert new_york < page.index("America/Los_Angeles at 2026-11-24 14:00 GMT (1 reader)")
    clock.set(datetime(2026, 11, 24, 14, 5, tzinfo=UTC))
    assert send_edition(Context(config, store, clock, Tokens(SECRET, clock)), day=DAY).outcome == "sent"
    assert "Zones still to come" not in text_of(staff, f"/admin/editions/{DAY}")
