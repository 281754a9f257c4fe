"""The delivery log: one row per (edition, subscriber), moved through its states in batches.

These are Core statements, not ORM sessions: the send loop runs them thousands of times,
and each must touch only a bounded number of rows through an index. Lists are never
loaded whole: enqueuing walks subscribers by id range, claiming takes the next few pending
rows in id order, and PostgreSQL's ``FOR UPDATE SKIP LOCKED`` lets several workers claim
side by side without waiting on each other.
"""

from __future__ import annotations

import typing
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Result,
    Subscriber,
    SubscriberEvent,
    SubscriberStatus,
    UTCDateTime,
    Work,
)

ENQUEUE_CHUNK = 5_000
OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEFERRED)
# Declarative types __table__ as any FromClause (a class may map a join or a select);
# these classes map plain tables.
_D = typing.cast(Table, Delivery.__table__)
_S = typing.cast(Table, Subscriber.__table__)
_E = typing.cast(Table, Edition.__table__)
_EVENTS = typing.cast(Table, SubscriberEvent.__table__)
# Status tests written as SQL literals, not parameters: SQLite uses a partial index only
# when the query's WHERE visibly implies the index's.
_IS_PENDING = _D.c.status == literal_column("'pending'")
# The unsettled index's own condition, repeated: SQLite does not infer it from "= 'sending'",
# and without it each lookup of an edition's rows in flight walked all of its deliveries.
_UNSETTLED = _D.c.status.in_([literal_column("'sending'"), literal_column("'deferred'")])
_IS_SENDING = and_(_UNSETTLED, _D.c.status == literal_column("'sending'"))
_IS_DEFERRED = and_(_UNSETTLED, _D.c.status == literal_column("'deferred'"))
# The unsent index's condition (failed or skipped), written as it is there for the same reason.
_UNSENT = _D.c.status.in_([literal_column("'failed'"), literal_column("'skipped'")])


def enqueue(
    engine: Engine, edition_id: int, *, zones: Collection[str] | None = None, chunk: int = ENQUEUE_CHUNK
) -> int:
    """Create the pending rows for every active subscriber (in ``zones``, when given), one
    bounded transaction per id range.

    Idempotent (existing rows are left alone), so a crash half-way is finished by running
    it again, and a reader who moved to a zone released later is not sent a second copy;
    no transaction holds more than ``chunk`` rows, whatever the list's size.
    """
    created = 0
    last_id = 0
    columns = ["edition_id", "subscriber_id", "status", "attempts", "last_error", "message_id", "claimed_by"]
    if zones is not None and not zones:
        return 0
    while True:
        with engine.begin() as conn:
            active = [_S.c.status == SubscriberStatus.ACTIVE.value, _S.c.id > last_id]
            if zones is not None:
                active.append(_S.c.timezone.in_(sorted(zones)))
            upper = conn.execute(select(_S.c.id).where(*active).order_by(_S.c.id).offset(chunk - 1).limit(1)).scalar()
            if upper is not None:
                active.append(_S.c.id <= upper)
            source = select(
                literal(edition_id),
                _S.c.id,
                literal(DeliveryStatus.PENDING.value),
                literal(0),
                literal(""),
                literal(""),
                literal(""),
            ).where(*active)
            insert = postgresql.insert(_D) if conn.dialect.name == "postgresql" else sqlite.insert(_D)
            statement = insert.from_select(columns, source).on_conflict_do_nothing(
                index_elements=["edition_id", "subscriber_id"]
            )
            created += conn.execute(statement).rowcount or 0
        if upper is None:
            return created
        last_id = upper


def mark_sending(conn: Connection, edition_id: int, at: datetime) -> None:
    """The edition's delivery log exists: it is sending from ``at`` (enqueued and started)."""
    conn.execute(
        update(_E)
        .where(_E.c.id == edition_id)
        .values(enqueued_at=at, started_at=at, status=EditionStatus.SENDING.value)
    )


