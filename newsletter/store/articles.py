"""Articles in the store: which ones an edition may take, and each editorial change as one function.

The rule that no story is lost and none goes out twice lives in three queries here: an
edition's candidates are the unhidden articles in no edition yet (or already in this one,
while it is still open) published by its cutoff; assigning takes only rows still free, and
says how many it took, so two processes can never put one article in two editions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from newsletter.errors import ArticleNotFoundError
from newsletter.store.models import Article

MAX_ARTICLE_ID = 2**31 - 1  # the id column's range on PostgreSQL

# What an editor may change by hand; a feed's next fetch leaves these alone once changed.
EDITABLE = ("title", "standfirst", "section", "image_url", "image_alt", "image_caption", "priority")


def _open_to(edition_id: int | None) -> Any:
    free = Article.edition_id.is_(None)
    return free if edition_id is None else or_(free, Article.edition_id == edition_id)


def edition_candidates(
    session: Session, day: date, start: datetime, end: datetime, *, edition_id: int | None = None
) -> Sequence[Article]:
    """The articles the edition for ``day`` takes if it is made now, newest first.

    Unhidden, in no other edition, published by ``end``: after ``start``, or at any time
    when an editor pinned it for this date. A story pinned for a later date waits for that
    edition. ``edition_id`` is the edition being remade, whose own articles are candidates again.
    """
    unpinned_or_due = or_(Article.pinned_for.is_(None), Article.pinned_for <= day)
    window = or_(and_(Article.published_at > start, unpinned_or_due), Article.pinned_for == day)
    query = (
        select(Article)
        .where(_open_to(edition_id), Article.hidden.is_(False), Article.published_at <= end, window)
        .order_by(Article.published_at.desc(), Article.id.desc())
    )
    return session.scalars(query).all()


def too_old_articles(session: Session, day: date, start: datetime, arrived_after: datetime | None) -> Sequence[Article]:
    """Unhidden articles in no edition that are too old for the edition of ``day``.

    Only those that came in after ``arrived_after`` (the previous edition was made), so an
    archive imported once is reported to the next edition, not to every one after it.
    """
    query = select(Article).where(
        Article.edition_id.is_(None),
        Article.hidden.is_(False),
        Article.published_at <= start,
        or_(Article.pinned_for.is_(None), Article.pinned_for < day),
    )
    if arrived_after is not None:
        query = query.where(Article.created_at >= arrived_after)
    return session.scalars(query.order_by(Article.published_at.desc(), Article.id.desc())).all()


def assign_articles(session: Session, edition_id: int, article_ids: Collection[int]) -> int:
    """Put these articles in the edition, releasing any others it held; returns how many it took.

    A count short of ``len(article_ids)`` means another edition took one meanwhile: the
    caller rolls back rather than print a story that belongs elsewhere.
    """
    ids = list(article_ids)
    release = update(Article).where(Article.edition_id == edition_id)
    if ids:
        release = release.where(Article.id.not_in(ids))
    session.execute(release.values(edition_id=None))
    if not ids:
        return 0
    taken = session.execute(
        update(Article).where(Article.id.in_(ids), _open_to(edition_id)).values(edition_id=edition_id)
    )
    return int(taken.rowcount)  # type: ignore[attr-defined]


def free_article_count(session: Session, start: datetime, end: datetime) -> int:
    """Unhidden articles in no edition published in (start, end]: the ones waiting for a later edition."""
    query = select(func.count()).where(
        Article.edition_id.is_(None),
        Article.hidden.is_(False),
        Article.published_at > start,
        Article.published_at <= end,
    )
    return int(session.scalar(query) or 0)


# --- naming an article --------------------------------------------------------------------


def find_article(session: Session, ref: str) -> Article:
    """The article whose id is ``ref``, else the one whose URL (or guid) it is.

    :raises ArticleNotFoundError: none matches, or a URL is shared by several articles.
    """
    ref = ref.strip()
    if ref.isascii() and ref.isdecimal() and len(ref) <= 10:
        found = session.get(Article, int(ref)) if int(ref) <= MAX_ARTICLE_ID else None
        if found is not None:
            return found
        raise ArticleNotFoundError(ref)
    if not ref or not ref.isprintable() or len(ref) > 2048:
        raise ArticleNotFoundError(ref[:80] + ("…" if len(ref) > 80 else ""))
    rows = session.scalars(
        select(Article).where(or_(Article.url == ref, Article.guid == ref)).order_by(Article.id).limit(10)
    ).all()
    if len(rows) == 1:
        return rows[0]
    by_guid = [a for a in rows if a.guid == ref]
    if len(by_guid) == 1:
        return by_guid[0]
    raise ArticleNotFoundError(ref, tuple(a.id for a in rows))


def article_by_guid(session: Session, guid: str) -> Article | None:
    return session.scalars(select(Article).where(Article.guid == guid)).first()


def list_articles(
    session: Session, *, since: datetime | None = None, limit: int = 50, hidden_only: bool = False
) -> Sequence[Article]:
    query = select(Article).order_by(Article.published_at.desc(), Article.id.desc()).limit(limit)
    if since is not None:
        query = query.where(Article.published_at >= since)
    if hidden_only:
        query = query.where(Article.hidden.is_(True))
    return session.scalars(query).all()


def edition_articles(session: Session, edition_id: int) -> Sequence[Article]:
    """The articles an edition holds, newest first."""
    query = select(Article).where(Article.edition_id == edition_id)
    return session.scalars(query.order_by(Article.published_at.desc(), Article.id.desc())).all()


def article_pinned_for(session: Session, day: date) -> Article | None:
    return session.scalars(select(Article).where(Article.pinned_for == day).order_by(Article.id)).first()


# --- editorial changes: one function each ---------------------------------------------------


def set_article_hidden(session: Session, article_id: int, hidden: bool, now: datetime) -> bool:
    """Hide or show a story; a hidden story loses any pin. Returns whether anything changed."""
    values: dict[str, Any] = {"hidden": hidden, "updated_at": now}
    if hidden:
        values["pinned_for"] = None
    result = session.execute(
        update(Article).where(Article.id == article_id, Article.hidden.is_(not hidden)).values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def pin_article(session: Session, article_id: int, day: date, now: datetime) -> None:
    """Make the story the lead of the edition for ``day``; any story pinned there before is unpinned."""
    session.execute(
        update(Article)
        .where(Article.pinned_for == day, Article.id != article_id)
        .values(pinned_for=None, updated_at=now)
    )
    session.execute(
        update(Article).where(Article.id == article_id).values(pinned_for=day, hidden=False, updated_at=now)
    )


def unpin_article(session: Session, article_id: int, now: datetime) -> bool:
    result = session.execute(
        update(Article)
        .where(Article.id == article_id, Article.pinned_for.is_not(None))
        .values(pinned_for=None, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def edit_article(session: Session, article_id: int, changes: Mapping[str, Any], now: datetime) -> list[str]:
    """Change fields an editor may change, and remember them as edited; returns those that changed."""
    article = session.get(Article, article_id)
    if article is None:
        raise ArticleNotFoundError(str(article_id))
    changed = [name for name in EDITABLE if name in changes and getattr(article, name) != changes[name]]
    if not changed:
        return []
    edited = set(filter(None, article.edited_fields.split(",")))
    session.execute(
        update(Article)
        .where(Article.id == article_id)
        .values(
            **{name: changes[name] for name in changed},
            edited_fields=",".join(sorted(edited | set(changed))),
            updated_at=now,
        )
    )
    return changed
