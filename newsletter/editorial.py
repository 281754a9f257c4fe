"""Editors steering the edition: hide, pin, order and correct stories, from the CLI or the admin.

An edition's stories are chosen when it starts going out (``preparation.make_edition``), so a
change here needs no re-rendering: it takes effect in every edition not yet started, and a
preview shows it at once. Once an edition has started going out its stories are fixed:
a change that would alter it is refused with ``EditionFrozenError``, saying why, rather
than half-applied to readers who have not had it yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from newsletter.cleaning import squash
from newsletter.clock import Clock
from newsletter.config import Config
from newsletter.context import Context
from newsletter.editions import cutoff
from newsletter.errors import EditionFrozenError, InvalidArticleError, UsageError, ValidationError
from newsletter.items import ArticleInput
from newsletter.store import Store
from newsletter.store import articles as db
from newsletter.store.editions import edition_for, has_gone_out
from newsletter.store.models import Article

PIN_HORIZON = timedelta(days=60)  # further ahead is a typo (2027 for 2026), not a plan


@dataclass(frozen=True)
class Outcome:
    """What a change did, in one line for the terminal or the admin's notice."""

    article_id: int
    title: str
    message: str


def _refuse_if_gone_out(article: Article) -> None:
    """A story in an edition that has started going out stays as readers got it."""
    edition = article.edition
    if has_gone_out(edition):
        raise EditionFrozenError(edition.date, edition.status.value, f"{_label(article)} has gone out in it already")


def _label(article: Article) -> str:
    return f"#{article.id} “{article.title[:60]}”"


def hide(store: Store, clock: Clock, ref: str) -> Outcome:
    """Keep a story out of every edition not yet started (a retraction, a legal problem)."""
    with store.session() as session:
        article = db.find_article(session, ref)
        _refuse_if_gone_out(article)
        was_lead = article.pinned_for
        changed = db.set_article_hidden(session, article.id, True, clock.now())
        what = "hidden: it goes in no edition" if changed else "already hidden"
        if changed and was_lead is not None:
            what += f" (it no longer leads the edition of {was_lead}: pin it again after `articles unhide`)"
        return Outcome(article.id, article.title, f"{_label(article)} {what}")


def unhide(store: Store, clock: Clock, ref: str) -> Outcome:
    """Let a hidden story back in: the next edition takes it if it is not too old."""
    with store.session() as session:
        article = db.find_article(session, ref)
        changed = db.set_article_hidden(session, article.id, False, clock.now())
        what = "shown again: the next edition takes it if it is recent enough" if changed else "was not hidden"
        return Outcome(article.id, article.title, f"{_label(article)} {what}")


def _check_pin_day(config: Config, clock: Clock, day: date, first: date) -> None:
    """A pin is for an edition still to go out: from ``first`` (the next one) to two months on."""
    if day < first:
        raise UsageError(
            f"cannot pin for {day}: that edition's send time has passed and it is not going out unattended; "
            f"pin for {first} or later (or send it by hand: `newsletter send --date {day}`)"
        )
    if day - first > PIN_HORIZON:
        raise UsageError(
            f"cannot pin for {day}: choose an edition within {PIN_HORIZON.days} days of the next one ({first})"
        )


def pin(ctx: Context, ref: str, day: date | None = None) -> Outcome:
    """Make a story the lead of the edition for ``day`` (default: the next edition readers get).

    A story pinned for a date waits for that date's edition; any other story pinned there
    is unpinned. A hidden story is shown again, since pinning it says it should go out.
    """
    from newsletter.preparation import next_edition_day, resolve_day

    config, store, clock = ctx.config, ctx.store, ctx.clock
    first = next_edition_day(ctx)
    day = day or first
    _check_pin_day(config, clock, day, min(first, resolve_day(config, clock, None)))
    n = config.newsletter
    with store.session() as session:
        article = db.find_article(session, ref)
        _refuse_if_gone_out(article)
        target = edition_for(session, day)
        if has_gone_out(target):
            raise EditionFrozenError(day, target.status.value, "it cannot take a new lead")
        if article.published_at > cutoff(day, n.send_time, n.zone):
            raise UsageError(
                f"{_label(article)} is published after the send time of the edition of {day}; pin it for a later date"
            )
        was_hidden = article.hidden
        before = db.article_pinned_for(session, day)
        db.pin_article(session, article.id, day, clock.now())
        notes = [f"#{before.id} no longer leads it"] if before is not None and before.id != article.id else []
        if was_hidden:
            notes.append("it was hidden: it is shown again")
        said = f" ({'; '.join(notes)})" if notes else ""
        return Outcome(article.id, article.title, f"{_label(article)} leads the edition of {day}{said}")


