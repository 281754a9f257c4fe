"""The outbox of sign-up mails in the store: queue, claim under a lease, and record each outcome.

A row is claimed before it is sent and the claim is a lease (``claimed_by`` /
``claimed_until``), so two processes never send the same mail, and one that dies mid-send
blocks it only until the lease ends. On PostgreSQL the claim picks its row with
``FOR UPDATE SKIP LOCKED``, so concurrent claimers pass each other instead of queueing;
on SQLite the write lock taken when the transaction begins serialises claims. Either
way the ``UPDATE`` takes the row only if its claim is still free. Every outcome is recorded only by the claim's holder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from newsletter.store.models import OutboxKind, OutboxMessage, OutboxStatus, Subscriber, SubscriberStatus

MAX_ERROR = 1000  # the column's width

_O = OutboxMessage


@dataclass(frozen=True)
class ClaimedMail:
    """A queued mail claimed for sending, with its reader's status as it is now."""

    id: int
    subscriber_id: int
    recipient: str
    kind: OutboxKind
    attempts: int
    last_error: str
    queued_at: datetime
    subscriber_status: SubscriberStatus


def enqueue_mail(session: Session, subscriber_id: int, recipient: str, kind: OutboxKind, now: datetime) -> int:
    """Queue a sign-up mail in the caller's transaction; returns the outbox row's id.

    A mail of the same kind to the same reader that is still waiting is brought forward
    and reused rather than doubled: someone pressing "subscribe" three times while the
    mail server is down gets one message when it is back, not three.
    """
    waiting = session.scalars(
        select(_O)
        .where(_O.subscriber_id == subscriber_id, _O.kind == kind, _O.status == OutboxStatus.PENDING)
        .order_by(_O.id)
        .limit(1)
        .with_for_update()
    ).first()
    if waiting is not None:
        waiting.recipient = recipient
        waiting.queued_at = now
        waiting.next_attempt_at = min(waiting.next_attempt_at, now)
        session.flush()
        return waiting.id
    row = OutboxMessage(
        subscriber_id=subscriber_id,
        recipient=recipient,
        kind=kind,
        status=OutboxStatus.PENDING,
        attempts=0,
        last_error="",
        queued_at=now,
        next_attempt_at=now,
        claimed_by="",
    )
    session.add(row)
    session.flush()
    return row.id


def claim_due(
    session: Session, worker: str, now: datetime, lease_until: datetime, *, only: int | None = None
) -> ClaimedMail | None:
    """Claim the next due mail (or mail ``only``, if it is due) for ``worker``; None if there is none.

    Due means pending, its next attempt time reached, and no live claim on it.
    """
    free = or_(_O.claimed_until.is_(None), _O.claimed_until < now)
    due = and_(_O.status == OutboxStatus.PENDING, _O.next_attempt_at <= now, free)
    pick = select(_O.id).where(due).order_by(_O.next_attempt_at, _O.id).limit(1)
    if only is not None:
        pick = pick.where(_O.id == only)
    if session.get_bind().dialect.name == "postgresql":
        # Pick and lock first, then update by id: inside ``UPDATE ... WHERE id IN (...)`` the
        # planner may run a SKIP LOCKED subquery again for each row, each run finding the
        # next unlocked row, and so claim several rows with a LIMIT of one.
        pick = pick.with_for_update(skip_locked=True)
    picked = session.scalar(pick)
    if picked is None:
        return None
    claimed = session.execute(
        update(_O)
        .where(_O.id == picked, due)
        .values(claimed_by=worker, claimed_until=lease_until)
        .returning(_O.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    if claimed is None:
        return None
    row = session.execute(
        select(
            _O.id, _O.subscriber_id, _O.recipient, _O.kind, _O.attempts, _O.last_error, _O.queued_at, Subscriber.status
        )
        .join(Subscriber, Subscriber.id == _O.subscriber_id)
        .where(_O.id == claimed)
    ).one()
    return ClaimedMail(
        id=row.id,
        subscriber_id=row.subscriber_id,
        recipient=row.recipient,
        kind=OutboxKind(row.kind),
        attempts=row.attempts,
        last_error=row.last_error,
        queued_at=row.queued_at,
        subscriber_status=SubscriberStatus(row.status),
    )


def _settle(session: Session, mail_id: int, worker: str, **values: object) -> bool:
    """Record an outcome and drop the claim, only if ``worker`` still holds it."""
    done = session.execute(
        update(_O)
        .where(_O.id == mail_id, _O.claimed_by == worker, _O.status == OutboxStatus.PENDING)
        .values(claimed_by="", claimed_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def mark_sent(session: Session, mail_id: int, worker: str, now: datetime) -> bool:
    """The server took it: done for good."""
    return _settle(
        session, mail_id, worker, status=OutboxStatus.SENT, attempts=_O.attempts + 1, finished_at=now, last_error=""
    )


def mark_deferred(session: Session, mail_id: int, worker: str, error: str, next_attempt_at: datetime) -> bool:
    """The attempt failed for now: count it, keep the error, and wait until ``next_attempt_at``."""
    return _settle(
        session,
        mail_id,
        worker,
        attempts=_O.attempts + 1,
        last_error=error[:MAX_ERROR],
        next_attempt_at=next_attempt_at,
    )


def mark_failed(session: Session, mail_id: int, worker: str, error: str, now: datetime, *, attempted: bool) -> bool:
    """Given up: the server refused it for good, or the retry window closed. The error stays."""
    return _settle(
        session,
        mail_id,
        worker,
        status=OutboxStatus.FAILED,
        attempts=_O.attempts + (1 if attempted else 0),
        last_error=error[:MAX_ERROR],
        finished_at=now,
    )


def mark_skipped(session: Session, mail_id: int, worker: str, reason: str, now: datetime) -> bool:
    """Not sent because it no longer applies (the reader confirmed meanwhile, or left)."""
    return _settle(
        session, mail_id, worker, status=OutboxStatus.SKIPPED, last_error=reason[:MAX_ERROR], finished_at=now
    )


def release_claim(session: Session, mail_id: int, worker: str) -> bool:
    """Give a claimed mail back untried (the pass stopped first): no attempt is counted."""
    return _settle(session, mail_id, worker)


# --- reading --------------------------------------------------------------------------------


def waiting_mails(session: Session, limit: int) -> Sequence[OutboxMessage]:
    """The mails still queued, the next due first."""
    query = select(_O).where(_O.status == OutboxStatus.PENDING).order_by(_O.next_attempt_at, _O.id).limit(max(limit, 0))
    return session.scalars(query).all()


def outbox_counts(session: Session) -> dict[OutboxStatus, int]:
    """How many mails the outbox holds per status, every status listed."""
    counts = dict.fromkeys(OutboxStatus, 0)
    for status, n in session.execute(select(_O.status, func.count()).group_by(_O.status)):
        counts[OutboxStatus(status)] = n
    return counts


def count_waiting(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(_O).where(_O.status == OutboxStatus.PENDING)) or 0


def outbox_mail(session: Session, mail_id: int) -> OutboxMessage | None:
    return session.get(OutboxMessage, mail_id)
