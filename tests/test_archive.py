"""The public archive and its Atom feed, through the real app, on SQLite and PostgreSQL.

Editions are made and sent by the real pipeline to a real SMTP server, so what the
archive shows can be held against what readers got: the subject, the lead the renderer
chose, and none of one reader's parts (address, greeting, unsubscribe link).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from typing import Any

import feedparser
import pytest
from flask import Flask
from flask.testing import FlaskClient

from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.context import Context
from newsletter.preparation import prepare_edition
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.articles import assign_articles, find_article, pin_article
from newsletter.store.models import Edition, EditionStatus, Subscriber, SubscriberStatus
from newsletter.web import create_app
from newsletter.web.archive import PER_PAGE
from tests.conftest import SMTPServer, add_article

BASE = "https://news.example.com/newsletter"
ATOM = "{http://www.w3.org/2005/Atom}"
READER = "zebedee.quill@example.org"


@pytest.fixture
def app(config: Config, store: Store, clock: FixedClock) -> Flask:
    return create_app(config, store=store, clock=clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _reader(store: Store, clock: FixedClock) -> None:
    now = clock.now()
    with store.session() as session:
        session.add(
            Subscriber(
                email=READER,
                name="Zebedee Quill",
                status=SubscriberStatus.ACTIVE,
                source="test",
                created_at=now,
                updated_at=now,
                confirmed_at=now,
            )
        )


def _a_week(ctx: Context) -> dict[date, str]:
    """Four mornings: two sent, one skipped (no stories), one made but not sent yet; their outcomes."""
    store, clock = ctx.store, ctx.clock
    _reader(store, clock)
    d20, d21, d22, d23 = (date(2026, 11, day) for day in (20, 21, 22, 23))
    # 20th: the lead is the story with a picture, though another has a higher priority.
    add_article(store, clock, "plain-20", _at(d20, 4), title="Council meets", priority=10)
    add_article(store, clock, "picture-20", _at(d20, 3), title="Lighthouse opens", image_url="https://x.example/l.jpg")
    # 21st: a pinned story leads, whatever the others are.
    add_article(
        store, clock, "picture-21", _at(d21, 4), title="Harbour wall rebuilt", image_url="https://x.example/h.jpg"
    )
    add_article(store, clock, "pinned-21", _at(d21, 3), title="Ferry fares frozen")
    with store.session() as session:
        pin_article(session, find_article(session, "pinned-21").id, d21, clock.now())
    outcomes = {day: send_edition(ctx, day=day).outcome for day in (d20, d21, d22)}
    # 23rd: made (so it has a web copy), not sent.
    add_article(store, clock, "ready-23", _at(d23, 4), title="Not out yet")
    outcomes[d23] = prepare_edition(ctx, d23).status.value
    return outcomes


def _entries(html: str) -> list[str]:
    return re.findall(r'href="/newsletter/editions/(\d{4}-\d{2}-\d{2})"', html)


def _personal_parts(smtp_sink: SMTPServer) -> list[str]:
    """What only the reader's copy holds: address, greeting name, unsubscribe link and its token."""
    [received] = [r for r in smtp_sink.handler.received if READER in r.rcpt_tos][:1]
    unsubscribe = received.message["List-Unsubscribe"]
    link = re.search(r"<(https://[^>]+)>", unsubscribe)
    assert link, unsubscribe
    token = link.group(1).rsplit("/", 1)[1]
    return [READER, "Zebedee", link.group(1), token, "/unsubscribe/", "NLGREET", "NLUNSUB"]


# --- the list -------------------------------------------------------------------------------


