"""Editions held by preflight in the store: hold one, read the hold, tell the staff once, lift it.

A hold is about one version of an edition (its ``fingerprint``): holding the same version
again changes nothing, so a scheduler ticking every few minutes neither forgets the hold
nor asks for a second notice; a changed version that still fails replaces the row and is
a new hold, with a notice of its own. Telling the staff is claimed with a conditional
``UPDATE`` (``notified_at`` from NULL to now), so when the daemon and a cron run hold the
same edition at once, one of them mails. Every statement is portable between SQLite and
PostgreSQL; the insert that starts a hold uses each dialect's ``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter.store.models import Edition, PreflightHold

MAX_NOTICE_ERROR = 500  # the column's width

_H = PreflightHold


@dataclass(frozen=True)
class HeldFinding:
    """One finding as the hold keeps it: enough to tell the staff and show it in the admin."""

    severity: str
    check: str
    message: str


@dataclass(frozen=True)
class Hold:
    """An edition the scheduler holds, as the store has it."""

    edition_id: int
    day: date
    fingerprint: str
    findings: tuple[HeldFinding, ...]
    held_at: datetime
    notified_at: datetime | None
    notice_error: str

    @property
    def errors(self) -> tuple[HeldFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[HeldFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")


def _encode(findings: Sequence[HeldFinding]) -> str:
    return json.dumps([[f.severity, f.check, f.message] for f in findings], ensure_ascii=False)


def _decode(text: str) -> tuple[HeldFinding, ...]:
    try:
        rows = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(HeldFinding(str(r[0]), str(r[1]), str(r[2])) for r in rows if isinstance(r, list) and len(r) == 3)


def hold_edition(
    session: Session, edition_id: int, fingerprint: str, findings: Sequence[HeldFinding], now: datetime
) -> bool:
    """Hold this version of the edition; True when it is a new hold (the staff are to be told).

    The same version held again keeps its row as it is (when it was held, whether the staff
    were told); a different version replaces it, with the notice still to give.
    """
    values = {
        "edition_id": edition_id,
        "fingerprint": fingerprint,
        "findings": _encode(findings),
        "held_at": now,
        "notified_at": None,
        "notice_error": "",
    }
    insert = postgresql.insert(_H) if session.get_bind().dialect.name == "postgresql" else sqlite.insert(_H)
    # RETURNING says whether the row went in (psycopg reports no row count for this INSERT).
    added = session.execute(
        insert.values(**values).on_conflict_do_nothing(index_elements=[_H.edition_id]).returning(_H.edition_id)
    ).first()
    if added is not None:
        return True
    changed = session.execute(
        update(_H).where(_H.edition_id == edition_id, _H.fingerprint != fingerprint).values(**values)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


def hold_of(session: Session, edition_id: int) -> Hold | None:
    """The edition's hold, if the scheduler holds it (whatever has happened to it since)."""
    row = session.execute(
        select(_H, Edition.date).join(Edition, Edition.id == _H.edition_id).where(_H.edition_id == edition_id)
    ).first()
    if row is None:
        return None
    hold, day = row
    return Hold(
        hold.edition_id,
        day,
        hold.fingerprint,
        _decode(hold.findings),
        hold.held_at,
        hold.notified_at,
        hold.notice_error,
    )


def claim_hold_notice(session: Session, edition_id: int, fingerprint: str, now: datetime) -> bool:
    """Take on telling the staff about this hold; False when another process has, or it was done.

    A process that dies between the claim and the mail leaves the notice given: the log
    line of the hold says the same, and mailing twice is what this is here to prevent.
    """
    claimed = session.execute(
        update(_H)
        .where(_H.edition_id == edition_id, _H.fingerprint == fingerprint, _H.notified_at.is_(None))
        .values(notified_at=now, notice_error="")
    )
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


def release_hold_notice(session: Session, edition_id: int, fingerprint: str, error: str) -> None:
    """The notice could not be mailed: put it back, with why, for the next pass to try again."""
    session.execute(
        update(_H)
        .where(_H.edition_id == edition_id, _H.fingerprint == fingerprint)
        .values(notified_at=None, notice_error=error[:MAX_NOTICE_ERROR])
    )


def lift_hold(session: Session, edition_id: int) -> bool:
    """The edition passed preflight: nothing holds it any more. True when there was a hold."""
    lifted = session.execute(delete(_H).where(_H.edition_id == edition_id))
    return bool(lifted.rowcount)  # type: ignore[attr-defined]


__all__ = ["HeldFinding", "Hold", "claim_hold_notice", "hold_edition", "hold_of", "lift_hold", "release_hold_notice"]