def mark_sent(conn: Connection, edition_id: int, at: datetime) -> bool:
    """A sending edition with nothing open and no zone to come is sent; True if it was this call.

    Only from ``sending``: a second sender finishing the same edition changes nothing.
    """
    result = conn.execute(
        update(_E)
        .where(_E.c.id == edition_id, _E.c.status == EditionStatus.SENDING.value)
        .values(status=EditionStatus.SENT.value, finished_at=at)
    )
    return bool(result.rowcount)


def mark_released(conn: Connection, edition_id: int, until: datetime) -> None:
    """Record that every zone whose morning came by ``until`` has its deliveries."""
    conn.execute(update(_E).where(_E.c.id == edition_id).values(released_until=until))


def recover(conn: Connection, edition_id: int, now: datetime, *, deferred_due: bool = True) -> int:
    """Return to pending the rows whose lease ran out (a dead worker's) and deferrals now due."""
    expired = conn.execute(
        update(_D)
        .where(
            _D.c.edition_id == edition_id,
            _IS_SENDING,
            _D.c.claimed_until < now,
        )
        .values(status=DeliveryStatus.PENDING.value, claimed_by="", claimed_until=None)
    ).rowcount
    due = 0
    if deferred_due:
        due = conn.execute(
            update(_D)
            .where(
                _D.c.edition_id == edition_id,
                _IS_DEFERRED,
                _D.c.next_attempt_at <= now,
            )
            .values(status=DeliveryStatus.PENDING.value, next_attempt_at=None)
        ).rowcount
    return (expired or 0) + (due or 0)


def release_dead_claims(conn: Connection, edition_id: int, dead_holders: Iterable[str]) -> int:
    """Reclaim at once the rows of workers known to be dead, instead of waiting out their lease."""
    holders = list(dead_holders)
    if not holders:
        return 0
    return (
        conn.execute(
            update(_D)
            .where(
                _D.c.edition_id == edition_id,
                _IS_SENDING,
                _D.c.claimed_by.in_(holders),
            )
            .values(status=DeliveryStatus.PENDING.value, claimed_by="", claimed_until=None)
        ).rowcount
        or 0
    )


def claim_holders(conn: Connection, edition_id: int) -> list[str]:
    """Distinct workers holding in-flight claims on an edition."""
    query = select(_D.c.claimed_by).where(_D.c.edition_id == edition_id, _IS_SENDING).distinct()
    return [row for row in conn.execute(query).scalars() if row]


