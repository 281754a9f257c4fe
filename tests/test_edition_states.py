"""Preview and send agree on what an edition holds, in every state it can be in.

For each state (not made, skipped, made, partly sent, sent) the stories a preview shows
are exactly the stories readers then get, on a pinned clock, with articles arriving,
hidden and pinned in between.
"""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from newsletter import editorial
from newsletter.editions import cutoff
from newsletter.preparation import prepare_edition, preview_edition
from newsletter.publish import _start, send_edition
from newsletter.store.models import Delivery, DeliveryStatus, EditionStatus
from tests.conftest import add_article, add_subscribers

DAY = date(2026, 11, 24)
END = cutoff(DAY, time(6), ZoneInfo("Europe/London"))
HEADLINE = re.compile(r'<h[24] class="(?:lead|story)-headline"[^>]*><a [^>]*>(.*?)</a>', re.S)


def headlines(html: str) -> list[str]:
    return [unescape(h).strip() for h in HEADLINE.findall(html)]


def sent_headlines(smtp_sink, email: str) -> list[str]:
    (received,) = smtp_sink.handler.by_recipient()[email]
    return headlines(received.message.get_body(("html",)).get_content())


def state_of(preview) -> str:
    return preview.state


@pytest.mark.parametrize("state", ["not made", "skipped", "made", "sending", "sent"])
def test_preview_and_send_agree(state, store, clock, ctx, smtp_sink) -> None:
    first, second = add_subscribers(store, clock, 2)
    clock.set(END + timedelta(minutes=1))
    if state == "skipped":
        assert send_edition(ctx, day=DAY).outcome == "skipped"
    for n in range(3):
        add_article(store, clock, f"s{n}", END - timedelta(hours=n + 1), image_url=f"https://img.example.com/{n}.jpg")
    if state == "made":
        prepare_edition(ctx, DAY)
    if state == "sending":  # deliveries exist and one reader already has it: the edition is fixed
        _start(ctx, prepare_edition(ctx, DAY).id)
        with store.session() as session:
            row = session.scalars(select(Delivery).order_by(Delivery.id)).first()
            row.status = DeliveryStatus.SENT
    if state == "sent":
        send_edition(ctx, day=DAY)
    # Editors change things after that point: a late story, a hidden one, a new lead.
    add_article(store, clock, "late", END - timedelta(minutes=5))
    if state not in ("sending", "sent"):
        editorial.hide(store, clock, "s1")
        editorial.pin(ctx, "s2", DAY)

    preview = preview_edition(ctx, DAY)
    assert state_of(preview) == state
    shown = headlines(preview.html)
    if state in ("sending", "sent"):
        assert shown == ["Story s0", "Story s1", "Story s2"]  # fixed when it started going out
    else:
        assert shown == ["Story s2", "Story late", "Story s0"]
    smtp_sink.handler.received.clear()
    report = send_edition(ctx, day=DAY)
    if state == "sent":
        assert report.outcome == "already-sent" and not smtp_sink.handler.received
        return
    assert report.outcome == "sent", report.message
    assert sent_headlines(smtp_sink, second) == shown
    if state != "sending":
        assert sent_headlines(smtp_sink, first) == shown
    assert state_of(preview_edition(ctx, DAY)) == "sent"
    assert headlines(preview_edition(ctx, DAY).html) == shown


def test_a_made_edition_is_made_again_only_until_it_starts(store, clock, ctx) -> None:
    clock.set(END + timedelta(minutes=1))
    add_article(store, clock, "first", END - timedelta(hours=1))
    made = prepare_edition(ctx, DAY)
    add_article(store, clock, "second", END - timedelta(hours=2))
    again = prepare_edition(ctx, DAY)
    assert again.id == made.id and again.nonce == made.nonce and again.article_count == 2
    assert again.status == EditionStatus.READY
