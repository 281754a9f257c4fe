"""Tracked links in the sent edition: one slot per link, each reader's own signed code."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.codes import CLICK, Attribution, ReaderCodes
from newsletter.context import Context
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.models import Edition, EditionLink, Subscriber, SubscriberEvent
from newsletter.tokens import UNSUBSCRIBE
from newsletter.tracking import link_policy, track, untrack, with_utm
from tests.conftest import SECRET, add_subscribers, make_config, morning_articles

BASE = "https://news.example.com/newsletter"
MARKER = "NLCLICKabcX"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: this module tests how links are rewritten per copy; the store functions
    it relies on are tested on both databases in test_clicks.py (CI's time is short)."""
    url = f"sqlite:///{tmp_path / 'newsletter.db'}"
    store = Store(url)
    store.upgrade()
    store.dispose()
    return url


def policy(**overrides: object):
    values: dict[str, object] = {
        "clicks": True,
        "opens": False,
        "utm": False,
        "utm_source": "newsletter",
        "utm_medium": "email",
        "campaign": "breakfast-in-red",
        "day": date(2026, 11, 24),
    }
    values.update(overrides)
    stories = ["https://news.example.com/2026/a?x=1&y=2", "https://news.example.com/2026/b"]
    return link_policy(BASE, stories, **values)  # type: ignore[arg-type]


HTML = (
    '<html><body><a href="https://news.example.com/2026/a?x=1&amp;y=2">A</a>'
    '<a class="x" href="https://news.example.com/2026/a?x=1&amp;y=2"><img src="https://cdn.example.net/i.jpg"></a>'
    '<a href="https://news.example.com/2026/b">B</a>'
    '<a href="https://elsewhere.example.org/page">elsewhere</a>'
    '<a href="mailto:desk@news.example.com">mail us</a>'
    f'<a href="{BASE}/editions/2026-11-24">view in browser</a>'
    f'<a href="{BASE}/unsubscribe/NLUNSUBabcX">Unsubscribe</a></body></html>'
)
TEXT = (
    "Read it: https://news.example.com/2026/a?x=1&y=2\n  https://news.example.com/2026/b\n"
    f"Unsubscribe: {BASE}/unsubscribe/NLUNSUBabcX\n"
)


def test_links_to_the_stories_and_the_site_are_tracked_and_nothing_else() -> None:
    tracked = track(HTML, TEXT, MARKER, policy(), personal=("NLUNSUBabcX",))
    assert tracked.links == (
        "https://news.example.com/2026/a?x=1&y=2",
        "https://news.example.com/2026/b",
        f"{BASE}/editions/2026-11-24",
    )
    hrefs = re.findall(r'href="([^"]*)"', tracked.html)
    assert hrefs == [
        f"{BASE}/c/{MARKER}-1",
        f"{BASE}/c/{MARKER}-1",  # the same story twice is one link
        f"{BASE}/c/{MARKER}-2",
        "https://elsewhere.example.org/page",
        "mailto:desk@news.example.com",
        f"{BASE}/c/{MARKER}-3",
        f"{BASE}/unsubscribe/NLUNSUBabcX",  # one click, no redirect in between
    ]
    assert "https://cdn.example.net/i.jpg" in tracked.html  # images are not links
    assert tracked.text.splitlines() == [
        f"Read it: {BASE}/c/{MARKER}-1",
        f"  {BASE}/c/{MARKER}-2",
        f"Unsubscribe: {BASE}/unsubscribe/NLUNSUBabcX",
    ]
    # A preview puts the targets back, escaped for HTML.
    assert untrack(tracked.html, MARKER, BASE, tracked.links, escape=True).count("a?x=1&amp;y=2") == 2
    assert untrack(tracked.text, MARKER, BASE, tracked.links, escape=False) == TEXT


def test_off_leaves_links_alone_and_utm_tags_only_the_stories() -> None:
    tracked = track(HTML, TEXT, MARKER, policy(clicks=False, utm=True))
    assert tracked.links == ()
    assert "https://news.example.com/2026/b?utm_source=newsletter&amp;utm_medium=email&amp;" in tracked.html
    assert "utm_campaign=breakfast-in-red-2026-11-24" in tracked.text
    assert f'href="{BASE}/editions/2026-11-24"' in tracked.html  # the site's own page: no UTM
    assert with_utm("https://x.example/a?utm_source=cms", (("utm_source", "n"), ("utm_medium", "e"))) == (
        "https://x.example/a?utm_source=cms&utm_medium=e"
    )