def claim(conn: Connection, edition_id: int, worker: str, limit: int, lease_until: datetime) -> tuple[list[Work], int]:
    """Mark the next ``limit`` pending rows as in flight for ``worker``.

    Returns the work to send and how many claimed rows were skipped because their
    subscriber is no longer active (they are recorded as skipped right here).
    """
    pick = select(_D.c.id).where(_D.c.edition_id == edition_id, _IS_PENDING).order_by(_D.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    claimed = (
        conn.execute(
            update(_D)
            .where(_D.c.id.in_(pick.scalar_subquery()))
            .values(status=DeliveryStatus.SENDING.value, claimed_by=worker, claimed_until=lease_until)
            .returning(_D.c.id)
        )
        .scalars()
        .all()
    )
    if not claimed:
        return [], 0
    rows = conn.execute(
        select(_D.c.id, _D.c.subscriber_id, _D.c.attempts, _S.c.email, _S.c.name, _S.c.status)
        .join(_S, _S.c.id == _D.c.subscriber_id)
        .where(_D.c.id.in_(claimed))
        .order_by(_D.c.id)
    ).all()
    work = [
        Work(delivery_id=r.id, subscriber_id=r.subscriber_id, email=r.email, name=r.name, attempts=r.attempts)
        for r in rows
        if r.status == SubscriberStatus.ACTIVE.value
    ]
    gone = [r.id for r in rows if r.status != SubscriberStatus.ACTIVE.value]
    if gone:
        conn.execute(
            update(_D)
            .where(_D.c.id.in_(gone))
            .values(status=DeliveryStatus.SKIPPED.value, claimed_by="", claimed_until=None)
        )
    return work, len(gone)


# Built once: the recorder runs these for every few messages, and constructing a statement
# costs more than executing it.
_RECORD_SENT = (
    update(_D)
    .where(_D.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=DeliveryStatus.SENT.value,
        attempts=_D.c.attempts + bindparam("tries", type_=Integer),
        message_id=bindparam("prefix", type_=String) + cast(_D.c.id, String) + bindparam("suffix", type_=String),
        sent_at=bindparam("now", type_=UTCDateTime),
        last_error="",
        claimed_by="",
        claimed_until=None,
    )
)
# Fenced: only a row still in flight for this worker. A worker whose lease ran out (a
# stall, a paused machine) must not write "pending" or "failed" over what the worker that
# took the row over has recorded since. "Sent" is written regardless: it is the truth.
_RECORD_OTHER = (
    update(_D)
    .where(_D.c.id == bindparam("b_id"), _IS_SENDING, _D.c.claimed_by == bindparam("b_worker"))
    .values(
        status=bindparam("b_status"),
        attempts=_D.c.attempts + bindparam("b_attempts", type_=Integer),
        last_error=bindparam("b_error"),
        next_attempt_at=bindparam("b_retry"),
        claimed_by="",
        claimed_until=None,
    )
)


def record(
    conn: Connection,
    results: Sequence[Result],
    now: datetime,
    retry_at: datetime | None,
    message_id: tuple[str, str] = ("<", ">"),
    *,
    worker: str,
) -> None:
    """Write a batch of outcomes in a few set-based statements.

    Sent rows (nearly all of them) become one UPDATE per distinct attempt count; their
    Message-ID is ``prefix || id || suffix``, derived in SQL rather than bound per row.
    """
    sent_by_attempts: dict[int, list[int]] = {}
    for r in results:
        if r.status == DeliveryStatus.SENT:
            sent_by_attempts.setdefault(r.attempts, []).append(r.delivery_id)
    prefix, suffix = message_id
    for tries, ids in sent_by_attempts.items():
        conn.execute(_RECORD_SENT, {"ids": ids, "tries": tries, "prefix": prefix, "suffix": suffix, "now": now})
    others = [r for r in results if r.status != DeliveryStatus.SENT]
    if others:
        conn.execute(
            _RECORD_OTHER,
            [
                {
                    "b_id": r.delivery_id,
                    "b_status": r.status.value,
                    "b_attempts": r.attempts,
                    "b_error": r.error[:1000],
                    "b_retry": retry_at if r.status == DeliveryStatus.DEFERRED else None,
                    "b_worker": worker,
                }
                for r in others
            ],
        )
    bounced = sorted({r.subscriber_id for r in results if r.bounced})
    if bounced:
        changed = (
            conn.execute(
                update(_S)
                .where(_S.c.id.in_(bounced), _S.c.status == SubscriberStatus.ACTIVE.value)
                .values(status=SubscriberStatus.BOUNCED.value, updated_at=now)
                .returning(_S.c.id)
            )
            .scalars()
            .all()
        )
        if changed:  # the same history every other status change leaves, for stats and the admin
            conn.execute(
                insert(_EVENTS),
                [{"subscriber_id": sid, "event": "bounced", "source": "delivery", "at": now} for sid in changed],
            )


def extend_leases(conn: Connection, edition_id: int, worker: str, lease_until: datetime) -> set[int]:
    """Renew this worker's claims; returns the ids it still holds (a lapsed lease may be gone)."""
    return set(
        conn.execute(
            update(_D)
            .where(
                _D.c.edition_id == edition_id,
                _IS_SENDING,
                _D.c.claimed_by == worker,
            )
            .values(claimed_until=lease_until)
            .returning(_D.c.id)
        ).scalars()
    )


def release(conn: Connection, worker: str, delivery_ids: Iterable[int] | None = None) -> int:
    """Hand unsent claims back (a stopping worker): they go to the next run, not to nobody."""
    where = [_IS_SENDING, _D.c.claimed_by == worker]
    if delivery_ids is not None:
        ids = list(delivery_ids)
        if not ids:
            return 0
        where.append(_D.c.id.in_(ids))
    result = conn.execute(
        update(_D).where(and_(*where)).values(status=DeliveryStatus.PENDING.value, claimed_by="", claimed_until=None)
    )
    return result.rowcount or 0


def settle_for_removal(conn: Connection, subscriber_id: int) -> int:
    """Skip a reader's open deliveries and forget the servers' replies about them, before removal.

    Their rows stay, so past editions keep their counts; but a claim joins subscribers, so a
    row left pending, deferred or in flight without its subscriber would never be sent nor
    skipped, and its edition would wait for it for ever. A reply may quote the address
    ("550 <ana@example.org>: no such user"), so it goes too. Returns how many were skipped.
    A worker already sending one of them still records "sent" afterwards: that is the truth.
    """
    skipped = conn.execute(
        update(_D)
        .where(_D.c.subscriber_id == subscriber_id, _D.c.status.in_([s.value for s in OPEN_STATUSES]))
        .values(status=DeliveryStatus.SKIPPED.value, claimed_by="", claimed_until=None, next_attempt_at=None)
    ).rowcount
    conn.execute(update(_D).where(_D.c.subscriber_id == subscriber_id, _D.c.last_error != "").values(last_error=""))
    return skipped or 0


def status_counts(conn: Connection, edition_id: int) -> dict[DeliveryStatus, int]:
    """How many of the edition's deliveries are in each state, read from indexes alone.

    Counted as the total (the unique index) and the rows of each partial index (pending;
    in flight or deferred; failed or skipped), with sent as what is left: a GROUP BY over
    the edition read every row from the table, which each zone's release, ``status`` and
    the admin's list of editions paid for the whole list.
    """
    of_edition = _D.c.edition_id == edition_id
    total = select(literal_column("'total'", String), func.count()).where(of_edition)
    pending = select(literal_column("'pending'", String), func.count()).where(of_edition, _IS_PENDING)
    unsettled = select(_D.c.status, func.count()).where(of_edition, _UNSETTLED).group_by(_D.c.status)
    unsent = select(_D.c.status, func.count()).where(of_edition, _UNSENT).group_by(_D.c.status)
    found = {str(kind): int(n) for kind, n in conn.execute(union_all(total, pending, unsettled, unsent))}
    counts = dict.fromkeys(DeliveryStatus, 0)
    counts.update({DeliveryStatus(kind): n for kind, n in found.items() if kind != "total"})
    counts[DeliveryStatus.SENT] = found.get("total", 0) - sum(counts.values())
    return counts


def run_start(conn: Connection, edition_id: int) -> tuple[int, bool]:
    """(open deliveries, whether any was sent already) for a run about to start.

    Read through the partial indexes and one EXISTS, not a count of every row: an edition
    going out zone by zone starts a run per zone, over a log that grows to the whole list.
    """
    pending = select(func.count()).where(_D.c.edition_id == edition_id, _IS_PENDING).scalar_subquery()
    unsettled = select(func.count()).where(_D.c.edition_id == edition_id, _UNSETTLED).scalar_subquery()
    sent = select(_D.c.id).where(_D.c.edition_id == edition_id, _D.c.status == literal_column("'sent'")).exists()
    row = conn.execute(select(pending, unsettled, sent)).one()
    return int(row[0]) + int(row[1]), bool(row[2])


def store_counts(conn: Connection, edition_id: int, counts: dict[DeliveryStatus, int]) -> None:
    """Copy the live counts onto the edition row, where status pages read them cheaply."""
    conn.execute(
        update(_E)
        .where(_E.c.id == edition_id)
        .values(
            recipient_count=sum(counts.values()),
            sent_count=counts[DeliveryStatus.SENT],
            failed_count=counts[DeliveryStatus.FAILED],
            deferred_count=counts[DeliveryStatus.DEFERRED],
            skipped_count=counts[DeliveryStatus.SKIPPED],
        )
    )


def recent_errors(conn: Connection, edition_id: int, limit: int = 5) -> list[tuple[str, str, str]]:
    """The latest failures and deferrals: (email, status, error)."""
    query = (
        select(_S.c.email, _D.c.status, _D.c.last_error)
        .join(_S, _S.c.id == _D.c.subscriber_id)
        .where(
            _D.c.edition_id == edition_id,
            _D.c.status.in_([DeliveryStatus.FAILED.value, DeliveryStatus.DEFERRED.value]),
        )
        .order_by(_D.c.id.desc())
        .limit(limit)
    )
    return [(r.email, r.status, r.last_error) for r in conn.execute(query)]


def retry_deferred_now(conn: Connection, edition_id: int) -> int:
    """Make an edition's deferred deliveries due again at once (a run asked to retry them)."""
    result = conn.execute(
        update(_D)
        .where(_D.c.edition_id == edition_id, _IS_DEFERRED)
        .values(status=DeliveryStatus.PENDING.value, next_attempt_at=None)
    )
    return int(result.rowcount)


GAVE_UP = "gave up: "  # the prefix of a deferral's error once it is given up on


def give_up_deferred(conn: Connection, edition_id: int) -> tuple[int, str]:
    """Turn an edition's deferred deliveries into failures; returns how many and one of their errors.

    For when retrying has gone on long enough (``[delivery] give_up_hours``): the error
    keeps the server's last reply, prefixed so `status` can count them apart.
    """
    example = conn.scalar(
        select(_D.c.last_error).where(_D.c.edition_id == edition_id, _IS_DEFERRED).order_by(_D.c.id.desc()).limit(1)
    )
    result = conn.execute(
        update(_D)
        .where(_D.c.edition_id == edition_id, _IS_DEFERRED)
        .values(status=DeliveryStatus.FAILED.value, last_error=func.substr(GAVE_UP + _D.c.last_error, 1, 1000))
    )
    return int(result.rowcount), example or ""


def given_up_count(conn: Connection, edition_id: int) -> int:
    """How many of an edition's failures were deferrals given up on, rather than refusals."""
    query = select(func.count()).where(
        _D.c.edition_id == edition_id,
        _D.c.status == DeliveryStatus.FAILED.value,
        _D.c.last_error.startswith(GAVE_UP, autoescape=True),
    )
    return int(conn.scalar(query) or 0)


class FastSentLog:
    """The hottest write of a send, "these were accepted", in raw SQL on the driver's connection.

    It runs once every message or two, so the few hundred microseconds SQLAlchemy spends
    building and compiling a statement would cost a third of the sending rate. Everything
    else goes through Core; this covers one statement and its transaction.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._sqlite = connection.dialect.name == "sqlite"
        self._to_db = UTCDateTime().bind_processor(connection.dialect) or (lambda v: v)

    def _statement(self, count: int) -> str:
        return (
            "UPDATE deliveries SET status = 'sent', attempts = attempts + %s, "
            "message_id = %s || CAST(id AS VARCHAR) || %s, sent_at = %s, last_error = '', claimed_by = '', "
            "claimed_until = NULL WHERE id = ANY(%s)"
        )

    def commit(self, by_attempts: dict[int, list[int]], now: datetime, message_id: tuple[str, str]) -> None:
        """Mark the ids sent in one transaction, committed (durably) before returning."""
        prefix, suffix = message_id
        stamp = self._to_db(now)
        # Asked for each time: after a lost connection SQLAlchemy hands out a new one.
        raw = self._connection.connection.dbapi_connection
        assert raw is not None
        if self._sqlite:
            # One call into SQLite for the whole transaction: each call releases and retakes
            # the GIL, and with several sending threads retaking it is what costs. All values
            # are ours (ints, a timestamp, the Message-ID affixes), quoted as SQL literals.
            updates = "".join(
                f"UPDATE deliveries SET status = 'sent', attempts = attempts + {int(tries)}, "
                f"message_id = {_sql_text(prefix)} || CAST(id AS TEXT) || {_sql_text(suffix)}, "
                f"sent_at = {_sql_text(str(stamp))}, last_error = '', claimed_by = '', claimed_until = NULL "
                f"WHERE id IN ({','.join(str(int(i)) for i in ids)});"
                for tries, ids in by_attempts.items()
            )
            try:
                raw.executescript(f"BEGIN IMMEDIATE;{updates}COMMIT;")
            except BaseException:
                raw.rollback()
                raise
            return
        cursor = raw.cursor()
        try:
            for tries, ids in by_attempts.items():
                cursor.execute(self._statement(len(ids)), (tries, prefix, suffix, stamp, ids))
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            cursor.close()


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
