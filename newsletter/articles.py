"""Getting articles into the store: RSS and Atom feeds, JSON Lines exports and hand-typed ones.

Every source goes the same way: read it (``sources.py``: a file or HTTP, within
``[fetch]``'s time and size limits), parse it into candidates (``feeds.py`` with feedparser,
or ``jsonlines.py``), clean each item for email (``items.py`` and ``cleaning.py``), and
upsert by a stable guid in one transaction per source, here. A bad item is rejected with
a reason and the rest go in; a source that cannot be read at all raises
``ArticleImportError`` naming it, and nothing of it is written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from newsletter.clock import Clock
from newsletter.config import FeedConfig
from newsletter.context import Context
from newsletter.errors import ArticleImportError, NewsletterError
from newsletter.feeds import parse_feed
from newsletter.items import (
    STORED_FIELDS,
    ArticleInput,
    Candidate,
)
from newsletter.jsonlines import looks_like_json_lines, parse_json_lines
from newsletter.sources import Fetched, fetch_url, is_url, read_file
from newsletter.store.articles import article_by_guid
from newsletter.store.models import Article, FeedState

log = logging.getLogger(__name__)


def upsert_article(session: Session, data: ArticleInput, clock: Clock) -> str:
    """Insert or update by guid; returns "new", "updated" or "unchanged"."""
    now = clock.now()
    existing = article_by_guid(session, data.guid)
    if existing is None:
        session.add(
            Article(guid=data.guid, **{f: getattr(data, f) for f in STORED_FIELDS}, created_at=now, updated_at=now)
        )
        session.flush()
        return "new"
    changed = False
    edited = set(existing.edited_fields.split(","))  # an editor's hand changes win over the source
    for name in STORED_FIELDS:
        if name in edited:
            continue
        value = getattr(data, name)
        if getattr(existing, name) != value:
            setattr(existing, name, value)
            changed = True
    if changed:
        existing.updated_at = now
        return "updated"
    return "unchanged"


@dataclass
class ImportSummary:
    """What one source gave: counts by outcome, why items were rejected, and what looked odd."""

    source: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_modified: bool = False  # the server answered 304: nothing was re-imported
    error: str = ""  # the source could not be read at all (set by fetch_feeds, which carries on)

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    @property
    def ok(self) -> bool:
        return not self.error

    def describe(self) -> str:
        """One line for a terminal, a log or a cron mail."""
        if self.error:
            return self.error
        if self.not_modified:
            return f"{self.source}: unchanged since the last fetch (304 Not Modified); nothing to import"
        counts = f"{self.new} new, {self.updated} updated, {self.unchanged} unchanged, {self.rejected} rejected"
        return f"{self.source}: {counts}"


# --- storing --------------------------------------------------------------------------------


def priority_for(categories: Iterable[str], feed: FeedConfig) -> int:
    """The highest priority the feed's table gives any of the item's categories, else the feed's own."""
    table = dict(feed.priorities)
    found = [table[c.casefold()] for c in categories if c.casefold() in table]
    return max(found) if found else feed.priority


def _store_candidates(
    session: Session, candidates: Iterable[Candidate], clock: Clock, summary: ImportSummary, feed: FeedConfig
) -> None:
    """Upsert each good candidate under a savepoint, so one the database refuses is only rejected."""
    now = clock.now()
    seen: dict[str, str] = {}
    for candidate in candidates:
        where = candidate.where
        if candidate.error:
            summary.rejections.append(f"{where}: {candidate.error}")
            continue
        guid = candidate.fields["guid"]
        if guid in seen:
            summary.rejections.append(f"{where}: same guid as {seen[guid]}; ignored")
            continue
        seen[guid] = where
        published = candidate.published_at
        if published is None:
            # Keep the first import's time, or a dateless item would look updated on every fetch.
            existing = article_by_guid(session, guid)
            published = existing.published_at if existing is not None else now
        try:
            priority = (
                candidate.priority if candidate.priority is not None else priority_for(candidate.categories, feed)
            )
            data = ArticleInput(published_at=published, priority=priority, **candidate.fields)
            with session.begin_nested():
                outcome = upsert_article(session, data, clock)
        except NewsletterError as exc:
            summary.rejections.append(f"{where}: {exc}")
            continue
        except (IntegrityError, DataError) as exc:
            summary.rejections.append(f"{where}: the database refused it ({str(exc.orig).strip().splitlines()[0]})")
            continue
        except StatementError as exc:
            if isinstance(exc, DBAPIError):
                raise  # the connection or the server failed: no fault of this item's
            # A value the driver could not even send (it failed before reaching the database).
            detail = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0][:200]
            summary.rejections.append(f"{where}: the database cannot store it ({detail})")
            continue
        setattr(summary, outcome, getattr(summary, outcome) + 1)
        if outcome == "new":
            summary.warnings.extend(candidate.notes)
            if published > now:
                when = published.isoformat(timespec="minutes")
                summary.warnings.append(f"{where}: dated {when}, in the future; it waits for the edition after that")


