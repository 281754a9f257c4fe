"""A reader's own time zone: the one place zone names are checked, and read back.

Every way a zone comes in (the sign-up form, a CSV column, ``subscribers edit``, the
admin) goes through ``check_zone``, so what is stored is always "" (no zone of their
own: the newsroom's) or a name this system's tz database knows, spelled as it spells it.
Names are matched without regard to case ("europe/london" is stored "Europe/London"),
and legacy names that the database still carries as links ("US/Eastern",
"Asia/Calcutta", which some browsers report) are accepted as they are: which zone a link
points to is the database's business, so no mapping is invented here.

Reading a name back (``reader_zone``) never fails: tz releases do remove names now and
then, and a reader whose zone went missing still gets the edition, at the newsroom's hour,
with a warning for whoever sends it.

Pure functions: no database, no request.
"""

from __future__ import annotations

import functools
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from newsletter.errors import ValidationError

MAX_ZONE = 64
"""The column's width; the longest IANA name today has 32 characters."""

NO_ZONE = "none"
"""Typed instead of a zone (any case) to mean "no zone of their own", as "" does."""

# The letters of a zone name: one or more parts of [A-Za-z0-9_+-] joined by "/". Nothing
# that could be a path: no "..", no leading "/", no backslash, no space.
_SHAPE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")

# Files in the zone directory that are not a place's zone: the machine's own setting, the
# rules template, and tzdata's placeholder for "not set yet".
_NOT_PLACES = frozenset({"localtime", "posixrules", "factory"})
_NOT_PLACE_DIRS = ("posix/", "right/")

# The areas of the zones that name a place (what the sign-up form suggests).
_AREAS = frozenset(
    {"Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific"}
)

EXAMPLE = "an IANA name such as Europe/London or America/New_York"


def _is_place(name: str) -> bool:
    lowered = name.lower()
    return lowered not in _NOT_PLACES and not lowered.startswith(_NOT_PLACE_DIRS)


@functools.cache
def _known() -> dict[str, str]:
    """Every usable zone name, keyed by its lower-case form; read from disk once per process."""
    return {name.lower(): name for name in sorted(available_timezones()) if _is_place(name)}


@functools.cache
def zone_names() -> tuple[str, ...]:
    """The zones a form suggests: every place's zone by area (Europe/London...), and UTC, sorted."""
    places = sorted(n for n in _known().values() if "/" in n and n.split("/", 1)[0] in _AREAS)
    return (*places, "UTC")


def _shown(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def check_zone(text: str, field: str) -> str:
    """The zone to store for ``text``: "" for none (also "none"), else the database's spelling of the name.

    Surrounding spaces are dropped (a form field's); anything else odd is refused, never
    repaired: a line break, a control character, bytes that were not UTF-8, more than
    ``MAX_ZONE`` characters, a path, or a name the tz database does not have. The value is
    echoed in the message only once it is known to hold no control character.

    :param field: where the value came from, for the message ("--timezone", "line 4, column timezone").
    :raises ValidationError: with ``field`` and a ``reason`` of "encoding", "control",
        "too-long", "malformed", "not-a-place" or "unknown".
    """
    if any("\ud800" <= c <= "\udfff" for c in text):  # what undecodable bytes become
        raise ValidationError(field, "holds bytes that are not UTF-8 text", reason="encoding")
    if not text.isprintable():
        raise ValidationError(
            field, "holds a line break or control character: a time zone name has none", reason="control"
        )
    name = text.strip(" ")
    if not name or name.lower() == NO_ZONE:
        return ""
    if len(name) > MAX_ZONE:
        raise ValidationError(
            field, f"'{_shown(name, 20)}' is too long for a time zone name ({EXAMPLE})", reason="too-long"
        )
    if _SHAPE.fullmatch(name) is None:
        raise ValidationError(field, f"'{_shown(name)}' is not a time zone name ({EXAMPLE})", reason="malformed")
    if not _is_place(name):
        raise ValidationError(field, f"'{name}' is not the time zone of a place ({EXAMPLE})", reason="not-a-place")
    found = _known().get(name.lower())
    if found is None:
        raise ValidationError(field, f"'{name}' is not a time zone we know ({EXAMPLE})", reason="unknown")
    return found


def reader_zone(name: str, default: ZoneInfo) -> tuple[ZoneInfo, str | None]:
    """The zone a reader's edition goes out by, and a one-line warning when it is not theirs.

    "" is the newsroom's zone (``default``), without a warning. A stored name that this
    system's tz database no longer has (a tz release removed it, or the data on this
    machine is older than where it was stored) falls back to ``default`` with a warning
    saying so, instead of failing the send.
    """
    if not name:
        return default, None
    if len(name) <= MAX_ZONE and _SHAPE.fullmatch(name) is not None and _is_place(name):
        try:
            return ZoneInfo(name), None
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    shown = ascii(_shown(name))  # a stored value, printed in a log: escaped whatever it holds
    return default, f"time zone {shown} is not in this system's tz database: using the newsroom's ({default.key})"
