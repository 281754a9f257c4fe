"""The morning end to end: store -> selection -> render -> SMTP, against a real server and database."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from sqlalchemy import func, select

from newsletter.context import Context
from newsletter.publish import send_edition, send_test_copy
from newsletter.returnpath import Attribution, return_paths
from newsletter.store.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.tokens import UNSUBSCRIBE
from tests.conftest import add_article, add_subscribers, morning_articles


def test_one_message_per_active_subscriber_with_correct_parts_and_headers(config, store, clock, tokens, ctx, smtp_sink):
    morning_articles(store, clock, 4)
    add_article(
        store,
        clock,
        "unicode",
        datetime(2026, 11, 24, 5, 45, tzinfo=UTC),
        title="Zoë & José: “Cafés” <open> late — 東京 too",
        standfirst="Crème brûlée, naïve façades.",
    )
    active = add_subscribers(store, clock, 5)
    add_subscribers(store, clock, 2, SubscriberStatus.PENDING, prefix="pending")
    add_subscribers(store, clock, 2, SubscriberStatus.UNSUBSCRIBED, prefix="gone")

    report = send_edition(ctx)

    assert report.outcome == "sent", report.message
    got = smtp_sink.handler.by_recipient()
    assert sorted(got) == sorted(active)
    assert all(len(copies) == 1 for copies in got.values())
    links = set()
    paths = return_paths(config)
    with store.session() as session:
        ids = {s.email: s.id for s in session.scalars(select(Subscriber))}
        edition_id = session.scalars(select(Edition.id)).one()
    for email, (received,) in got.items():
        # VERP: the envelope sender names the edition and the reader, signed
        local, _, domain = received.mail_from.partition("@")
        assert domain == "news.example.com" and local.startswith("breakfast+")
        code = local.removeprefix("breakfast+")
        assert paths.read(code) == Attribution(edition_id, ids[email])
        msg = received.message
        assert msg["X-Newsletter-Delivery"] == code
        assert msg.get_content_type() == "multipart/alternative"
        text_part, html_part = msg.iter_parts()
        assert text_part.get_content_type() == "text/plain" and html_part.get_content_type() == "text/html"
        assert text_part.get_content_charset() == "utf-8"
        html, plain = html_part.get_content(), text_part.get_content()
        assert 'style="' in html and "<link" not in html
        assert "Zoë &amp; José: “Cafés” &lt;open&gt; late — 東京 too" in html
        assert "Zoë & José: “Cafés” <open> late — 東京 too" in plain
        assert msg["Subject"] == "Breakfast in red: Tuesday 24 November 2026"
        assert msg["From"] == "Breakfast in red <breakfast@news.example.com>"
        assert email in msg["To"]
        assert msg["Date"] and msg["Message-ID"].endswith("@news.example.com>")
        assert msg["List-Id"] == "Breakfast in red <breakfast-in-red.news.example.com>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        raw_header = re.search(rb"List-Unsubscribe: (.*?)\r\n(?! )", received.data, re.S).group(1)
        assert b"=?" not in raw_header  # never RFC 2047-encoded
        url, mailto = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
        assert url.startswith("https://news.example.com/newsletter/unsubscribe/")
        assert mailto.startswith("mailto:breakfast@news.example.com?subject=unsubscribe")
        assert url in html and url in plain
        token = url.rsplit("/", 1)[1]
        claim = tokens.read(UNSUBSCRIBE, token, max_age_days=365)
        assert claim.matches(email)
        links.add(url)
    assert len(links) == len(active)


def test_second_send_sends_nothing_to_anyone_already_delivered(store, clock, ctx, smtp_sink):
    morning_articles(store, clock)
    add_subscribers(store, clock, 3)
    assert send_edition(ctx).outcome == "sent"
    again = send_edition(ctx)
    assert again.outcome == "already-sent"
    assert len(smtp_sink.handler.received) == 3
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 3
        edition = session.scalars(select(Edition)).one()
        assert edition.status == EditionStatus.SENT and edition.sent_count == 3


def test_empty_morning_is_recorded_as_skipped_and_sends_nothing(store, clock, ctx, smtp_sink):
    add_subscribers(store, clock, 2)
    report = send_edition(ctx)
    assert report.outcome == "skipped" and report.ok
    assert smtp_sink.handler.received == []
    with store.session() as session:
        assert session.scalars(select(Edition)).one().status == EditionStatus.SKIPPED


def test_send_when_empty_sends_an_edition_saying_so(store, clock, tokens, smtp_sink, db_url):
    from tests.conftest import make_config

    config = make_config(db_url, smtp_sink, newsletter={"send_when_empty": True})
    add_subscribers(store, clock, 1)
    assert send_edition(Context(config, store, clock, tokens)).outcome == "sent"
    (received,) = smtp_sink.handler.received
    assert "Nothing new" in received.message.get_body(("plain",)).get_content()


def test_articles_are_never_in_two_editions(store, clock, ctx, smtp_sink):
    morning_articles(store, clock, 2)
    add_subscribers(store, clock, 1)
    send_edition(ctx)
    add_article(store, clock, "late", datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    clock.set(datetime(2026, 11, 25, 6, 5, tzinfo=UTC))
    send_edition(ctx)
    with store.session() as session:
        editions = {e.date: e.id for e in session.scalars(select(Edition))}
        placed = {a.guid: a.edition_id for a in session.scalars(select(Article))}
    assert placed == {
        "story-0": editions[date(2026, 11, 24)],
        "story-1": editions[date(2026, 11, 24)],
        "late": editions[date(2026, 11, 25)],
    }


def test_test_copy_goes_to_one_address_and_records_nothing(store, clock, ctx, smtp_sink):
    morning_articles(store, clock)
    add_subscribers(store, clock, 3)
    send_test_copy(ctx, None, "editor@example.net")
    (received,) = smtp_sink.handler.received
    assert received.rcpt_tos == ["editor@example.net"]
    assert received.message["Subject"].startswith("[Test] ")
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Edition)) == 0
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
    # Made now, nothing of it is stored: its links go straight to the stories (a tracked one
    # would find no links of the edition at the click endpoint), in both parts.
    text = received.message.get_body(("plain",)).get_content()
    html = received.message.get_body(("html",)).get_content()
    assert "https://news.example.com/story-0" in text and 'href="https://news.example.com/story-0"' in html
    assert "/c/" not in text and "/c/" not in html


def test_unsubscribed_before_their_turn_are_skipped(store, clock, ctx, smtp_sink):
    morning_articles(store, clock)
    emails = add_subscribers(store, clock, 3)
    from newsletter.preparation import prepare_edition
    from newsletter.publish import _start

    edition = prepare_edition(ctx, date(2026, 11, 24))
    _start(ctx, edition.id)
    from newsletter.store.models import Subscriber

    with store.session() as session:
        gone = session.scalars(select(Subscriber).where(Subscriber.email == emails[1])).one()
        gone.status = SubscriberStatus.UNSUBSCRIBED
    report = send_edition(ctx)
    assert report.outcome == "sent"
    assert sorted(smtp_sink.handler.by_recipient()) == sorted([emails[0], emails[2]])
    with store.session() as session:
        statuses = sorted(d.status for d in session.scalars(select(Delivery)))
    assert statuses == sorted([DeliveryStatus.SENT, DeliveryStatus.SENT, DeliveryStatus.SKIPPED])


def test_edition_before_its_cutoff_covers_up_to_now_and_loses_nothing(store, clock, ctx, smtp_sink):
    clock.set(datetime(2026, 11, 24, 5, 0, tzinfo=UTC))  # an hour before the 06:00 send
    add_article(store, clock, "early", datetime(2026, 11, 24, 4, 0, tzinfo=UTC))
    add_subscribers(store, clock, 1)
    send_edition(ctx, day=date(2026, 11, 24))
    add_article(store, clock, "after-early-send", datetime(2026, 11, 24, 5, 30, tzinfo=UTC))
    clock.set(datetime(2026, 11, 25, 6, 1, tzinfo=UTC))
    send_edition(ctx)
    with store.session() as session:
        placed = {a.guid: a.edition.date for a in session.scalars(select(Article))}
    assert placed == {"early": date(2026, 11, 24), "after-early-send": date(2026, 11, 25)}
