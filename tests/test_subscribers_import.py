"""Importing subscriber files as other systems write them: encodings, delimiters, headers, junk."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.errors import UsageError
from newsletter.store import Store
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.subscriber_csv import MAX_FILE_BYTES, MAX_LINE_BYTES, CsvRow, ImportFileError, import_rows, read_csv
from tests.conftest import add_subscribers
from tests.test_subscribers import config_file


def rows(data: bytes) -> list[tuple[int, str, str]]:
    return [(r.line, r.email, r.name) for r in read_csv(data).rows]


def listed(store: Store) -> dict[str, tuple[str, str]]:
    with store.session() as session:
        return {s.email: (s.status.value, s.name) for s in session.scalars(select(Subscriber))}


# --- reading ---------------------------------------------------------------------------------


def test_bom_semicolons_crlf_and_split_names():
    data = "\ufeffE-Mail;First Name;LAST NAME\r\nana@example.org;Ana;García\r\n\r\ntom@example.org;Tom;\r\n".encode()
    parsed = read_csv(data)
    assert (parsed.encoding, parsed.delimiter, parsed.header) == ("utf-8", ";", True)
    assert rows(data) == [(2, "ana@example.org", "Ana García"), (4, "tom@example.org", "Tom")]


def test_name_columns_are_joined_in_the_files_order_never_reordered():
    assert rows(b"Surname,Email,Given name\nLi,li@example.org,Wei\n") == [(2, "li@example.org", "Li Wei")]
    assert rows(b"First name,Last name,Email\nAna,Garcia,ana@example.org\n") == [(2, "ana@example.org", "Ana Garcia")]
    assert rows(b'email,name\nli@example.org,Li Wei\nana@example.org,"Garcia, Ana"\n') == [
        (2, "li@example.org", "Li Wei"),
        (3, "ana@example.org", "Garcia, Ana"),
    ]


def test_excel_unicode_text_is_utf16_with_tabs():
    data = "Name\tEmail\nZoë Ünal\tzoe@example.org\n".encode("utf-16")
    parsed = read_csv(data)
    assert (parsed.encoding, parsed.delimiter) == ("utf-16", "\t")
    assert rows(data) == [(2, "zoe@example.org", "Zoë Ünal")]


def test_latin1_files_fall_back_from_utf8():
    data = "email,name\njose@example.org,José Núñez\n".encode("latin-1")
    assert rows(data) == [(2, "jose@example.org", "José Núñez")]
    assert read_csv(data).encoding in ("cp1252", "latin-1")


def test_no_header_one_column_with_blank_lines():
    data = b"\nana@example.org\n\n   \ntom@example.org\n"
    parsed = read_csv(data)
    assert not parsed.header
    assert rows(data) == [(2, "ana@example.org", ""), (5, "tom@example.org", "")]


def test_thousands_of_blank_lines_before_the_header_are_skipped():
    assert rows(b"\n" * 5000 + b"email\nana@example.org\n") == [(5002, "ana@example.org", "")]


def test_no_header_two_columns_in_either_order():
    assert rows(b"Ana Garcia,ana@example.org\nTom,tom@example.org\n") == [
        (1, "ana@example.org", "Ana Garcia"),
        (2, "tom@example.org", "Tom"),
    ]


def test_quoted_fields_commas_and_line_breaks_keep_line_numbers():
    data = b'email,name\n"ana@example.org","Garc\xc3\xada, Ana"\n"tom@example.org","Tom\nSmith"\nzed@example.org,Zed\n'
    assert rows(data) == [
        (2, "ana@example.org", "García, Ana"),
        (3, "tom@example.org", "Tom\nSmith"),
        (5, "zed@example.org", "Zed"),
    ]


def test_missing_email_cells_are_rejected_with_their_line():
    parsed = read_csv(b"name,email\nAna,ana@example.org\nTom\n,\nZed,\n")
    assert [r.line for r in parsed.rows] == [2]
    assert parsed.rejected == [(3, "no email address on this line"), (5, "no email address on this line")]


def test_spreadsheet_apostrophes_from_our_own_export_are_undone():
    assert rows(b"email,name\nana@example.org,'=Ana\n") == [(2, "ana@example.org", "=Ana")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text"),
        (b"name,phone\nAna,123\n", "no email column"),
    ],
)
def test_unusable_files_are_one_error(data, message):
    with pytest.raises(ImportFileError, match=message):
        read_csv(data)


# --- importing -------------------------------------------------------------------------------


def test_import_validates_dedupes_and_never_resurrects_without_force(store, clock):
    add_subscribers(store, clock, 1, prefix="here")
    add_subscribers(store, clock, 1, SubscriberStatus.PENDING, prefix="waiting")
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    add_subscribers(store, clock, 1, SubscriberStatus.BOUNCED, prefix="dead")
    good = [
        CsvRow(2, "New@Example.org", "New  Reader"),
        CsvRow(3, "new@example.org", "Again"),
        CsvRow(4, "not an address", ""),
        CsvRow(5, "here0@example.org", ""),
        CsvRow(6, "waiting0@example.org", ""),
        CsvRow(7, "gone0@example.org", ""),
        CsvRow(8, "dead0@example.org", ""),
        CsvRow(9, "ana@example.org\r\nBcc: x@example.org", ""),
        CsvRow(10, "tom@example.org", "T" * 201),
    ]
    with store.session() as session:
        dry = import_rows(session, good, clock, dry_run=True)
        session.rollback()
    assert (dry.added, dry.activated, dry.unchanged, dry.reactivated) == (1, 1, 1, 0)
    assert "new@example.org" not in listed(store)
    with store.session() as session:
        report = import_rows(session, good, clock, source="crm")
    assert (report.added, report.activated, report.unchanged, report.reactivated) == (1, 1, 1, 0)
    assert report.duplicates == [(3, "new@example.org is already on line 2")]
    assert [line for line, _ in report.rejected] == [4, 9, 10]
    assert "not a valid email address" in report.rejected[0][1] and "line break" in report.rejected[1][1]
    assert [line for line, _ in report.kept_out] == [7, 8]
    now = listed(store)
    assert now["new@example.org"] == ("active", "New Reader")
    assert now["waiting0@example.org"][0] == "active"
    assert now["gone0@example.org"][0] == "unsubscribed" and now["dead0@example.org"][0] == "bounced"
    with store.session() as session:
        kinds = [(e.event, e.source) for e in session.scalars(select(SubscriberEvent))]
    assert sorted(kinds) == [("confirmed", "crm"), ("confirmed", "crm")]
    with store.session() as session:
        forced = import_rows(session, good, clock, force=True)
    assert forced.reactivated == 2 and listed(store)["gone0@example.org"][0] == "active"


def test_cli_import_of_a_messy_file_is_per_row(runner, tmp_path, db_url, store, clock):
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    messy = tmp_path / "from-the-crm.csv"
    messy.write_bytes(
        "\ufeffEMAIL;Name\r\n"
        "ana@example.org;Ana García\r\n"
        "broken@;Nobody\r\n"
        "\r\n"
        "ANA@example.org;Ana again\r\n"
        "gone0@example.org;Gone\r\n"
        '"tom@example.org";"Smith; Tom"\r\n'.encode()
    )
    cfg = config_file(tmp_path, db_url)
    dry = runner.invoke(cli, ["--config", cfg, "subscribers", "import", str(messy), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would add 2" in dry.output and "nothing changed" in dry.output
    assert set(listed(store)) == {"gone0@example.org"}
    result = runner.invoke(cli, ["--config", cfg, "subscribers", "import", str(messy)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "line 3: rejected: 'broken@' is not a valid email address" in out
    assert "line 5: skipped: ana@example.org is already on line 2" in out
    assert "line 6: skipped: gone0@example.org is unsubscribed; not re-added without --force" in out
    assert "utf-8, delimiter ';', a header row; 5 rows" in out
    assert "added 2," in out and "1 duplicate, 1 rejected: 2 of 5 rows imported" in out
    assert listed(store) == {
        "ana@example.org": ("active", "Ana García"),
        "tom@example.org": ("active", "Smith; Tom"),
        "gone0@example.org": ("unsubscribed", "Reader 0"),
    }
    again = runner.invoke(cli, ["--config", cfg, "subscribers", "import", str(messy), "--force"])
    assert "added 0," in again.output and "re-activated 1" in again.output and "2 already subscribed" in again.output
    assert listed(store)["gone0@example.org"] == ("active", "Gone")


def test_cli_import_of_an_unreadable_file_is_one_error_line(runner, tmp_path, db_url, store):
    cfg = config_file(tmp_path, db_url)
    binary = tmp_path / "photo.csv"
    binary.write_bytes(b"\x00\x01\x02\x03" * 50)
    result = runner.invoke(cli, ["--config", cfg, "subscribers", "import", str(binary)])
    assert result.exit_code == 2 and result.output == f"error: {binary}: this is not a text (CSV) file\n"
    missing = runner.invoke(cli, ["--config", cfg, "subscribers", "import", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "does not exist" in missing.output and "Traceback" not in missing.output


# --- bad lines are rejected one by one ----------------------------------------------------------


def test_a_nul_byte_rejects_only_its_line():
    parsed = read_csv(b"email,name\nana@example.org,Ana\nbad@example.org,B\x00b\ntom@example.org,Tom\n")
    assert [(r.line, r.email) for r in parsed.rows] == [(2, "ana@example.org"), (4, "tom@example.org")]
    assert parsed.rejected == [(3, "contains a NUL byte (is part of this line binary?)")]


def test_a_field_over_the_limit_or_a_line_over_1_mb_rejects_only_that_row():
    big_field = b"x" * 200_000
    big_line = b"y" * (MAX_LINE_BYTES + 10)
    data = (
        b"email,name\nana@example.org,Ana\nbig@example.org," + big_field + b"\n" + big_line + b"\ntom@example.org,T\n"
    )
    parsed = read_csv(data)
    assert [(r.line, r.email) for r in parsed.rows] == [(2, "ana@example.org"), (5, "tom@example.org")]
    assert [line for line, _ in parsed.rejected] == [3, 4]
    assert "field larger than field limit" in parsed.rejected[0][1]
    assert parsed.rejected[1][1] == "longer than 1 MB: not read"


def test_mixed_utf8_and_latin1_lines_keep_the_utf8_names_and_reject_the_others():
    data = (
        "email,name\nzoe@example.org,Zoë Ünal\n".encode()
        + "jose@example.org,José Núñez\n".encode("latin-1")
        + "li@example.org,李伟\n".encode()
    )
    parsed = read_csv(data)
    assert parsed.encoding == "utf-8"
    assert [(r.line, r.name) for r in parsed.rows] == [(2, "Zoë Ünal"), (4, "李伟")]
    assert parsed.rejected == [(3, "not UTF-8, unlike the rest of the file: save the file as UTF-8")]


def test_a_file_wholly_in_windows_1252_is_read_as_such():
    parsed = read_csv("email,name\nzoe@example.org,Zoë – €5\nana@example.org,Ana\n".encode("cp1252"))
    assert parsed.encoding == "cp1252" and parsed.rejected == []
    assert [r.name for r in parsed.rows] == ["Zoë – €5", "Ana"]
    undefined = read_csv(b"email,name\nzoe@example.org,Zo\xeb\nx@example.org,bad \x81\n")
    assert [r.name for r in undefined.rows] == ["Zoë"]
    assert undefined.rejected == [(3, "has bytes that are neither UTF-8 nor Windows-1252 text")]


def test_a_quote_left_open_does_not_swallow_the_readers_after_it():
    parsed = read_csv(
        b'email,name\nana@example.org,"Ana\ntom@example.org,Tom\nzed@example.org,Zed"\nli@example.org,Li\n'
    )
    assert [(r.line, r.email) for r in parsed.rows] == [(5, "li@example.org")]
    assert parsed.rejected == [(2, "a quoted field opened here runs on to line 4: check the quotes")]


def test_control_characters_in_a_name_reject_the_row(store, clock):
    parsed = read_csv(b"email,name\nana@example.org,Ana\x1b]0;owned\x07\ntom@example.org,Tom\tSmith\n")
    with store.session() as session:
        report = import_rows(session, parsed.rows, clock)
    assert report.rejected == [(2, "a subscriber's name cannot contain control characters (found \\x1b)")]
    assert listed(store) == {"tom@example.org": ("active", "Tom Smith")}


def test_a_control_character_in_the_source_is_refused_before_anything_changes(store, clock):
    with store.session() as session, pytest.raises(UsageError, match="control characters"):
        import_rows(session, [CsvRow(2, "ana@example.org", "")], clock, source="crm\x1b[2J")
    assert listed(store) == {}


# --- the command: files that are not lists, and saying what happened ----------------------------


def import_cli(runner, cfg: str, *args: str):
    result = runner.invoke(cli, ["--config", cfg, "subscribers", "import", *args])
    assert "Traceback" not in result.output
    return result


def test_cli_refuses_devices_pipes_and_huge_files_in_one_line(runner, tmp_path, db_url, store):
    cfg = config_file(tmp_path, db_url)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    for path, words in [
        ("/dev/zero", "/dev/zero is a pipe, device or socket, not a regular file"),
        (str(fifo), "is a pipe, device or socket, not a regular file"),
        (str(huge), "is over 100 MB, the most one import reads: split it"),
        (str(tmp_path / "nope.csv"), "nope.csv does not exist"),
    ]:
        result = import_cli(runner, cfg, path)
        assert result.exit_code == 2, (path, result.output)
        assert result.stdout == "" and result.stderr.count("\n") == 1 and words in result.stderr
    assert listed(store) == {}


@pytest.mark.parametrize(
    ("content", "options", "outcome"),
    [
        ("email\nana@example.org\ntom@example.org\n", [], "all 2 rows imported"),
        ("email\nana@example.org\n", [], "the only row imported"),
        ("email\nana@example.org\nbroken@\n", [], "1 of 2 rows imported"),
        ("email\nbroken@\nalso broken\n", [], "no row imported"),
        ("email\nana@example.org\nbroken@\n", ["--dry-run"], "1 of 2 rows would be imported; dry run: nothing changed"),
        ("email\nbroken@\n", ["--dry-run"], "no row would be imported; dry run: nothing changed"),
    ],
)
def test_cli_summary_says_what_happened(runner, tmp_path, db_url, store, content, options, outcome):
    path = tmp_path / "list.csv"
    path.write_text(content, encoding="utf-8")
    result = import_cli(runner, config_file(tmp_path, db_url), str(path), *options)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].endswith(": " + outcome)
    assert "other rows were imported" not in result.output


# --- the optional time zone column ---------------------------------------------------------------


def test_a_time_zone_column_is_read_only_with_a_header():
    parsed = read_csv(b"Email;Name;Time zone\nana@example.org;Ana;Asia/Kolkata\ntom@example.org;Tom\n")
    assert [(r.line, r.email, r.timezone) for r in parsed.rows] == [
        (2, "ana@example.org", "Asia/Kolkata"),
        (3, "tom@example.org", ""),
    ]
    assert [r.timezone for r in read_csv(b"TZ,email\nUTC,ana@example.org\n").rows] == ["UTC"]
    assert [r.timezone for r in read_csv(b"ana@example.org,Europe/London\n").rows] == [""]  # no header: a name


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the store's zone functions run on both elsewhere
def test_cli_import_takes_zones_and_refuses_bad_ones_row_by_row(runner, tmp_path, db_url, store, clock):
    add_subscribers(store, clock, 1, SubscriberStatus.PENDING, prefix="waiting")
    lines = [
        b"email,name,timezone",
        "ana@example.org,Anaïs,europe/paris".encode(),  # 2: stored as tz spells it; the file is UTF-8
        b"tom@example.org,Tom,",  # 3: none: the newsroom's
        b"li@example.org,Li,US/Eastern",  # 4: a legacy name tz still has
        b"utc@example.org,,UTC",  # 5
        b"gmt@example.org,,Etc/GMT+5",  # 6
        b"mars@example.org,,Mars/Olympus_Mons",  # 7: unknown
        b"path@example.org,,../../etc/passwd",  # 8
        b"long@example.org,," + b"x" * 10_000,  # 9
        b'nl@example.org,,"Europe/\nLondon"',  # 10: a line break inside the quoted cell
        b"esc@example.org,,Europe/\x1b]0;owned\x07London",  # 12
        b"bytes@example.org,,Europe/Z\xfcrich",  # 13: not UTF-8, unlike the rest of the file
        b"ana@example.org,Ana,Asia/Tokyo",  # 14: a duplicate
        b"waiting0@example.org,,Pacific/Chatham",  # 15: pending, activated with the zone
    ]
    path = tmp_path / "zones.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = runner.invoke(cli, ["--config", config_file(tmp_path, db_url), "subscribers", "import", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    rejected = [line for line in out if ": rejected: " in line]
    assert rejected[0].startswith("line 7: rejected: column timezone: 'Mars/Olympus_Mons' is not a time zone")
    assert rejected[1].startswith("line 8: rejected: column timezone: '../../etc/passwd' is not a time zone name")
    assert rejected[2].startswith("line 9: rejected: column timezone: 'xxxxxxxxxxxxxxxxxxx…' is too long")
    assert rejected[3] == (
        "line 10: rejected: column timezone: holds a line break or control character: a time zone name has none"
    )
    assert rejected[4].startswith("line 12: rejected: column timezone: holds a line break or control")
    assert rejected[5] == "line 13: rejected: not UTF-8, unlike the rest of the file: save the file as UTF-8"
    assert len(rejected) == 6 and all(len(line) < 200 for line in out)
    assert "line 14: skipped: ana@example.org is already on line 2" in out
    assert "\x1b" not in result.output
    with store.session() as session:
        zones = dict(session.execute(select(Subscriber.email, Subscriber.timezone)).all())
    assert zones == {
        "ana@example.org": "Europe/Paris",
        "tom@example.org": "",
        "li@example.org": "US/Eastern",
        "utc@example.org": "UTC",
        "gmt@example.org": "Etc/GMT+5",
        "waiting0@example.org": "Pacific/Chatham",
    }
    exported = runner.invoke(cli, ["--config", config_file(tmp_path, db_url), "subscribers", "export"])
    assert exported.output.splitlines()[0].endswith(",timezone")
    assert exported.output.splitlines()[1].endswith(",Pacific/Chatham")  # by id: the pending reader first
    assert [r.timezone for r in read_csv(exported.output.encode()).rows][:3] == ["Pacific/Chatham", "Europe/Paris", ""]
