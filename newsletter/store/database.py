"""The database edge: engine set-up, sessions and migrations.

Everything that knows SQL lives under ``newsletter.store``; callers get plain model objects
or small dataclasses back, from the named queries of the topical modules beside this one
(``articles``, ``readers``, ``editions``, ``deliveries`` and the rest). The ``Store`` is
built from the configured URL by an interface (CLI, web app, scheduler) and handed down;
there is no module-level engine.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import StoreError

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
