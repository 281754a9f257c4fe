"""Named locks in the database, so two processes never send the same edition at once.

PostgreSQL: a session-level advisory lock on a connection held for the whole send; the
server drops it the moment that connection dies, so a crashed process never blocks the
next run. SQLite has no such thing, so a row with a holder and an expiry stands in: the
holder renews it while it works, anyone may take it once it has expired, and a holder on
this same machine whose process is gone is treated as expired at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import cast

from sqlalchemy import Connection, Table, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from newsletter.clock import Clock
from newsletter.errors import LockHeldError
from newsletter.store.database import Store, worker_identity
from newsletter.store.models import Lock

log = logging.getLogger(__name__)

_L = cast(Table, Lock.__table__)  # declarative types __table__ as any FromClause; Lock maps a table


def process_is_gone(holder: str) -> bool:
    """True when ``holder`` ("host:pid") names a process on this machine that no longer runs."""
    host, _, pid_text = holder.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:  # a killed child nobody has reaped yet is a zombie: gone for our purposes
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class DatabaseLock:
    """``with DatabaseLock(store, "edition:2026-11-24", clock):`` raises ``LockHeldError`` if taken."""

    def __init__(self, store: Store, name: str, clock: Clock, *, ttl_seconds: int = 120, holder: str | None = None):
        self.store = store
        self.name = name
        self.clock = clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self.holder = holder or worker_identity()
        self._connection: Connection | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # --- PostgreSQL -----------------------------------------------------------------

    def _acquire_advisory(self) -> None:
        key = _advisory_key(self.name)
        connection = self.store.engine.connect()
        got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        connection.commit()
        if not got:
            connection.close()
            raise LockHeldError(self.name, self._advisory_holder(key))
        self._connection = connection

    def _advisory_holder(self, key: int) -> str:
        query = text(
            "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = :k"
        )
        with self.store.engine.connect() as connection:
            row = connection.execute(query, {"k": key}).first()
        if row is None:
            return "another process (it has just finished or is starting)"
        return f"{row.application_name or 'a database session'} (server pid {row.pid})"

    # --- SQLite ---------------------------------------------------------------------

    def _acquire_row(self) -> None:
        now = self.clock.now()
        with self.store.engine.begin() as conn:
            row = conn.execute(select(_L).where(_L.c.name == self.name)).first()
            if row is None:
                try:
                    conn.execute(
                        insert(_L).values(
                            name=self.name, holder=self.holder, acquired_at=now, expires_at=now + self.ttl
                        )
                    )
                except IntegrityError:
                    raise LockHeldError(self.name, "another process") from None
                return
            if row.holder != self.holder and row.expires_at > now and not process_is_gone(row.holder):
                raise LockHeldError(self.name, f"{row.holder} (until {row.expires_at:%H:%M:%S} UTC unless renewed)")
            conn.execute(
                update(_L)
                .where(_L.c.name == self.name)
                .values(holder=self.holder, acquired_at=now, expires_at=now + self.ttl)
            )

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl.total_seconds() / 3):
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(
                        update(_L)
                        .where(_L.c.name == self.name, _L.c.holder == self.holder)
                        .values(expires_at=self.clock.now() + self.ttl)
                    )
            except Exception:  # noqa: BLE001 - a missed renewal is retried; expiry is the backstop
                continue

    # --- both -----------------------------------------------------------------------

    def acquire(self) -> DatabaseLock:
        if self.store.is_sqlite:
            self._acquire_row()
            self._heartbeat = threading.Thread(target=self._renew_loop, name=f"lock:{self.name}", daemon=True)
            self._heartbeat.start()
        else:
            self._acquire_advisory()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        # Releasing never raises: it runs on the way out of a send, where it must not hide
        # the send's own outcome. A lock whose connection died was freed by the server then;
        # a SQLite lock row left behind expires.
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _advisory_key(self.name)})
                self._connection.commit()
                self._connection.close()
            except SQLAlchemyError as exc:
                # Dead, or alive but refusing (a statement timeout): either way the connection is
                # thrown away rather than pooled, and closing it ends the lock with the session.
                log.warning("lock %s: unlocking failed (%s); closing its connection releases it", self.name, exc)
                with contextlib.suppress(SQLAlchemyError):
                    self._connection.invalidate()
                    self._connection.close()
            finally:
                self._connection = None
        elif self.store.is_sqlite:
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(delete(_L).where(_L.c.name == self.name, _L.c.holder == self.holder))
            except SQLAlchemyError as exc:
                log.warning("lock %s: could not remove it (%s); it expires on its own", self.name, exc)

    def __enter__(self) -> DatabaseLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None):
        self.release()
