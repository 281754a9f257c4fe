"""The database edge: engine set-up, migrations and the named queries the rest of the code uses.

Everything that knows SQL lives under ``newsletter.store``; callers get plain model objects
or small dataclasses back. The ``Store`` is built from the configured URL by an interface
(CLI, web app, scheduler) and handed down; there is no module-level engine.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeGuard

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, insert, or_, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import ConflictError, StoreError
from newsletter.store.articles import assign_articles
from newsletter.store.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
)

MIGRATIONS = Path(__file__).with_name("migrations")


def worker_identity() -> str:
    """Who is doing the work, as stored in claims and locks: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling is switched off so BEGIN IMMEDIATE below takes
    # the write lock up front: two writers then queue on busy_timeout instead of failing
    # half-way with "database is locked".
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    # FULL: a commit survives power loss, so "sent" really means sent. Costs ~0.1 ms here.
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A read-only transaction (Store.reading) takes no lock: under WAL, a long report then
    # never holds up the commits of a send running beside it.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read_only") else "BEGIN IMMEDIATE")


class Store:
    """One database: its engine, sessions and schema version."""

    def __init__(self, url: str, *, application_name: str = "newsletter") -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        try:
            if self.is_sqlite:
                self._ensure_sqlite_dir(url)
                # Each sending connection holds a database connection for the whole run.
                self.engine: Engine = create_engine(url, connect_args={"timeout": 30}, pool_size=5, max_overflow=70)
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self.engine, "begin", _sqlite_begin)
            else:
                self.engine = create_engine(
                    url,
                    pool_pre_ping=True,
                    pool_size=5,
                    max_overflow=70,
                    connect_args={"application_name": application_name[:63], "connect_timeout": 10},
                )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot use database {self.safe_url}: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - only for display
            return "<unparseable database URL>"

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        """A missing folder is a typo far more often than a wish: say so instead of creating it."""
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not url.startswith("sqlite:///:memory:"):
            folder = Path(path).parent
            if not folder.is_dir():
                raise StoreError(f"cannot use database {url}: the folder {folder} does not exist")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self._transaction(commit=True) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reading only, always rolled back: on SQLite it takes no write lock, so
        reports and charts over a large list never stall a send's commits."""
        with self._transaction(commit=False) as session:
            session.connection(execution_options={"read_only": True})
            yield session

    @contextmanager
    def rehearsal(self) -> Iterator[Session]:
        """A session that is always rolled back: a dry run makes the very changes a real run
        would, sees their outcome, and keeps none of them."""
        with self._transaction(commit=False) as session:
            yield session

    @contextmanager
    def _transaction(self, *, commit: bool) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            if commit:
                session.commit()
            else:
                session.expunge_all()  # what was read stays readable after the block, as after a commit
                session.rollback()
        except OperationalError as exc:
            session.rollback()
            raise StoreError(f"database error on {self.safe_url}: {exc.orig}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()

    # --- schema ---------------------------------------------------------------------

    def _alembic(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def upgrade(self) -> str:
        """Bring the schema to the newest migrations; safe to run every time."""
        cfg = self._alembic()
        try:
            with self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "heads")
        except OperationalError as exc:
            raise StoreError(f"cannot migrate {self.safe_url}: {exc.orig}") from exc
        return self.head_revision()

    def head_revision(self) -> str:
        return ",".join(sorted(ScriptDirectory.from_config(self._alembic()).get_heads()))

    def current_revision(self) -> str | None:
        try:
            with self.engine.connect() as connection:
                heads = MigrationContext.configure(connection).get_current_heads()
        except OperationalError as exc:
            raise StoreError(f"cannot open database {self.safe_url}: {exc.orig}") from exc
        return ",".join(sorted(heads)) if heads else None

    def check_schema(self) -> None:
        """Fail early with the fix spelled out, rather than deep inside a send."""
        current = self.current_revision()
        if current != self.head_revision():
            state = "is empty" if current is None else f"is at schema {current}"
            raise StoreError(f"database {self.safe_url} {state}; run `newsletter db upgrade` first")


# --- articles ---------------------------------------------------------------------------


def article_by_guid(session: Session, guid: str) -> Article | None:
    return session.scalars(select(Article).where(Article.guid == guid)).first()


# --- subscribers ------------------------------------------------------------------------


def subscriber_by_email(session: Session, email: str) -> Subscriber | None:
    return session.scalars(select(Subscriber).where(Subscriber.email == email.lower())).first()


def list_subscribers(
    session: Session,
    *,
    status: SubscriberStatus | None = None,
    search: str = "",
    after_id: int = 0,
    limit: int | None = 100,
) -> Sequence[Subscriber]:
    """A page of subscribers in id order; keyset paging keeps big lists cheap."""
    query = select(Subscriber).where(Subscriber.id > after_id).order_by(Subscriber.id)
    if status is not None:
        query = query.where(Subscriber.status == status)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(or_(Subscriber.email.like(pattern), func.lower(Subscriber.name).like(pattern)))
    if limit is not None:
        query = query.limit(limit)
    return session.scalars(query).all()


def add_active_subscribers(
    engine: Engine,
    people: Iterable[tuple[str, str] | tuple[str, str, str]],
    source: str,
    now: datetime,
    *,
    chunk: int = 10_000,
) -> int:
    """Insert (email, name) or (email, name, time zone) tuples as active readers, ``chunk`` rows per transaction.

    For seeding (the demo, the benchmarks): addresses must be new and already normal, and
    zones already checked; the list is streamed, so it never sits in memory or in one
    transaction.
    """
    added = 0
    rows: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as conn:
            conn.execute(insert(Subscriber), rows)

    for email, name, *zone in people:
        rows.append(
            {
                "email": email,
                "name": name,
                "timezone": zone[0] if zone else "",
                "status": SubscriberStatus.ACTIVE,
                "source": source,
                "created_at": now,
                "updated_at": now,
                "confirmed_at": now,
            }
        )
        if len(rows) == chunk:
            flush()
            added += len(rows)
            rows = []
    if rows:
        flush()
        added += len(rows)
    return added


def count_subscribers(session: Session) -> dict[SubscriberStatus, int]:
    rows = session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()
    counts = dict.fromkeys(SubscriberStatus, 0)
    counts.update({status: n for status, n in rows})
    return counts


# --- editions ---------------------------------------------------------------------------


def edition_for(session: Session, day: date) -> Edition | None:
    return session.scalars(select(Edition).where(Edition.date == day)).first()


def previous_edition(session: Session, day: date) -> Edition | None:
    """The latest edition dated before ``day`` that has gone out (or started to): its cutoff
    is where the next window may start. A skipped day sent nothing, so it does not count:
    a story from before it is not "too old" while no edition has gone out since."""
    query = (
        select(Edition)
        .where(Edition.date < day, Edition.status.in_([EditionStatus.SENDING, EditionStatus.SENT]))
        .order_by(Edition.date.desc())
        .limit(1)
    )
    return session.scalars(query).first()


OPEN_EDITION_STATUSES = (EditionStatus.READY, EditionStatus.SKIPPED)
"""An edition in these states has sent nothing yet: its stories are chosen again when it is sent."""


def has_gone_out(edition: Edition | None) -> TypeGuard[Edition]:
    """Whether an edition has started going out, so that its stories are fixed."""
    return edition is not None and edition.status not in OPEN_EDITION_STATUSES


def save_open_edition(
    session: Session, day: date, values: dict[str, Any], article_ids: Sequence[int], existing: Edition | None
) -> Edition:
    """Make the edition for ``day``, or remake one still open, holding exactly these articles.

    In the caller's transaction. The remake is conditional on the edition still being open,
    and the articles are taken only if still free, so a race with another process raises
    ``ConflictError`` and the caller's transaction rolls back whole.
    """
    if existing is None:
        edition = Edition(date=day, **values)
        session.add(edition)
        session.flush()
    else:
        changed = session.execute(
            update(Edition)
            .where(Edition.id == existing.id, Edition.status.in_(OPEN_EDITION_STATUSES), Edition.enqueued_at.is_(None))
            .values(**values)
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            raise ConflictError(f"the edition of {day} started going out while it was being remade")
        edition = session.get(Edition, existing.id, populate_existing=True)  # type: ignore[assignment]
    if assign_articles(session, edition.id, article_ids) != len(article_ids):
        raise ConflictError(f"another edition took one of the articles of the edition of {day} meanwhile")
    return edition


def list_editions(session: Session, limit: int = 10) -> Sequence[Edition]:
    return session.scalars(select(Edition).order_by(Edition.date.desc()).limit(limit)).all()


def unfinished_editions(session: Session) -> Sequence[Edition]:
    """Editions a crash or a deferral left half-sent, oldest first."""
    query = select(Edition).where(Edition.status == EditionStatus.SENDING).order_by(Edition.date)
    return session.scalars(query).all()


def edition_progress(session: Session, edition_id: int) -> tuple[int, int, datetime | None]:
    """(open now: pending or claimed, deferred, the soonest deferred retry) of an edition being sent."""
    rows = session.execute(
        select(Delivery.status, func.count(), func.min(Delivery.next_attempt_at))
        .where(
            Delivery.edition_id == edition_id,
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEFERRED]),
        )
        .group_by(Delivery.status)
    ).all()
    counts = {DeliveryStatus(status): (n, soonest) for status, n, soonest in rows}
    deferred, next_retry = counts.get(DeliveryStatus.DEFERRED, (0, None))
    open_now = sum(counts.get(s, (0, None))[0] for s in (DeliveryStatus.PENDING, DeliveryStatus.SENDING))
    return open_now, deferred, next_retry
