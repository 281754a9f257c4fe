"""Each reader's own morning: when an edition is released to the readers of each time zone.

The edition is made once, at the newsroom's cutoff. A reader in another zone gets it at the
first moment, from that cutoff on, when their own clock shows the send time: New York's
06:00 comes five hours after London's, so New Yorkers get the edition of that date five
hours later; Kolkata's 06:00 came before London's, so Kolkata gets it at the next 06:00
there, the morning after. Every reader thus gets one edition a morning, never one before
it is made, and always within about a day of its cutoff.

Pure functions over plain data: the zones come from one ``GROUP BY`` query
(``store.readers.active_zone_counts``), never from a loop over readers, and the clock
is an argument. Wall times that a change of clock skips or repeats are read as
``editions.cutoff`` reads them for the newsroom: the offset in force before the change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.editions import cutoff
from newsletter.timezones import reader_zone

NEWSROOM = ""  # the stored zone of readers who gave none: the newsroom's


@dataclass(frozen=True)
class ZoneRelease:
    """When the readers of one stored zone name get an edition."""

    zone: str  # as stored: "" for the newsroom's
    at: datetime  # UTC
    readers: int
    warning: str | None = None  # the name is no longer in tzdata: the newsroom's zone stands in

    @property
    def label(self) -> str:
        return self.zone or "the newsroom's zone"


def release_time(day: date, send_time: time, newsroom: ZoneInfo, zone: ZoneInfo) -> datetime:
    """The first instant, from the edition's cutoff on, at which ``zone``'s clock shows ``send_time``."""
    made = cutoff(day, send_time, newsroom)
    # The reader's calendar date at the cutoff, and the two after it, hold the answer: their
    # send times are 23 to 25 hours apart, so one of them falls within a day of the cutoff.
    local = made.astimezone(zone).date()
    for offset in (-1, 0, 1, 2):
        at = cutoff(local + timedelta(days=offset), send_time, zone)
        if at >= made:
            return at
    raise AssertionError("a send time within two days of any instant")  # pragma: no cover


def plan(day: date, send_time: time, newsroom: ZoneInfo, zone_counts: Mapping[str, int]) -> list[ZoneRelease]:
    """Every zone's release of the edition of ``day``, soonest first (then by name)."""
    releases = []
    for name, readers in zone_counts.items():
        zone, warning = (newsroom, None) if name == NEWSROOM else reader_zone(name, newsroom)
        releases.append(ZoneRelease(name, release_time(day, send_time, newsroom, zone), readers, warning))
    return sorted(releases, key=lambda r: (r.at, r.zone))


def due(releases: Iterable[ZoneRelease], after: datetime | None, now: datetime) -> list[ZoneRelease]:
    """The releases whose time has come since ``after`` (None: from the start), at ``now``.

    The newsroom's own readers are always due once the edition starts: an edition sent by
    hand before its send time goes to them then, as it always has.
    """
    return [
        r
        for r in releases
        if (r.at <= now and (after is None or r.at > after)) or (after is None and r.zone == NEWSROOM)
    ]


def still_to_come(releases: Iterable[ZoneRelease], released_until: datetime | None) -> list[ZoneRelease]:
    """The releases not made yet: after ``released_until`` (None: none made)."""
    return [r for r in releases if released_until is None or r.at > released_until]
