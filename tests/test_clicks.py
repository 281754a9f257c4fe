"""Tracked links and opens through the real app, on SQLite and PostgreSQL: what redirects, counts and never breaks."""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from newsletter.clickrecorder import ClickRecorder, counts_as_reader, looks_like_scanner
from newsletter.clock import FixedClock
from newsletter.codes import CLICK, RETURN_PATH, ReaderCodes
from newsletter.config import Config
from newsletter.errors import EditionFrozenError, MessageError, StoreError
from newsletter.store import Store
from newsletter.store.clicks import (
    ClickRow,
    ClickTotals,
    EditionLinks,
    LinkCount,
    click_totals,
    edition_link_counts,
    edition_links,
    forget_clicks_of,
    record_clicks,
    save_edition_links,
    unique_clickers,
)
from newsletter.store.models import (
    Click,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberEvent,
    SubscriberStatus,
)
from newsletter.store.readers import delete_subscriber
from newsletter.tracking import MAX_URL, trackable_url
from newsletter.web import create_app
from newsletter.web.clicks import PIXEL, recorder_of
from tests.conftest import SECRET, add_subscribers, make_config

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15"
)
SAFE_LINKS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b"
LINKS = [f"https://news.example.com/2026/story-{i}" for i in range(1, 12)] + ["https://news.example.com/"]
CODES = ReaderCodes(SECRET, CLICK)


# --- fixtures and helpers ---------------------------------------------------------------------


def _app(config: Config, store: Store, clock: FixedClock) -> Iterator[Flask]:
    app = create_app(config, store=store, clock=clock)
    yield app
    recorder_of(app).close()  # before the store fixture checks for connections left out


