"""The web's rate-limit counts in the store: one row in ``web_attempts`` per attempt, counted per hour.

The rows live in the database, not in a process, so a limit holds across a WSGI server's
workers and across restarts. On PostgreSQL each (kind, client) pair is counted under a
transaction-scoped advisory lock, so a burst of parallel requests from one client queue
behind each other instead of all counting the same rows and all passing; on SQLite the
write transaction already takes the whole database.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from newsletter.store.models import WebAttempt


def _lock_key(kind: str, client: str) -> int:
    """A signed 64-bit key for ``pg_advisory_xact_lock``, the same for every process."""
    return int.from_bytes(hashlib.sha256(f"{kind}:{client}".encode()).digest()[:8], "big", signed=True)


def recent_attempts(session: Session, kind: str, client: str, since: datetime) -> int:
    """How many attempts of ``kind`` ``client`` made from ``since`` on; older rows of every client go.

    On PostgreSQL this first takes the pair's advisory lock, held until the caller's
    transaction ends, so the count and the caller's ``record_attempt`` after it are one
    step: a second request from the same client waits here and counts the first one.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(kind, client)})
    session.execute(delete(WebAttempt).where(WebAttempt.at < since))
    recent = session.scalar(
        select(func.count())
        .select_from(WebAttempt)
        .where(WebAttempt.kind == kind, WebAttempt.client == client, WebAttempt.at >= since)
    )
    return recent or 0


def record_attempt(session: Session, kind: str, client: str, at: datetime) -> None:
    """Count one attempt, in the caller's transaction: a login records only its failures."""
    session.add(WebAttempt(kind=kind, client=client, at=at))


__all__ = ["recent_attempts", "record_attempt"]
