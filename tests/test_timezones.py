"""Zone names as readers, files and staff give them: what is stored, what is refused and why."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from newsletter import timezones
from newsletter.errors import UsageError, ValidationError
from newsletter.timezones import MAX_ZONE, check_zone, reader_zone, zone_names

LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Europe/London", "Europe/London"),
        ("europe/LONDON", "Europe/London"),  # the database's spelling, whatever the case typed
        ("  Asia/Kolkata  ", "Asia/Kolkata"),  # a form field's spaces
        ("Asia/Kathmandu", "Asia/Kathmandu"),
        ("Pacific/Chatham", "Pacific/Chatham"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        ("America/Port-au-Prince", "America/Port-au-Prince"),
        ("UTC", "UTC"),
        ("Etc/GMT+5", "Etc/GMT+5"),  # POSIX sign: five hours behind UTC, a valid IANA name
        ("US/Eastern", "US/Eastern"),  # a legacy link: kept as given, not mapped by us
        ("asia/calcutta", "Asia/Calcutta"),  # what some browsers still report
        ("", ""),
        ("none", ""),
        ("None", ""),
    ],
)
def test_valid_names_are_stored_in_the_databases_spelling(given, stored):
    assert check_zone(given, "--timezone") == stored


@pytest.mark.parametrize(
    ("given", "reason", "shown"),
    [
        ("Mars/Olympus_Mons", "unknown", "'Mars/Olympus_Mons' is not a time zone we know"),
        ("Europe/Londn", "unknown", "'Europe/Londn' is not a time zone we know"),
        ("../../etc/passwd", "malformed", "is not a time zone name"),
        ("/etc/localtime", "malformed", "is not a time zone name"),
        ("Europe\\London", "malformed", "is not a time zone name"),
        ("Europe/ London", "malformed", "is not a time zone name"),
        ("Europe//London", "malformed", "is not a time zone name"),
        ("Europe/Zürich", "malformed", "is not a time zone name"),
        ("localtime", "not-a-place", "not the time zone of a place"),
        ("posixrules", "not-a-place", "not the time zone of a place"),
        ("Factory", "not-a-place", "not the time zone of a place"),
        ("posix/Europe/London", "not-a-place", "not the time zone of a place"),
        ("Europe/London\n", "control", "line break or control character"),
        ("Europe/London\r\nBcc: x@example.org", "control", "line break or control character"),
        ("Europe/\x1b]0;owned\x07London", "control", "line break or control character"),
        ("Europe/Lon\x00don", "control", "line break or control character"),
        ("\tEurope/London", "control", "line break or control character"),
        ("Europe/Lond\udcc3n", "encoding", "not UTF-8"),  # undecodable bytes on a command line
        ("x" * 10_000, "too-long", "too long for a time zone name"),
        ("A/" + "b" * MAX_ZONE, "too-long", "too long for a time zone name"),
    ],
)
def test_bad_names_are_one_line_naming_the_field(given, reason, shown):
    with pytest.raises(ValidationError) as caught:
        check_zone(given, "line 7, column timezone")
    error = caught.value
    assert isinstance(error, UsageError) and error.exit_code == 2
    assert error.field == "line 7, column timezone" and error.reason == reason
    message = str(error)
    assert message.startswith("line 7, column timezone: ") and shown in message
    assert "\n" not in message and "\x1b" not in message and "\x00" not in message
    assert len(message) < 200  # a 10,000-character value is not echoed whole


def test_the_suggested_zones_are_places_sorted_with_utc_last():
    names = zone_names()
    assert len(names) > 400 and names[-1] == "UTC"
    assert list(names[:-1]) == sorted(names[:-1])
    assert {"Europe/London", "Asia/Kathmandu", "Pacific/Chatham"} <= set(names)
    assert not {"localtime", "posixrules", "Factory", "US/Eastern", "EST"} & set(names)
    assert all(check_zone(name, "x") == name for name in names)


def test_a_reader_without_a_zone_gets_the_newsrooms_quietly():
    assert reader_zone("", LONDON) == (LONDON, None)


def test_a_readers_zone_is_theirs():
    zone, warning = reader_zone("Pacific/Chatham", LONDON)
    assert zone == ZoneInfo("Pacific/Chatham") and warning is None


@pytest.mark.parametrize("stored", ["Mars/Olympus_Mons", "../../etc/passwd", "localtime", "Europe/\x1bLondon"])
def test_a_name_the_database_lacks_falls_back_with_one_warning(stored):
    zone, warning = reader_zone(stored, LONDON)
    assert zone is LONDON
    assert warning is not None and "using the newsroom's (Europe/London)" in warning
    assert "\n" not in warning and "\x1b" not in warning


def test_a_zone_removed_from_tzdata_since_it_was_stored_falls_back(monkeypatch):
    """A later tz release drops a name: the reader still gets the edition, at the newsroom's hour."""

    def removed(name: str) -> ZoneInfo:
        raise ZoneInfoNotFoundError(f"No time zone found with key {name}")

    monkeypatch.setattr(timezones, "ZoneInfo", removed)
    zone, warning = reader_zone("America/Nuuk", LONDON)
    assert zone is LONDON and warning is not None and "'America/Nuuk'" in warning
