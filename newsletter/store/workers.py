"""The scale-out workers' own tables: each worker's last report, and the send rate they share.

Only ``newsletter worker`` writes here, and it runs on PostgreSQL alone, so the upserts
use PostgreSQL's ``ON CONFLICT``. Each write is its own short transaction on the engine,
apart from any send: a heartbeat or a draw from the bucket never waits on, nor holds up,
a batch of deliveries being committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from newsletter.store.models import Delivery, DeliveryStatus, RateBucket, Worker


def save_worker_report(engine: Engine, worker_id: str, started_at: datetime, values: dict[str, Any]) -> None:
    """Write this worker's row: created on its first report, then ``values`` replaced on each one.

    One upsert, so a worker never has to know whether an earlier run of the same host and
    pid left a row behind.
    """
    statement = pg_insert(Worker).values(id=worker_id, started_at=started_at, **values)
    statement = statement.on_conflict_do_update(index_elements=[Worker.id], set_=values)
    with engine.begin() as conn:
        conn.execute(statement)


def workers_seen_since(session: Session, since: datetime) -> Sequence[Worker]:
    """Workers that reported after ``since``, latest report first; older rows are workers long gone."""
    query = select(Worker).where(Worker.heartbeat_at > since).order_by(Worker.heartbeat_at.desc())
    return session.scalars(query).all()


def draw_tokens(
    engine: Engine,
    name: str,
    now: datetime,
    full: float,
    draw: Callable[[float, datetime], tuple[float, float]],
) -> float:
    """Take tokens from the shared bucket ``name`` (made ``full`` if new); returns how many were taken.

    ``draw(tokens, updated_at)`` is the caller's bucket arithmetic: from what the bucket
    held and when it was last drawn from, (taken, left). It runs while the bucket's row is
    locked ``FOR UPDATE``, so workers drawing at the same moment take turns and never spend
    the same tokens twice.
    """
    with engine.begin() as conn:
        conn.execute(
            pg_insert(RateBucket)
            .values(name=name, tokens=full, updated_at=now)
            .on_conflict_do_nothing(index_elements=[RateBucket.name])
        )
        row = conn.execute(select(RateBucket).where(RateBucket.name == name).with_for_update()).one()
        taken, left = draw(row.tokens, row.updated_at)
        conn.execute(update(RateBucket).where(RateBucket.name == name).values(tokens=left, updated_at=now))
    return taken


def count_sent_since(conn: Connection, edition_id: int, since: datetime) -> int:
    """Deliveries of the edition sent after ``since``, by every worker: the status's rate when no live
    worker reports one."""
    query = (
        select(func.count())
        .select_from(Delivery)
        .where(
            Delivery.edition_id == edition_id,
            Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at > since,
        )
    )
    return conn.execute(query).scalar_one()


__all__ = ["count_sent_since", "draw_tokens", "save_worker_report", "workers_seen_since"]