def _record_state(session: Session, url: str, now: datetime, status: str, fetched: Fetched | None) -> None:
    state = session.get(FeedState, url)
    if state is None:
        state = FeedState(url=url)
        session.add(state)
    state.fetched_at = now
    state.status = status[:500]
    if fetched is not None:
        state.etag = fetched.etag[:500]
        state.last_modified = fetched.last_modified[:100]


def import_source(
    ctx: Context,
    source: str,
    *,
    section: str = "",
    conditional: bool = False,
    feed: FeedConfig | None = None,
) -> ImportSummary:
    """Import one feed URL, feed file or JSON Lines file, in one transaction.

    :param section: put every article in this section, instead of each item's own category.
    :param feed: the ``[[feeds]]`` entry (or a hand import's options) whose priority and
        category -> priority table set each new item's priority.
    :param conditional: send the ETag / Last-Modified remembered from the last fetch of this
        URL, so an unchanged feed costs one 304 (``fetch_feeds`` does; a hand import re-reads).
    :raises ArticleImportError: the source cannot be read or is neither a feed nor JSON Lines.
    """
    config, store, clock = ctx.config, ctx.store, ctx.clock
    summary = ImportSummary(source)
    try:
        if is_url(source):
            state = None
            if conditional:
                with store.session() as session:
                    state = session.get(FeedState, source)
            etag, modified = (state.etag, state.last_modified) if state else ("", "")
            fetched = fetch_url(source, config.fetch, etag, modified)
        else:
            fetched = read_file(source, config.fetch)
        if fetched.not_modified:
            summary.not_modified = True
            with store.session() as session:
                _record_state(session, source, clock.now(), summary.describe(), None)
            return summary
        zone = config.newsletter.zone
        if not fetched.data.strip():
            candidates: list[Candidate] = []
            summary.warnings.append(f"{source}: empty; nothing to import")
        elif looks_like_json_lines(fetched.data, source):
            candidates, summary.warnings = parse_json_lines(fetched.data, source, zone, section)
        else:
            candidates, summary.warnings = parse_feed(fetched.data, source, fetched.base_url, zone, section)
    except ArticleImportError as exc:
        if is_url(source):
            with store.session() as session:
                _record_state(session, source, clock.now(), str(exc), None)
        raise
    with store.session() as session:
        _store_candidates(session, candidates, clock, summary, feed or FeedConfig(url=source))
        if is_url(source):
            _record_state(session, source, clock.now(), summary.describe(), fetched)
    log.info("%s", summary.describe())
    return summary


def fetch_feeds(ctx: Context) -> list[ImportSummary]:
    """Import every ``[[feeds]]`` entry with conditional requests; one failing never stops the rest.

    Returns one summary per feed, in order; a feed that could not be imported has ``error``
    set. Reporting them is the caller's job (the CLI prints them, the scheduler logs them).
    """
    summaries = []
    for feed in ctx.config.feeds:
        try:
            summary = import_source(ctx, feed.url, section=feed.section, conditional=True, feed=feed)
        except NewsletterError as exc:
            log.info("%s", exc)  # the caller reports the summaries; a warning here would say it twice
            summary = ImportSummary(feed.url, error=str(exc))
        except Exception as exc:  # a parser bug on one feed's content must not stop the others
            log.exception("importing %s failed unexpectedly", feed.url)
            summary = ImportSummary(feed.url, error=f"{feed.url}: unexpected error ({exc!r}); see the log")
        summaries.append(summary)
    return summaries


def iter_details(summary: ImportSummary) -> Iterator[str]:
    """The rejections and warnings of a summary, one line each, for printing under it."""
    yield from (f"  rejected: {reason}" for reason in summary.rejections)
    yield from (f"  warning: {warning}" for warning in summary.warnings)