def unpin(store: Store, clock: Clock, ref: str) -> Outcome:
    with store.session() as session:
        article = db.find_article(session, ref)
        was = article.pinned_for
        changed = db.unpin_article(session, article.id, clock.now())
        what = f"no longer leads the edition of {was}" if changed else "was not pinned"
        return Outcome(article.id, article.title, f"{_label(article)} {what}")


def set_priority(store: Store, clock: Clock, ref: str, priority: int) -> Outcome:
    """Order a story inside its section: higher first (0 is the default)."""
    return edit(store, clock, ref, {"priority": priority})


_SINGLE_LINE = ("title", "section", "image_alt")
TEXT_LIMIT = 2000  # standfirst and caption: a paragraph, not an article


def edit(store: Store, clock: Clock, ref: str, changes: dict[str, Any]) -> Outcome:
    """Correct a story's text or picture; the feed's next fetch leaves the edited fields alone.

    Values are checked as an import's are (lengths, whole http(s) image URLs); text is
    cleaned of control characters. A story that has gone out keeps its sent copy.
    """
    unknown = set(changes) - set(db.EDITABLE)
    if unknown:
        raise UsageError(f"cannot edit {', '.join(sorted(unknown))}; editable: {', '.join(db.EDITABLE)}")
    cleaned = {
        name: squash(value) if isinstance(value, str) and name in _SINGLE_LINE else value
        for name, value in changes.items()
    }
    for name in ("standfirst", "image_caption"):
        if isinstance(cleaned.get(name), str):
            cleaned[name] = squash(cleaned[name])
    with store.session() as session:
        article = db.find_article(session, ref)
        _validate(article, cleaned)
        changed = db.edit_article(session, article.id, cleaned, clock.now())
        if not changed:
            return Outcome(article.id, article.title, f"{_label(article)}: nothing to change")
        note = ""
        if has_gone_out(article.edition):
            note = f"; the edition of {article.edition.date} has gone out already and keeps its copy"
        return Outcome(article.id, article.title, f"{_label(article)}: changed {', '.join(changed)}{note}")


def _validate(article: Article, changes: dict[str, Any]) -> None:
    """Run the import checks over the article as it would be after the change."""
    for name in ("standfirst", "image_caption"):
        if len(changes.get(name) or "") > TEXT_LIMIT:
            raise ValidationError(name.replace("_", " "), f"longer than {TEXT_LIMIT} characters", reason="too-long")
    current = ArticleInput(
        guid=article.guid,
        url=article.url,
        title=article.title or "untitled",
        published_at=article.published_at,
        image_url=article.image_url,
    )
    try:
        replace(current, **changes)
    except TypeError as exc:  # a value of the wrong type: a bug in the caller, said plainly
        raise UsageError(f"cannot edit {_label(article)}: {exc}") from None
    except InvalidArticleError as exc:  # said of the guid; the editor named the article by its id
        raise UsageError(f"cannot edit {_label(article)}: {exc.reason}") from None


def describe_state(article: Article, next_window_start: datetime | None) -> str:
    """The short state `articles list` prints: where a story stands in the editions."""
    if has_gone_out(article.edition):
        return f"in {article.edition.date.isoformat()}"
    if article.hidden:  # even if a made edition still lists it: that edition drops it when sent
        return "hidden"
    if article.edition is not None:
        return f"in {article.edition.date.isoformat()} (not sent)"
    if article.pinned_for is not None:
        return f"lead {article.pinned_for.isoformat()}"
    if next_window_start is not None and article.published_at <= next_window_start:
        return "too old"
    return "waiting"