def test_opens_add_one_invisible_image_before_the_end_of_the_body() -> None:
    tracked = track(HTML, TEXT, MARKER, policy(opens=True))
    assert f'<img src="{BASE}/o/{MARKER}.gif" width="1" height="1" alt=""' in tracked.html
    assert tracked.html.endswith("</body></html>")


def test_links_that_could_not_be_redirected_safely_stay_as_they_are() -> None:
    odd = '<a href="https://news.example.com/a\tb">tab</a><a href="javascript:alert(1)">js</a>'
    tracked = track(odd, "", MARKER, policy())
    assert tracked.links == () and tracked.html == odd


def test_each_copy_carries_its_readers_code_in_every_link(db_url, store, clock, tokens, smtp_sink) -> None:
    config = make_config(db_url, smtp_sink)
    morning_articles(store, clock)
    add_subscribers(store, clock, 3)
    assert send_edition(Context(config, store, clock, tokens)).outcome == "sent"
    codes = ReaderCodes(SECRET, CLICK)
    with store.session() as session:
        edition = session.scalars(select(Edition)).one()
        ids = {s.email: s.id for s in session.scalars(select(Subscriber))}
        links = {link.position: link.url for link in session.scalars(select(EditionLink))}
    assert sorted(links) == list(range(1, len(links) + 1)) and len(links) == 4  # 3 stories and the web version
    seen_codes = set()
    for email, (received,) in smtp_sink.handler.by_recipient().items():
        html = received.message.get_body(("html",)).get_content()
        text = received.message.get_body(("plain",)).get_content()
        found = re.findall(rf"{re.escape(BASE)}/c/([0-9a-f]+-[0-9a-f]+-[0-9a-f]+)-([0-9a-f]+)", html + text)
        assert {code for code, _ in found} == {codes.code(edition.id, ids[email])}
        assert codes.read(found[0][0]) == Attribution(edition.id, ids[email])
        assert {int(n, 16) for _, n in found} == set(links)
        assert "https://news.example.com/story-" not in html  # no story is linked directly
        seen_codes.add(found[0][0])
    assert len(seen_codes) == 3


def test_with_tracking_off_the_links_go_straight_to_the_stories(db_url, store, clock, tokens, smtp_sink) -> None:
    config = make_config(db_url, smtp_sink, tracking={"clicks": False})
    morning_articles(store, clock)
    add_subscribers(store, clock, 1)
    assert send_edition(Context(config, store, clock, tokens)).outcome == "sent"
    (received,) = smtp_sink.handler.by_recipient()["reader0@example.org"]
    html = received.message.get_body(("html",)).get_content()
    assert "/c/" not in html and 'href="https://news.example.com/story-0"' in html
    with store.session() as session:
        assert session.scalars(select(EditionLink)).all() == []


def test_the_unsubscribe_link_says_which_edition_the_reader_left_from(db_url, store, clock, tokens, smtp_sink) -> None:
    from newsletter.subscribers import leave

    config = make_config(db_url, smtp_sink)
    morning_articles(store, clock)
    add_subscribers(store, clock, 2)
    assert send_edition(Context(config, store, clock, tokens)).outcome == "sent"
    (received,) = smtp_sink.handler.by_recipient()["reader1@example.org"]
    url = re.findall(r"<(https://[^>]+)>", received.message["List-Unsubscribe"])[0]
    claim = tokens.read(UNSUBSCRIBE, url.rsplit("/", 1)[1], max_age_days=365)
    with store.session() as session:
        edition_id = session.scalars(select(Edition.id)).one()
        assert claim.edition_id == edition_id
        leave(session, claim, clock, source="web")
    with store.session() as session:
        event = session.scalars(select(SubscriberEvent).where(SubscriberEvent.event == "unsubscribed")).one()
        assert event.edition_id == edition_id
    old_style = tokens.make(UNSUBSCRIBE, claim.subscriber_id, "reader1@example.org")  # links already out
    assert tokens.read(UNSUBSCRIBE, old_style, max_age_days=365).edition_id is None