def test_the_archive_lists_what_went_out_newest_first_with_subject_and_lead(client, ctx, smtp_sink):
    outcomes = _a_week(ctx)
    assert list(outcomes.values()) == ["sent", "sent", "skipped", "ready"]
    page = client.get("/editions/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert _entries(html) == ["2026-11-21", "2026-11-20"]  # no skipped day, nothing not yet sent
    assert "Not out yet" not in html and "2026-11-22" not in html and "2026-11-23" not in html
    assert "Breakfast in red: Saturday 21 November 2026" in html and "Friday 20 November 2026" in html
    assert "Ferry fares frozen" in html and "Lighthouse opens" in html  # the leads, by the renderer's rule
    assert "Harbour wall rebuilt" not in html and "Council meets" not in html  # not leads
    assert "2 stories" in html
    assert 'href="/newsletter/subscribe"' in html and 'href="/newsletter/editions/feed.xml"' in html
    assert "<script" not in html and "script-src" not in page.headers["Content-Security-Policy"]
    for part in _personal_parts(smtp_sink):
        assert part not in html
    assert client.get("/editions").status_code == 308  # the address without the slash comes here


def test_the_lead_in_the_archive_is_the_lead_readers_got(client, ctx, smtp_sink):
    _a_week(ctx)
    titles = ("Council meets", "Lighthouse opens", "Harbour wall rebuilt", "Ferry fares frozen")
    archive = client.get("/editions/").get_data(as_text=True)
    copies = [r.message for r in smtp_sink.handler.received if READER in r.rcpt_tos]
    assert len(copies) == 2
    for mail in copies:
        html = mail.get_body(("html",)).get_content()
        present = [t for t in titles if t in html]
        lead = min(present, key=html.index)  # the first headline of the mail
        line = archive.split(str(mail["Subject"]), 1)[1].split("</li>", 1)[0]
        assert lead in line and not [t for t in present if t != lead and t in line]


def test_an_empty_archive_says_so(client):
    page = client.get("/editions/")
    assert page.status_code == 200 and "No edition has gone out yet" in page.get_data(as_text=True)
    assert client.get("/editions/?page=2").status_code == 404


def _many_editions(store: Store, clock: FixedClock, count: int) -> None:
    """``count`` sent editions on the days before 24 November 2026, one story each, written
    straight to the store (no mail needed); with more than 7, a skipped and a ready day among them."""
    extra = 2 if count > 7 else 0
    first = date(2026, 11, 23) - timedelta(days=count + extra - 1)
    for n in range(count + extra):
        day = first + timedelta(days=n)
        status = EditionStatus.SENT
        if extra:
            status = EditionStatus.SKIPPED if n == 5 else EditionStatus.READY if n == 7 else EditionStatus.SENT
        with store.session() as session:
            edition = Edition(
                date=day,
                window_start=_at(day, 6) - timedelta(days=1),
                window_end=_at(day, 6),
                subject=f"Breakfast in red: {day.isoformat()}",
                status=status,
                nonce=f"n{n:04d}",
                article_count=0 if status == EditionStatus.SKIPPED else 1,
                created_at=_at(day, 6),
                started_at=_at(day, 6) if status == EditionStatus.SENT else None,
            )
            session.add(edition)
            session.flush()
            edition_id = edition.id
        if status != EditionStatus.SKIPPED:
            add_article(store, clock, f"lead-{n}", _at(day, 5), title=f"Lead of {day.isoformat()}")
            with store.session() as session:
                assert assign_articles(session, edition_id, [find_article(session, f"lead-{n}").id]) == 1


def test_pages_of_twenty_newest_first_then_404_past_the_end(client, store, clock):
    _many_editions(store, clock, 45)
    seen: list[str] = []
    for page in (1, 2, 3):
        response = client.get("/editions/" if page == 1 else f"/editions/?page={page}")
        html = response.get_data(as_text=True)
        assert response.status_code == 200
        found = _entries(html)
        assert len(found) == (PER_PAGE if page < 3 else 45 - 2 * PER_PAGE)
        seen += found
        for day in found:
            assert f"Lead of {day}" in html
        assert ('rel="next"' in html) == (page < 3) and ('rel="prev"' in html) == (page > 1)
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 45
    first = date(2026, 11, 23) - timedelta(days=46)
    assert first.isoformat() in seen
    assert (first + timedelta(days=5)).isoformat() not in seen  # skipped
    assert (first + timedelta(days=7)).isoformat() not in seen  # made, not sent
    assert client.get("/editions/?page=4").status_code == 404
    assert 'href="/newsletter/editions/"' in client.get("/editions/?page=2").get_data(as_text=True)


@pytest.mark.parametrize(
    "page",
    ["0", "-1", "abc", "1e3", "1.5", " 1", "01", "9" * 50, "999999", "%00", "1%0a", "\u0661", "", "2&page=1"],
)
def test_hostile_page_numbers_are_404_pages_never_errors(client, store, clock, page):
    _many_editions(store, clock, 3)
    response = client.get(f"/editions/?page={page}")
    assert response.status_code in (200, 404)
    assert response.status_code == 404 or _entries(response.get_data(as_text=True))
    assert "Something went wrong" not in response.get_data(as_text=True)


# --- the public copy of an edition -------------------------------------------------------------


def test_an_edition_page_links_to_the_archive_and_the_sign_up_page_and_nothing_personal(client, ctx, smtp_sink):
    _a_week(ctx)
    page = client.get("/editions/2026-11-21")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'href="/newsletter/editions/"' in html and 'href="/newsletter/subscribe"' in html
    assert html.index('href="/newsletter/editions/"') < html.index("Ferry fares frozen")  # at the top
    assert html.count("All past editions") == 1
    for part in _personal_parts(smtp_sink):
        assert part not in html
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert client.get("/editions/2026-11-22").status_code == 404  # skipped


# --- the feed ------------------------------------------------------------------------------------


def test_the_feed_is_atom_that_feedparser_reads_back(client, ctx, smtp_sink):
    _a_week(ctx)
    response = client.get("/editions/feed.xml")
    body = response.get_data()
    assert response.status_code == 200 and response.mimetype == "application/atom+xml"
    parsed: Any = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.id == f"{BASE}/editions/feed.xml"
    assert parsed.feed.title == "Breakfast in red: past editions"
    links = {link.rel: link.href for link in parsed.feed.links}
    assert links == {"self": f"{BASE}/editions/feed.xml", "alternate": f"{BASE}/editions/"}
    assert [e.id for e in parsed.entries] == [f"{BASE}/editions/2026-11-21", f"{BASE}/editions/2026-11-20"]
    newest, older = parsed.entries
    assert newest.title == "Breakfast in red: Saturday 21 November 2026"
    assert newest.link == f"{BASE}/editions/2026-11-21"
    assert newest.summary == "Ferry fares frozen, and 1 more story (2 stories in all)"
    assert older.summary == "Lighthouse opens, and 1 more story (2 stories in all)"
    assert newest.updated_parsed is not None and parsed.feed.updated_parsed is not None
    text = body.decode("utf-8")
    for part in _personal_parts(smtp_sink):
        assert part not in text
    assert "Not out yet" not in text and "2026-11-22" not in text and "2026-11-23" not in text


def test_the_feed_has_every_element_atom_requires(client, ctx):
    _a_week(ctx)
    root = ET.fromstring(client.get("/editions/feed.xml").get_data())
    assert root.tag == f"{ATOM}feed"
    for tag in ("id", "title", "updated", "author"):
        assert root.find(f"{ATOM}{tag}") is not None, tag
    stamp = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
    assert stamp.fullmatch(root.findtext(f"{ATOM}updated") or "")
    for entry in root.iter(f"{ATOM}entry"):
        for tag in ("id", "title", "updated", "summary"):
            assert (entry.findtext(f"{ATOM}{tag}") or "").strip(), tag
        assert stamp.fullmatch(entry.findtext(f"{ATOM}updated") or "")
        assert entry.find(f"{ATOM}link[@rel='alternate']") is not None


def test_an_empty_feed_is_still_valid(client):
    parsed: Any = feedparser.parse(client.get("/editions/feed.xml").get_data())
    assert not parsed.bozo and parsed.entries == [] and parsed.feed.title


def test_markup_and_control_characters_in_titles_cannot_break_the_page_or_the_feed(client, store, clock):
    _many_editions(store, clock, 1)
    with store.session() as session:
        edition = session.query(Edition).filter(Edition.status == EditionStatus.SENT).one()
        edition.subject = 'Breakfast </title><script>alert(1)</script> & "more"\x0b\x1f'
        find_article(session, "lead-0").title = "Lead <b>bold</b> ]]> \x01 & co"
    html = client.get("/editions/").get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "<b>bold" not in html
    parsed: Any = feedparser.parse(client.get("/editions/feed.xml").get_data())
    assert not parsed.bozo, parsed.get("bozo_exception")
    [entry] = parsed.entries
    assert entry.title == 'Breakfast </title><script>alert(1)</script> & "more"'
    assert entry.summary.startswith("Lead <b>bold</b> ]]>  & co")


def test_feed_and_pages_use_base_url_not_the_host_header(app, ctx):
    _a_week(ctx)
    client = app.test_client()
    feed = client.get("/editions/feed.xml", headers={"Host": "evil.example"}).get_data(as_text=True)
    assert "evil.example" not in feed and f"{BASE}/editions/2026-11-21" in feed


def test_an_edition_made_but_not_sent_is_nobodys_to_read_yet(client, store, clock, ctx, smtp_sink):
    from tests.conftest import add_subscribers, morning_articles

    morning_articles(store, clock)
    add_subscribers(store, clock, 1)
    prepare_edition(ctx, date(2026, 11, 24))  # made: it may still change before 06:00
    assert client.get("/editions/2026-11-24").status_code == 404
    assert send_edition(ctx).outcome == "sent"
    page = client.get("/editions/2026-11-24")
    assert page.status_code == 200 and b"All past editions" in page.data
