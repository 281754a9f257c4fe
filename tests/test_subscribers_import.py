"""Importing subscriber files as other systems write them: encodings, delimiters, headers, junk."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.store import Store
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.subscriber_csv import CsvRow, ImportFileError, import_rows, read_csv
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


def test_last_name_column_first_still_reads_first_name_first():
    assert rows(b"Surname,Email,Given name\nGarcia,ana@example.org,Ana\n") == [(2, "ana@example.org", "Ana Garcia")]


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
    assert "added 2," in out and "1 rejected (the other rows were imported)" in out
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
