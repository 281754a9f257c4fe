"""No story lost, and editors in control: selection across cutoffs, pin, hide, priority, sections.

The pure rules are tested on plain data; the same rules through the store, on SQLite and
PostgreSQL, with articles arriving before and after sends on a pinned clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from newsletter import editorial
from newsletter.articles import import_source
from newsletter.config import FeedConfig
from newsletter.due import Action, EditionState, decide
from newsletter.editions import Layout, Story, Window, belongs, choose_lead, cutoff, group_by_section
from newsletter.errors import ArticleNotFoundError, EditionFrozenError, UsageError
from newsletter.preparation import plan_for, prepare_edition
from newsletter.publish import send_edition
from newsletter.store.editions import edition_for
from newsletter.store.models import Article, EditionStatus
from tests.conftest import add_article, add_subscribers, make_config

LONDON = ZoneInfo("Europe/London")
SIX = time(6)
DAY = date(2026, 11, 24)
END = cutoff(DAY, SIX, LONDON)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the pure rules -------------------------------------------------------------------------


@dataclass
class Art:
    published_at: datetime
    pinned_for: date | None = None


def test_an_article_belongs_in_the_window_or_where_it_is_pinned() -> None:
    window = Window(END - timedelta(hours=48), END)
    assert belongs(Art(END), DAY, window)
    assert not belongs(Art(END + timedelta(seconds=1)), DAY, window)
    assert not belongs(Art(window.start), DAY, window)  # too old
    assert belongs(Art(window.start, pinned_for=DAY), DAY, window)  # a pin brings an old story in
    assert not belongs(Art(END, pinned_for=DAY + timedelta(days=1)), DAY, window)  # waits for its date
    assert belongs(Art(END, pinned_for=DAY - timedelta(days=1)), DAY, window)  # a past pin holds nothing back
    assert not belongs(Art(END + timedelta(hours=1), pinned_for=DAY), DAY, window)  # never after the cutoff


def story(title: str, minutes_ago: int, **fields) -> Story:
    return Story(
        title, f"https://news.example.com/{title}", published_at=END - timedelta(minutes=minutes_ago), **fields
    )


def test_the_pinned_story_leads_whatever_its_priority_or_picture() -> None:
    stories = [story("big", 1, priority=50, image_url="https://i/1.jpg"), story("pinned", 90, pinned=True)]
    assert choose_lead(stories).title == "pinned"


def test_without_a_pin_the_highest_priority_story_with_a_picture_leads_then_the_newest() -> None:
    stories = [
        story("theatre review", 1, image_url="https://i/t.jpg"),
        story("council £40m plan", 60, priority=10, image_url="https://i/c.jpg"),
        story("breaking, no picture", 0, priority=99),
        story("older council", 120, priority=10, image_url="https://i/o.jpg"),
    ]
    assert choose_lead(stories).title == "council £40m plan"
    no_pictures = [story("a", 5, priority=1), story("b", 1, priority=1), story("c", 0)]
    assert choose_lead(no_pictures).title == "b"


def test_sections_follow_the_configured_order_and_unsectioned_stories_go_last() -> None:
    stories = [
        story("match", 1, section="Sport"),
        story("unfiled", 2),
        story("review", 3, section="culture"),
        story("council", 4, section="News"),
        story("budget", 5, section="Politics"),
        story("second council", 6, section="news", priority=5),
    ]
    layout = Layout(sections=("News", "Politics", "Sport"), more_stories="Also today")
    sections = group_by_section(stories, layout)
    assert [(s.heading, [x.title for x in s.stories]) for s in sections] == [
        ("News", ["second council", "council"]),  # priority first, then newest; the configured spelling
        ("Politics", ["budget"]),
        ("Sport", ["match"]),
        ("culture", ["review"]),  # not configured: after the configured ones
        ("Also today", ["unfiled"]),
    ]


# --- through the store ---------------------------------------------------------------------


def titles(plan) -> list[str]:
    return [s.title for s in plan.stories]


def placed(store) -> dict[str, date | None]:
    with store.session() as session:
        return {a.guid: (a.edition.date if a.edition else None) for a in session.scalars(select(Article))}


def test_late_imports_across_two_cutoffs_are_never_lost_nor_sent_twice(store, clock, ctx, smtp_sink):
    add_subscribers(store, clock, 2)
    add_article(store, clock, "on-time", END - timedelta(hours=1))
    clock.set(END + timedelta(minutes=1))
    assert send_edition(ctx, day=DAY).outcome == "sent"
    # Imported after the 24th went out, dated before its cutoff, and one before the cutoff before that.
    add_article(store, clock, "late", END - timedelta(hours=2))
    add_article(store, clock, "very-late", END - timedelta(hours=23))  # 47 hours before the next cutoff
    add_article(store, clock, "archive", END - timedelta(days=10))
    second = DAY + timedelta(days=1)
    clock.set(cutoff(second, SIX, LONDON) + timedelta(minutes=1))
    report = send_edition(ctx, day=second)
    assert report.outcome == "sent"
    assert "1 article was published too long before this edition" in report.message
    assert placed(store) == {"on-time": DAY, "late": second, "very-late": second, "archive": None}
    # The third morning takes nothing again, and the archive is reported once, not every day.
    third = second + timedelta(days=1)
    clock.set(cutoff(third, SIX, LONDON) + timedelta(minutes=1))
    report = send_edition(ctx, day=third)
    assert report.outcome == "skipped" and "too long before" not in report.message
    per_reader = smtp_sink.handler.by_recipient()
    assert all(len(copies) == 2 for copies in per_reader.values())


def test_a_skipped_day_is_sent_when_its_articles_arrive_late(store, clock, ctx, smtp_sink):
    add_subscribers(store, clock, 2)
    clock.set(END + timedelta(minutes=1))
    assert send_edition(ctx).outcome == "skipped"
    add_article(store, clock, "five-thirty", END - timedelta(minutes=30))
    clock.set(END + timedelta(minutes=20))
    assert plan_for(ctx, DAY).article_ids  # the preview shows it ...
    report = send_edition(ctx, day=DAY)  # ... and send sends it
    assert report.outcome == "sent", report.message
    assert placed(store) == {"five-thirty": DAY}
    assert len(smtp_sink.handler.received) == 2


def test_the_scheduler_sends_a_skipped_edition_whose_articles_came_in_within_the_grace_period(config) -> None:
    skipped = EditionState(EditionStatus.SKIPPED, waiting=3)
    on_time = decide(END + timedelta(minutes=30), config, lambda _day: skipped)
    assert on_time.action == Action.SEND and "3 articles for it have come in since" in on_time.reason
    too_late = decide(END + timedelta(hours=5), config, lambda _day: skipped)
    assert too_late.action == Action.DONE and "next edition" in too_late.reason
    nothing = decide(END + timedelta(minutes=30), config, lambda _day: EditionState(EditionStatus.SKIPPED))
    assert nothing.action == Action.DONE


def test_hiding_keeps_a_story_out_of_a_made_edition_and_every_later_one(store, clock, ctx, smtp_sink):
    add_subscribers(store, clock, 1)
    add_article(store, clock, "keep", END - timedelta(hours=1))
    add_article(store, clock, "retract", END - timedelta(hours=2), url="https://news.example.com/retract")
    clock.set(END + timedelta(minutes=1))
    edition = prepare_edition(ctx, DAY)  # made, not started: still open
    assert edition.status == EditionStatus.READY and edition.article_count == 2
    assert "hidden" in editorial.hide(store, clock, "https://news.example.com/retract").message
    assert send_edition(ctx).outcome == "sent"
    (received,) = smtp_sink.handler.received
    assert "Story retract" not in received.message.get_body(("html",)).get_content()
    assert placed(store) == {"keep": DAY, "retract": None}
    tomorrow = DAY + timedelta(days=1)
    clock.set(cutoff(tomorrow, SIX, LONDON) + timedelta(minutes=1))
    assert plan_for(ctx, tomorrow).article_ids == ()
    # Sent stories are fixed: hiding one is refused with the reason, not half-done.
    with pytest.raises(EditionFrozenError, match="has gone out in it already") as caught:
        editorial.hide(store, clock, "keep")
    assert caught.value.day == DAY and caught.value.status == "sent"
    # Shown again, the retracted story goes in the next edition (it is within the maximum age).
    editorial.unhide(store, clock, "retract")
    assert [a for a in plan_for(ctx, tomorrow).plan.stories if a.title == "Story retract"]


def test_pin_and_priority_steer_the_lead_and_the_order(config, store, clock, ctx):
    ctx = replace(ctx, config=make_config(config.store.url, newsletter={"sections": ["News", "Sport"]}))
    add_article(store, clock, "theatre", END - timedelta(minutes=10), section="Culture", image_url="https://i/t.jpg")
    add_article(store, clock, "council", END - timedelta(hours=3), section="News")
    add_article(store, clock, "match", END - timedelta(minutes=5), section="Sport")
    add_article(store, clock, "bins", END - timedelta(hours=2), section="News")
    clock.set(END + timedelta(minutes=1))
    assert titles(plan_for(ctx, DAY).plan) == [
        "Story theatre", "Story bins", "Story council", "Story match"
    ]  # fmt: skip
    with store.session() as session:
        council_id = session.scalars(select(Article.id).where(Article.guid == "council")).one()
    assert "leads the edition of 2026-11-24" in editorial.pin(ctx, str(council_id), DAY).message
    editorial.set_priority(store, clock, "https://news.example.com/bins", -5)
    plan = plan_for(ctx, DAY).plan
    assert plan.lead.title == "Story council" and plan.lead.pinned
    assert [(s.heading, [x.title for x in s.stories]) for s in plan.sections] == [
        ("News", ["Story bins"]),
        ("Sport", ["Story match"]),
        ("Culture", ["Story theatre"]),
    ]
    # Pinning another story for the same date replaces the first pin.
    editorial.pin(ctx, "match", DAY)
    assert plan_for(ctx, DAY).plan.lead.title == "Story match"
    editorial.unpin(store, clock, "match")
    assert plan_for(ctx, DAY).plan.lead.title == "Story theatre"


def test_a_story_pinned_for_a_later_date_waits_for_it_and_an_old_one_pinned_goes(store, clock, ctx):
    add_article(store, clock, "for-tomorrow", END - timedelta(hours=1))
    add_article(store, clock, "old", END - timedelta(days=5))
    clock.set(END + timedelta(minutes=1))
    editorial.pin(ctx, "for-tomorrow", DAY + timedelta(days=1))
    editorial.pin(ctx, "old", DAY)
    selection = plan_for(ctx, DAY)
    assert titles(selection.plan) == ["Story old"] and selection.too_old == ()
    prepare_edition(ctx, DAY)
    clock.set(END + timedelta(days=1, minutes=1))
    assert titles(plan_for(ctx, DAY + timedelta(days=1)).plan) == ["Story for-tomorrow"]


def test_pins_and_names_that_cannot_work_are_one_clear_error(store, clock, ctx):
    add_article(store, clock, "a", END - timedelta(hours=1))
    add_article(store, clock, "b", END - timedelta(hours=1), url="https://news.example.com/same")
    add_article(store, clock, "c", END - timedelta(hours=1), url="https://news.example.com/same")
    add_article(store, clock, "after", END + timedelta(hours=1))
    clock.set(END + timedelta(minutes=1))
    for ref in ("999999", "99999999999999999999", "https://nowhere.example/x", "", "a\x00b", "x" * 5000):
        with pytest.raises(ArticleNotFoundError):
            editorial.hide(store, clock, ref)
    with pytest.raises(ArticleNotFoundError, match="URL of several articles") as shared:
        editorial.hide(store, clock, "https://news.example.com/same")
    assert len(shared.value.candidates) == 2
    with pytest.raises(UsageError, match="after the send time"):
        editorial.pin(ctx, "after", DAY)
    with pytest.raises(UsageError, match="within 60 days"):
        editorial.pin(ctx, "a", date(9999, 12, 31))
    prepare_edition(ctx, DAY)
    with store.session() as session:
        edition = edition_for(session, DAY)
        edition.status = EditionStatus.SENT
    with pytest.raises(EditionFrozenError, match="cannot take a new lead"):
        editorial.pin(ctx, "after", DAY)


def test_editors_are_told_what_a_pin_or_a_hide_undid(store, clock, ctx):
    add_article(store, clock, "first", END - timedelta(hours=1))
    add_article(store, clock, "second", END - timedelta(hours=2))
    clock.set(END + timedelta(minutes=1))
    editorial.pin(ctx, "first", DAY)
    assert "(#1 no longer leads it)" in editorial.pin(ctx, "second", DAY).message
    hidden = editorial.hide(store, clock, "second").message
    assert "it no longer leads the edition of 2026-11-24: pin it again after `articles unhide`" in hidden
    with pytest.raises(UsageError, match=r"cannot pin for 2026-11-23: that edition's send time has passed"):
        editorial.pin(ctx, "first", DAY - timedelta(days=1))
    with pytest.raises(UsageError, match=r"cannot edit #1 “Story first”: the title is empty"):
        editorial.edit(store, clock, "1", {"title": " "})


@pytest.mark.parametrize(
    ("previous", "words"),
    [
        (None, "Here is the one story from The Example Gazette."),
        (DAY - timedelta(days=1), "Here is the one story from The Example Gazette since yesterday’s edition."),
        (DAY - timedelta(days=3), "Here is the one story from The Example Gazette since Saturday’s edition."),
        (DAY - timedelta(days=30), "Here is the one story from The Example Gazette since the last edition."),
    ],
)
def test_the_greeting_says_since_when_truthfully(config, store, clock, ctx, previous, words):
    from newsletter.preparation import render_plan

    add_article(store, clock, "only", END - timedelta(hours=1))
    clock.set(END + timedelta(minutes=1))
    plan = plan_for(ctx, DAY).plan
    plan = type(plan)(**{**plan.__dict__, "previous": previous})
    assert words in " ".join(render_plan(config, plan, "since1").text.split())


def test_edits_are_checked_and_survive_the_next_feed_fetch(store, clock, ctx, tmp_path):
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        '{"url": "https://news.example.com/plan", "title": "Plan approved", "published_at": "2026-11-24T05:00:00Z"}\n'
    )
    import_source(ctx, str(feed))
    message = editorial.edit(store, clock, "https://news.example.com/plan", {"title": "Council approves £40m\x07 plan"})
    assert message.message.endswith("changed title")
    import_source(ctx, str(feed))  # the feed still says "Plan approved"
    with store.session() as session:
        (article,) = session.scalars(select(Article))
        assert article.title == "Council approves £40m plan" and article.edited_fields == "title"
    for bad in (
        {"title": "  "},
        {"image_url": "javascript:alert(1)"},
        {"section": "x" * 101},
        {"standfirst": "s" * 2001},
    ):
        with pytest.raises(UsageError):
            editorial.edit(store, clock, "https://news.example.com/plan", bad)
    with pytest.raises(UsageError, match="cannot edit"):
        editorial.edit(store, clock, "https://news.example.com/plan", {"url": "https://evil.example"})


def test_a_feeds_category_table_sets_priority(store, ctx, tmp_path):
    feed = tmp_path / "feed.rss"
    feed.write_text(
        """<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><link>https://news.example.com/</link>
        <item><title>Flash</title><link>https://news.example.com/flash</link><category>Breaking</category>
        <pubDate>Tue, 24 Nov 2026 05:00:00 GMT</pubDate></item>
        <item><title>Plain</title><link>https://news.example.com/plain</link><category>News</category>
        <pubDate>Tue, 24 Nov 2026 05:00:00 GMT</pubDate></item></channel></rss>"""
    )
    source = FeedConfig(url=str(feed), priority=1, priorities=(("breaking", 20),))
    import_source(ctx, str(feed), feed=source)
    with store.session() as session:
        assert dict(session.execute(select(Article.title, Article.priority)).all()) == {"Flash": 20, "Plain": 1}


def test_cron_sends_a_skipped_day_whose_articles_arrive_within_the_grace_period(store, clock, ctx, smtp_sink):
    """`send --scheduled` every few minutes, on SQLite and PostgreSQL: never a locked database."""
    from newsletter.due import send_scheduled

    add_subscribers(store, clock, 2)
    clock.set(END + timedelta(minutes=1))
    first = send_scheduled(ctx)
    assert [r.outcome for r in first.reports] == ["skipped"]
    add_article(store, clock, "late", END - timedelta(minutes=30))
    clock.set(END + timedelta(minutes=20))
    second = send_scheduled(ctx)
    assert [r.outcome for r in second.reports] == ["sent"] and second.exit_code == 0
    assert placed(store) == {"late": DAY} and len(smtp_sink.handler.received) == 2


def test_a_skipped_day_is_not_a_previous_edition(store, clock, ctx, smtp_sink):
    """Nothing went out on the skipped days, so a story from before them is not too old."""
    add_subscribers(store, clock, 1)
    add_article(store, clock, "sent", END - timedelta(hours=1))
    clock.set(END + timedelta(minutes=1))
    send_edition(ctx, day=DAY)
    for n in (1, 2):
        clock.set(END + timedelta(days=n, minutes=1))
        assert send_edition(ctx).outcome == "skipped"
    add_article(store, clock, "late", END + timedelta(hours=1))  # after the last sent edition, 3 days ago
    clock.set(END + timedelta(days=3, minutes=1))
    report = send_edition(ctx)
    assert report.outcome == "sent" and "too long before" not in report.message
    assert placed(store)["late"] == DAY + timedelta(days=3)


def test_a_hidden_story_in_a_made_edition_is_listed_as_hidden(store, clock, ctx):
    from newsletter.editorial import describe_state
    from newsletter.store.articles import find_article

    add_article(store, clock, "story", END - timedelta(hours=1))
    clock.set(END + timedelta(minutes=1))
    prepare_edition(ctx, DAY)  # made, not started: the row still names the edition
    editorial.hide(store, clock, "story")
    with store.session() as session:
        assert describe_state(find_article(session, "story"), None) == "hidden"