@pytest.fixture
def app(db_url: str, store: Store, clock: FixedClock) -> Iterator[Flask]:
    yield from _app(make_config(db_url, tracking={"opens": True}), store, clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = BROWSER
    return client


def make_edition(store: Store, clock: FixedClock, day: date, links: list[str], *, gone_out: bool = True) -> int:
    """An edition with these links; ``gone_out``: its deliveries exist, as once a send has begun."""
    now = clock.now()
    with store.session() as session:
        edition = Edition(
            date=day,
            window_start=now - timedelta(days=1),
            window_end=now,
            subject=f"Breakfast in red: {day}",
            status=EditionStatus.READY,
            nonce="0" * 32,
            created_at=now,
        )
        session.add(edition)
        session.flush()
        save_edition_links(session, edition.id, links)
        if gone_out:
            edition.status = EditionStatus.SENDING
            edition.enqueued_at = now
        return edition.id


def readers(store: Store, clock: FixedClock, count: int = 2) -> list[int]:
    emails = add_subscribers(store, clock, count)
    with store.session() as session:
        return list(session.scalars(select(Subscriber.id).where(Subscriber.email.in_(emails)).order_by(Subscriber.id)))


def sent(store: Store, edition_id: int, subscriber_ids: list[int], at: datetime) -> None:
    with store.session() as session:
        session.add_all(
            Delivery(edition_id=edition_id, subscriber_id=s, status=DeliveryStatus.SENT, sent_at=at)
            for s in subscriber_ids
        )


def link(edition_id: int, subscriber_id: int, position: int) -> str:
    return f"/c/{CODES.code(edition_id, subscriber_id)}-{position:x}"


def pixel(edition_id: int, subscriber_id: int) -> str:
    return f"/o/{CODES.code(edition_id, subscriber_id)}.gif"


def recorded(app: Flask, store: Store) -> list[tuple[int, int, int | None, datetime]]:
    """Every click row, after writing what the app has queued."""
    recorder_of(app).flush()
    return _clicks(store)


def assert_not_found(response) -> None:  # type: ignore[no-untyped-def]
    body = response.get_data(as_text=True)
    assert response.status_code == 404, body[:300]
    assert "Traceback" not in body and "Location" not in response.headers
    assert "Set-Cookie" not in response.headers


@pytest.fixture
def edition(store: Store, clock: FixedClock) -> int:
    return make_edition(store, clock, date(2026, 11, 24), LINKS)


# --- redirects and counts ---------------------------------------------------------------------


def test_a_click_redirects_to_the_editions_link_and_is_counted_by_reader_and_in_all(app, client, store, clock, edition):
    ana, ben = readers(store, clock)
    sent(store, edition, [ana, ben], clock.now() - timedelta(hours=1))
    for who, position in [(ana, 1), (ana, 1), (ana, 12), (ben, 1), (ben, 10)]:
        response = client.get(link(edition, who, position))
        assert response.status_code == 302
        assert response.headers["Location"] == LINKS[position - 1]
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in response.headers
    assert recorded(app, store) == [
        (edition, 1, ana, clock.now()),
        (edition, 1, ana, clock.now()),
        (edition, 12, ana, clock.now()),
        (edition, 1, ben, clock.now()),
        (edition, 10, ben, clock.now()),
    ]
    with store.session() as session:
        counts = edition_link_counts(session, edition)
        assert counts[:3] == [
            LinkCount(1, LINKS[0], unique=2, total=3),
            LinkCount(10, LINKS[9], unique=1, total=1),
            LinkCount(12, LINKS[11], unique=1, total=1),
        ]
        assert [c.position for c in counts[3:]] == [2, 3, 4, 5, 6, 7, 8, 9, 11]
        assert all(c.unique == c.total == 0 for c in counts[3:])
        assert unique_clickers(session, edition) == 2
    other = make_edition(store, clock, date(2026, 11, 23), LINKS[:2])
    with store.session() as session:
        assert click_totals(session, [edition, other, 999]) == {
            edition: ClickTotals(unique_clickers=2, clicks=5, opens_unique=0),
            other: ClickTotals(0, 0, 0),
            999: ClickTotals(0, 0, 0),
        }
        assert click_totals(session, []) == {}


def test_the_time_of_a_click_comes_from_the_apps_clock(app, client, store, clock, edition):
    (ana,) = readers(store, clock, 1)
    client.get(link(edition, ana, 2))
    clock.advance(3600)
    client.get(link(edition, ana, 2))
    assert [row[3] for row in recorded(app, store)] == [clock.now() - timedelta(hours=1), clock.now()]


def test_a_link_with_non_ascii_characters_redirects_encoded(app, client, store, clock):
    edition = make_edition(store, clock, date(2026, 11, 20), ["https://news.example.com/café?q=crème-brûlée"])
    (ana,) = readers(store, clock, 1)
    response = client.get(link(edition, ana, 1))
    assert response.status_code == 302
    assert response.headers["Location"] == "https://news.example.com/caf%C3%A9?q=cr%C3%A8me-br%C3%BBl%C3%A9e"


def test_clicks_through_a_real_server_from_many_threads_are_all_counted(app, store, clock, edition, server):
    base, slot = server
    slot["app"] = app
    ids = readers(store, clock, 8)
    target = urlsplit(base)

    def click_many(subscriber_id: int) -> None:
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        for i in range(25):
            connection.request(
                "GET", f"/newsletter{link(edition, subscriber_id, 1 + i % 3)}", headers={"User-Agent": BROWSER}
            )
            response = connection.getresponse()
            response.read()
            assert response.status == 302 and response.getheader("Location") == LINKS[i % 3]
        connection.close()

    threads = [threading.Thread(target=click_many, args=(s,)) for s in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(recorded(app, store)) == 8 * 25
    with store.session() as session:
        assert click_totals(session, [edition])[edition] == ClickTotals(8, 200, 0)
        assert [(c.position, c.unique, c.total) for c in edition_link_counts(session, edition)[:3]] == [
            (1, 8, 72),
            (2, 8, 64),
            (3, 8, 64),
        ]


# --- refused codes ------------------------------------------------------------------------------


def test_forged_truncated_and_foreign_codes_get_the_link_page_and_record_nothing(app, client, store, clock, edition):
    (ana,) = readers(store, clock, 1)
    good = CODES.code(edition, ana)
    ids, signature = good.rsplit("-", 1)
    forged = f"{ids}-{'0' * 14}" if signature != "0" * 14 else f"{ids}-{'1' * 14}"
    other_reader = f"{edition:x}-{ana + 1:x}-{signature}"  # a real signature, moved to another reader
    bad = [
        f"/c/{forged}-1",
        f"/c/{other_reader}-1",
        f"/c/{good[:-1]}-1",  # cut short
        f"/c/{good}",  # no position: the signature read as one
        f"/c/{good}-",
        f"/c/{good}-0",  # the open's position is no link
        f"/c/{good}-d",  # 13: past the last link
        f"/c/{good}-fffffffff",  # more digits than a position has
        f"/c/{good}-1x",
        f"/c/{good}--1",
        f"/c/{ReaderCodes(SECRET, RETURN_PATH).code(edition, ana)}-1",  # a bounce address's code
        f"/c/{ReaderCodes('another-installation-secret-key-0123456789', CLICK).code(edition, ana)}-1",
        f"/c/{CODES.code(edition + 100, ana)}-1",  # a genuine code for an edition that does not exist
        f"/c/{CODES.code(2**32 - 1, ana)}-1",  # beyond PostgreSQL's integer
        "/c/nonsense",
        "/c/1-1-1-1",
    ]
    for path in bad:
        response = client.get(path)
        assert_not_found(response)
        assert "This link does not work" in response.get_data(as_text=True), path
        assert response.headers["Cache-Control"] == "no-store"
    assert recorded(app, store) == []


def test_a_code_reaches_only_links_of_its_own_edition(app, client, store, clock):
    short = make_edition(store, clock, date(2026, 11, 23), ["https://news.example.com/only"])
    long = make_edition(store, clock, date(2026, 11, 24), LINKS)
    (ana,) = readers(store, clock, 1)
    assert client.get(link(short, ana, 1)).headers["Location"] == "https://news.example.com/only"
    assert_not_found(client.get(link(short, ana, 2)))  # a position only the other edition has
    assert_not_found(client.get(link(short, ana, 12)))
    assert client.get(link(long, ana, 2)).headers["Location"] == LINKS[1]
    # Nothing in the request can name a destination.
    for extra in ("?url=https://evil.example/", "?next=//evil.example", "/https://evil.example/"):
        response = client.get(link(short, ana, 1) + extra)
        assert response.status_code in (302, 404)
        assert "evil" not in response.headers.get("Location", "")
    assert [(e, p) for e, p, _, _ in recorded(app, store)] == [(short, 1), (long, 2), (short, 1), (short, 1)]


def test_head_answers_like_get_and_records_nothing(app, client, store, clock, edition):
    (ana,) = readers(store, clock, 1)
    found = client.head(link(edition, ana, 3))
    assert found.status_code == 302 and found.headers["Location"] == LINKS[2]
    assert client.head(link(edition, ana, 99)).status_code == 404
    assert client.head("/c/forged-1").status_code == 404
    assert client.head(pixel(edition, ana)).status_code == 200
    assert recorded(app, store) == []


HOSTILE_PATHS = [
    "/c/" + "a" * 100_000,
    "/c/" + "1-1-" + "0" * 100_000 + "-1",
    "/c/%00",
    "/c/1-1-00000000000000-1%00",
    "/c/%0d%0aLocation:%20https://evil.example/",
    "/c/%C3%A9t%C3%A9-1",
    "/c/%E2%98%83",
    "/c/%ff%fe",
    "/c/../admin",
    "/c/..%2f..%2fetc%2fpasswd",
    "/c/a/b/c",
    "/c/",
    "/c",
    "/c/-",
    "/c/---",
    "/c/%20",
    "/o/",
    "/o/.gif",
    "/o/%00.gif",
    "/o/" + "a" * 100_000 + ".gif",
    "/o/../../etc/passwd.gif",
    "/o/%E2%98%83.gif",
]


def test_hostile_paths_are_404_never_500(app, client, store):
    for path in HOSTILE_PATHS:
        for method in (client.get, client.head):
            response = method(path)
            assert response.status_code == 404, path[:80]
            assert "Set-Cookie" not in response.headers and "Location" not in response.headers
    assert recorded(app, store) == []


def test_other_methods_are_refused(client, store, clock, edition):
    (ana,) = readers(store, clock, 1)
    for method in (client.post, client.put, client.delete):
        assert method(link(edition, ana, 1)).status_code in (400, 405)


# --- who counts ---------------------------------------------------------------------------------


SCANNERS = [
    SAFE_LINKS,
    "Barracuda Sentinel (EE)",
    "Mimecast-URL-Protect/1.0",
    "Proofpoint URL Defense",
    "urlscan.io",
    "Google-Safety; (+https://developers.google.com/safe-browsing)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "SomeCrawler/3.1",
    "python-requests/2.32.0",
    "",
]


def test_a_scanner_within_the_window_is_not_counted_but_an_hour_later_it_is(app, client, store, clock, edition):
    people = readers(store, clock, len(SCANNERS))
    sent(store, edition, people, clock.now())
    clock.advance(5)
    for who, agent in zip(people, SCANNERS, strict=True):
        early = client.get(link(edition, who, 1), headers={"User-Agent": agent})
        assert early.status_code == 302 and early.headers["Location"] == LINKS[0]  # redirected all the same
    clock.advance(25)  # 30 s after the send: still "30 seconds or less"
    for who, agent in zip(people, SCANNERS, strict=True):
        client.get(link(edition, who, 2), headers={"User-Agent": agent})
    clock.advance(3600)
    for who, agent in zip(people, SCANNERS, strict=True):
        client.get(link(edition, who, 3), headers={"User-Agent": agent})
    assert [(p, s) for _, p, s, _ in recorded(app, store)] == [(3, who) for who in people]
    assert recorder_of(app).stats().ignored == 2 * len(SCANNERS)


def test_a_person_within_the_window_is_counted(app, client, store, clock, edition):
    (ana,) = readers(store, clock, 1)
    sent(store, edition, [ana], clock.now())
    clock.advance(2)
    client.get(link(edition, ana, 1))
    assert [(p, s) for _, p, s, _ in recorded(app, store)] == [(1, ana)]


def test_a_scanner_is_not_counted_when_the_send_time_is_unknown_and_the_window_can_be_turned_off(
    db_url, store, clock, edition
):
    (ana,) = readers(store, clock, 1)  # never sent to: no delivery row
    for seconds, expected in [(30, []), (0, [(1, ana)])]:
        app = create_app(make_config(db_url, tracking={"scanner_seconds": seconds}), store=store, clock=clock)
        app.test_client().get(link(edition, ana, 1), headers={"User-Agent": SAFE_LINKS})
        assert [(p, s) for _, p, s, _ in recorded(app, store)] == expected
        recorder_of(app).close()


def test_a_removed_readers_link_still_redirects_and_the_click_is_anonymous(app, client, store, clock, edition):
    ana, ben = readers(store, clock)
    sent(store, edition, [ana, ben], clock.now() - timedelta(hours=2))
    client.get(link(edition, ana, 1))
    recorder_of(app).flush()
    with store.session() as session:
        delete_subscriber(session, session.get(Subscriber, ana))
        assert forget_clicks_of(session, ana) == 1
    response = client.get(link(edition, ana, 2))
    assert response.status_code == 302 and response.headers["Location"] == LINKS[1]
    client.get(link(edition, ben, 2))
    assert [(p, s) for _, p, s, _ in recorded(app, store)] == [(1, None), (2, None), (2, ben)]
    with store.session() as session:
        assert edition_link_counts(session, edition)[:2] == [
            LinkCount(2, LINKS[1], unique=1, total=2),
            LinkCount(1, LINKS[0], unique=0, total=1),
        ]
        assert unique_clickers(session, edition) == 1
        assert session.scalar(select(Subscriber.id).where(Subscriber.id == ana)) is None


def test_a_test_copy_redirects_and_is_not_counted(app, client, store, clock, edition):
    response = client.get(link(edition, 0, 4))
    assert response.status_code == 302 and response.headers["Location"] == LINKS[3]
    assert client.get(pixel(edition, 0)).status_code == 200
    assert recorded(app, store) == []


def test_with_clicks_off_links_already_sent_still_redirect_and_count_nothing(db_url, store, clock, edition):
    (ana,) = readers(store, clock, 1)
    app = create_app(make_config(db_url, tracking={"clicks": False}), store=store, clock=clock)
    try:
        response = app.test_client().get(link(edition, ana, 5), headers={"User-Agent": BROWSER})
        assert response.status_code == 302 and response.headers["Location"] == LINKS[4]
        assert recorded(app, store) == []
    finally:
        recorder_of(app).close()


def test_a_click_changes_no_subscription_sets_no_cookie_and_needs_no_session(app, store, clock, edition):
    ids = readers(store, clock, 2)
    with store.session() as session:
        session.execute(update(Subscriber).where(Subscriber.id == ids[1]).values(status=SubscriberStatus.PENDING))

    def state() -> list[tuple[object, ...]]:
        with store.session() as session:
            people = session.execute(
                select(Subscriber.id, Subscriber.status, Subscriber.updated_at).order_by(Subscriber.id)
            )
            events = session.execute(select(SubscriberEvent.id, SubscriberEvent.event))
            return [tuple(r) for r in people] + [tuple(r) for r in events]

    before = state()
    fresh = app.test_client(use_cookies=False)
    for who in ids:
        for path in (link(edition, who, 1), pixel(edition, who)):
            response = fresh.get(path, headers={"User-Agent": BROWSER})
            assert response.status_code in (200, 302)
            assert "Set-Cookie" not in response.headers
    assert state() == before
    assert len(recorded(app, store)) == 4  # a pending reader's click counts; it confirms nothing


# --- opens --------------------------------------------------------------------------------------


def test_the_open_image_is_a_transparent_gif_counted_once_per_reader(app, client, store, clock, edition):
    ana, ben = readers(store, clock)
    for who in (ana, ana, ben):
        response = client.get(pixel(edition, who))
        assert response.status_code == 200 and response.mimetype == "image/gif"
        assert response.data == PIXEL and len(response.data) == 43
        assert response.headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in response.headers
    client.get(link(edition, ana, 1))
    assert [(p, s) for _, p, s, _ in recorded(app, store)] == [(0, ana), (0, ana), (0, ben), (1, ana)]
    with store.session() as session:
        assert click_totals(session, [edition])[edition] == ClickTotals(unique_clickers=1, clicks=1, opens_unique=2)
        assert [c.position for c in edition_link_counts(session, edition) if c.total] == [1]


def test_a_forged_open_code_is_404_and_opens_off_is_404(db_url, app, client, store, clock, edition):
    (ana,) = readers(store, clock, 1)
    code = CODES.code(edition, ana)
    for path in (
        f"/o/{code[:-1]}0.gif" if not code.endswith("0") else f"/o/{code[:-1]}1.gif",
        f"/o/{code}.png",
        f"/o/{code}",
        f"/o/{code}-1.gif",
        f"/o/{CODES.code(edition + 100, ana)}.gif",
    ):
        assert client.get(path).status_code == 404, path
    off = create_app(make_config(db_url, tracking={"opens": False}), store=store, clock=clock)
    assert off.test_client().get(pixel(edition, ana)).status_code == 404
    assert recorded(app, store) == [] and recorded(off, store) == []
    recorder_of(off).close()


# --- the edition's links --------------------------------------------------------------------------


def test_links_are_replaced_until_the_edition_goes_out_then_fixed(store, clock):
    edition = make_edition(store, clock, date(2026, 11, 25), LINKS[:3], gone_out=False)
    with store.session() as session:
        save_edition_links(session, edition, LINKS[:3])  # the same again: idempotent
        save_edition_links(session, edition, [LINKS[5], LINKS[6]])  # remade before going out
        assert edition_links(session, edition) == EditionLinks({1: LINKS[5], 2: LINKS[6]}, fixed=False)
        session.execute(update(Edition).where(Edition.id == edition).values(status=EditionStatus.SENDING))
    with store.session() as session:
        save_edition_links(session, edition, [LINKS[5], LINKS[6]])  # a resumed send: nothing changes
        found = edition_links(session, edition)
        assert found is not None and found.fixed and found.links == {1: LINKS[5], 2: LINKS[6]}
    with pytest.raises(EditionFrozenError), store.session() as session:
        save_edition_links(session, edition, [LINKS[5]])
    with pytest.raises(StoreError), store.session() as session:
        save_edition_links(session, edition + 1000, LINKS[:1])
    with store.session() as session:
        assert edition_links(session, edition + 1000) is None
        assert edition_links(session, 2**40) is None


UNTRACKABLE = [
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "mailto:desk@news.example.com",
    "/relative/path",
    "//news.example.com/no-scheme",
    "https://news.example.com/a\r\nSet-Cookie: x=1",
    "https://news.example.com/a b",
    "https://news.example.com/\x00",
    "https://",
    "https://[::1/",
    "https://news.example.com/" + "a" * MAX_URL,
    "",
]


def test_only_absolute_web_links_can_be_tracked(store, clock):
    edition = make_edition(store, clock, date(2026, 11, 26), [], gone_out=False)
    for url in UNTRACKABLE:
        assert not trackable_url(url), url
        with pytest.raises(MessageError), store.session() as session:
            save_edition_links(session, edition, [LINKS[0], url])
    with store.session() as session:
        assert edition_links(session, edition) == EditionLinks({}, fixed=False)


def test_trackable_urls():
    assert trackable_url("https://news.example.com/2026/story?utm_source=newsletter&utm_medium=email")
    assert trackable_url("http://news.example.com/café")
    assert trackable_url("https://news.example.com/" + "a" * (MAX_URL - 25))


# --- the recorder -------------------------------------------------------------------------------


def test_scanner_agents():
    assert looks_like_scanner(None) and looks_like_scanner("") and looks_like_scanner("   ")
    assert looks_like_scanner(SAFE_LINKS) and looks_like_scanner("Mozilla/5.0 (compatible; Googlebot/2.1)")
    assert not looks_like_scanner(BROWSER)
    assert not looks_like_scanner(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
    )
    assert not looks_like_scanner(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
    )
    sent_at = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    assert not counts_as_reader(True, sent_at + timedelta(seconds=30), sent_at, 30)
    assert counts_as_reader(True, sent_at + timedelta(seconds=31), sent_at, 30)
    assert not counts_as_reader(True, sent_at - timedelta(seconds=5), sent_at, 30)  # a clock a little behind
    assert not counts_as_reader(True, sent_at, None, 30)
    assert counts_as_reader(True, sent_at, None, 0) and counts_as_reader(False, sent_at, None, 30)


def test_the_recorder_writes_batches_in_the_background_and_at_close(store, clock, edition):
    (ana,) = readers(store, clock, 1)
    recorder = ClickRecorder(store, interval=0.05, batch=10)
    for i in range(25):
        recorder.record(ClickRow(edition, 1 + i % 2, ana, clock.now()))
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while recorder.stats().written < 25 and datetime.now(UTC) < deadline:
        threading.Event().wait(0.02)
    assert recorder.stats().written == 25
    recorder.record(ClickRow(edition, 3, ana, clock.now()))
    recorder.close()
    recorder.close()
    stats = recorder.stats()
    assert (stats.queued, stats.written, stats.ignored, stats.dropped, stats.failures) == (0, 26, 0, 0, 0)
    assert 3 <= stats.batches <= 26 and stats.writing_seconds > 0
    recorder.record(ClickRow(edition, 4, ana, clock.now()))  # a request after shutdown began is written at once
    assert recorder.stats().written == 27
    with store.session() as session:
        assert click_totals(session, [edition])[edition].clicks == 27


def test_while_the_database_is_down_clicks_wait_and_the_oldest_beyond_capacity_are_dropped(tmp_path, clock, caplog):
    down = Store(f"sqlite:///{tmp_path / 'not-yet-migrated.db'}")  # every insert fails: no such table
    recorder = ClickRecorder(down, batch=3, capacity=5, background=False)
    rows = [ClickRow(1, p, None, clock.now()) for p in range(1, 8)]
    for row in rows:
        recorder.record(row)
    assert recorder.stats().queued == 5 and recorder.stats().dropped == 2  # the two oldest
    with caplog.at_level(logging.WARNING, logger="newsletter.clickrecorder"), pytest.raises(StoreError):
        recorder.flush()
    assert "clicks not written" in caplog.text
    assert recorder.stats().queued == 5 and recorder.stats().failures == 1
    down.upgrade()  # the database is back
    assert recorder.flush() == 5
    assert [p for _, p, _, _ in _clicks(down)] == [r.position for r in rows[2:]]
    down.dispose()


def test_record_clicks_writes_one_batch_and_makes_unknown_readers_anonymous(store, clock, edition):
    (ana,) = readers(store, clock, 1)
    at = clock.now()
    rows = [ClickRow(edition, 1, ana, at), ClickRow(edition, 2, ana + 50, at), ClickRow(edition, 2, None, at)]
    rows += [ClickRow(edition, 3, 2**40, at), ClickRow(2**40, 1, ana, at)]  # out of range: never reach the database
    with store.session() as session:
        assert record_clicks(session, rows) == 4
        assert record_clicks(session, []) == 0
    assert _clicks(store) == [
        (edition, 1, ana, at),
        (edition, 2, None, at),
        (edition, 2, None, at),
        (edition, 3, None, at),
    ]


def _clicks(store: Store) -> list[tuple[int, int, int | None, datetime]]:
    with store.session() as session:
        rows = session.execute(
            select(Click.edition_id, Click.position, Click.subscriber_id, Click.at).order_by(Click.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


# --- the rollups ------------------------------------------------------------------------------


def _raw_figures(store: Store, editions: list[int]) -> tuple[dict[int, ClickTotals], dict[tuple[int, int], LinkCount]]:
    """The figures counted from the raw click rows, as the report counted them before the rollups."""
    rows = _clicks(store)
    totals = {}
    for e in editions:
        links = [(p, s) for edition_id, p, s, _ in rows if edition_id == e and p > 0]
        opens = [s for edition_id, p, s, _ in rows if edition_id == e and p == 0]
        totals[e] = ClickTotals(len({s for _, s in links if s is not None}), len(links), len(set(opens) - {None}))
    per_link = {}
    with store.session() as session:
        for e in editions:
            for position, url in edition_links(session, e).links.items():  # type: ignore[union-attr]
                on_it = [s for edition_id, p, s, _ in rows if edition_id == e and p == position]
                per_link[(e, position)] = LinkCount(position, url, len(set(on_it) - {None}), len(on_it))
    return totals, per_link


def assert_rollups_exact(store: Store, editions: list[int]) -> None:
    """What the report reads (the rollups) is what a count of the raw rows gives."""
    totals, per_link = _raw_figures(store, editions)
    with store.session() as session:
        assert click_totals(session, editions) == totals
        for e in editions:
            assert unique_clickers(session, e) == totals[e].unique_clickers
            assert {(e, c.position): c for c in edition_link_counts(session, e)} == {
                key: count for key, count in per_link.items() if key[0] == e
            }


def test_the_rollups_equal_the_raw_counts_through_duplicates_anonymous_clicks_and_removals(store, clock, edition):
    other = make_edition(store, clock, date(2026, 11, 23), LINKS[:3])
    people = readers(store, clock, 6)
    ana, ben = people[:2]
    at = clock.now()
    batches = [
        # A reader twice on one link and twice opening, in one batch: one reader each.
        [ClickRow(edition, p, who, at) for p, who in [(1, ana), (1, ana), (2, ana), (0, ben), (0, ben)]],
        # The same again in a later batch; anonymous clicks and opens; a link past the edition's last.
        [ClickRow(e, p, who, at) for e, p, who in [(edition, 1, ana), (edition, 3, ben), (other, 1, ana)]]
        + [ClickRow(e, p, who, at) for e, p, who in [(edition, 2, None), (edition, 0, None), (other, 9, ben)]],
        # A reader not on the list is anonymous; everyone on both editions, opens included.
        [ClickRow(edition, 1, people[-1] + 100, at)]
        + [ClickRow(e, p, s, at) for e in (other, edition) for p in (2, 0, 1) for s in people[2:]],
    ]
    for batch in batches:
        with store.session() as session:
            record_clicks(session, batch)
        assert_rollups_exact(store, [edition, other])
    with store.session() as session:
        assert click_totals(session, [edition])[edition] == ClickTotals(unique_clickers=6, clicks=15, opens_unique=5)
    for gone in (ana, people[2]):
        with store.session() as session:
            delete_subscriber(session, session.get(Subscriber, gone))
            forget_clicks_of(session, gone)
        assert_rollups_exact(store, [edition, other])
    with store.session() as session:
        assert click_totals(session, [edition])[edition] == ClickTotals(unique_clickers=4, clicks=15, opens_unique=4)
        assert forget_clicks_of(session, ana) == 0  # nothing left to forget: the rollups stay
        record_clicks(session, [ClickRow(edition, 1, ana, at), ClickRow(edition, 1, ben, at)])
    assert_rollups_exact(store, [edition, other])


def test_recorders_and_a_removal_at_the_same_moment_count_each_reader_once(db_url, store, clock, edition):
    """Web processes write their batches concurrently (on PostgreSQL truly at once); the counts stay exact."""
    from newsletter.subscribers import remove_subscribers

    other = make_edition(store, clock, date(2026, 11, 23), LINKS[:3])
    people = readers(store, clock, 30)
    with store.session() as session:
        found = session.execute(select(Subscriber.id, Subscriber.email).where(Subscriber.id.in_(people[:3])))
        emails = {subscriber_id: email for subscriber_id, email in found}
    at = clock.now()
    writers = 4
    start = threading.Barrier(writers + 1, timeout=30)
    failures: list[BaseException] = []

    def write(k: int) -> None:
        # Every writer records every reader's first clicks and opens, in its own order and batches.
        rows = [ClickRow(e, (i + k) % 4, s, at) for i, s in enumerate(people) for e in (edition, other)]
        shift = k * len(rows) // writers
        rows = rows[shift:] + rows[:shift]
        if k % 2:
            rows.reverse()
        try:
            start.wait()
            for i in range(0, len(rows), 7):
                with store.session() as session:
                    record_clicks(session, rows[i : i + 7])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    def remove() -> None:
        try:
            start.wait()
            for subscriber_id in people[:3]:
                with store.session() as session:
                    remove_subscribers(session, [emails[subscriber_id]], clock, source="test")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    threads.append(threading.Thread(target=remove))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    assert len(_clicks(store)) == writers * 2 * len(people)
    assert_rollups_exact(store, [edition, other])
    with store.session() as session:
        assert click_totals(session, [edition])[edition].unique_clickers == len(people) - 3
