"""CSV in and out of the subscriber list: a forgiving reader for files from other systems.

Files from other newsletter tools and spreadsheets are messy: a byte-order mark, UTF-16 or
Latin-1, ";" or tab delimiters, a header row or none, columns named e-mail or "First
name" + "Last name", quoted line breaks, blank lines. ``read_csv`` accepts all of that and
says, per line, what it could not use; ``import_rows`` then adds the good rows in one
transaction (per-row: one bad line never stops the others). Exported cells that a
spreadsheet would run as formulas are quoted.

Bad lines are rejected one by one, never the whole file: a NUL byte, a line over
``MAX_LINE_BYTES``, a field over the csv module's limit, a line in another encoding than
the rest. Each line is decoded on its own, UTF-8 first; cp1252 is used only when no line of
the file is UTF-8 beyond ASCII, so a file mixing the two gets its odd lines rejected rather
than stored garbled ("ZoÃ«"). Only regular files up to ``MAX_FILE_BYTES`` are read, line
by line: a pipe, a device such as /dev/zero, or a huge file is one error, not a hang.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import stat
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from newsletter.clock import Clock
from newsletter.errors import UsageError
from newsletter.store.models import Subscriber, SubscriberStatus
from newsletter.store.readers import insert_subscribers, list_subscribers, subscribers_by_email
from newsletter.subscribers import (
    CONFIRMED,
    LEFT,
    clean_name,
    clean_source,
    escape_controls,
    new_subscriber,
    normalise_email,
    set_status,
)
from newsletter.timezones import check_zone

MAX_FILE_BYTES = 100 * 1024 * 1024
"""The largest file one import reads (100 MB, about two million readers): split bigger lists."""
MAX_LINE_BYTES = 1024 * 1024
"""A longer line is rejected (and skipped unread) rather than held in memory."""
ZONE_COLUMN = "column timezone"  # how a rejected zone is named: "line 4: rejected: column timezone: ..."
_BINARY_SAMPLE = 8192
_READ_CHUNK = 64 * 1024


class ImportFileError(UsageError):
    """Raised when a subscriber file cannot be read at all (a bad line is only rejected)."""


# --- exporting ----------------------------------------------------------------------------


EXPORT_COLUMNS = ("email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at", "timezone")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(value: str) -> str:
    """Spreadsheets run cells starting with = + - @ as formulas; an apostrophe keeps them text."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def export_rows(session: Session, status: SubscriberStatus | None = None, batch: int = 1000) -> Iterator[list[str]]:
    """CSV rows (header first) for every subscriber in id order, read in batches."""
    yield list(EXPORT_COLUMNS)
    last = 0
    while True:
        rows = list_subscribers(session, status=status, after_id=last, limit=batch)
        if not rows:
            return
        for s in rows:
            stamps = [
                t.isoformat(timespec="seconds") if t else "" for t in (s.created_at, s.confirmed_at, s.unsubscribed_at)
            ]
            yield [_csv_safe(s.email), _csv_safe(s.name), s.status.value, *stamps, s.timezone]
        last = rows[-1].id
        session.expunge_all()


# --- importing a CSV file ----------------------------------------------------------------


@dataclass(frozen=True)
class CsvRow:
    line: int
    email: str
    name: str
    timezone: str = ""  # as written in the file's time zone column; checked by ``import_rows``


@dataclass
class CsvFile:
    """The rows of a subscriber file, and what was guessed about its format."""

    rows: list[CsvRow]
    encoding: str
    delimiter: str
    header: bool
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _header_key(cell: str) -> str:
    return "".join(ch for ch in cell.lower() if ch.isalnum())


_EMAIL_HEADERS = {"email", "emailaddress", "mail", "mailaddress", "emailadres", "emailadresse", "correo", "courriel"}
_NAME_HEADERS = {"name", "fullname", "displayname", "subscribername", "nom", "nombre"}
_FIRST_HEADERS = {"firstname", "givenname", "forename", "first", "vorname", "prenom"}
_LAST_HEADERS = {"lastname", "surname", "familyname", "last", "nachname"}
# Only with a header row: a column of zones cannot be told from other text without one.
_ZONE_HEADERS = {"timezone", "tz", "tzname", "timezonename", "ianatimezone", "zeitzone", "fuseauhoraire"}
_DELIMITERS = ",;\t|"


def _guess_delimiter(lines: list[str]) -> str:
    sample = "\n".join(lines[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        pass
    # One column, or a sample the sniffer could not settle: the candidate seen on most lines.
    seen = {d: sum(1 for line in lines[:20] if d in line) for d in _DELIMITERS}
    best = max(seen, key=lambda d: seen[d])
    return best if seen[best] else ","


def _unformula(cell: str) -> str:
    cell = cell.strip()
    return cell[1:] if cell.startswith("'") and cell[1:2] in _FORMULA_START else cell


def open_subscriber_file(path: Path) -> BinaryIO:
    """Open a subscriber file for ``read_subscriber_file``, refusing what cannot be one.

    Opened without blocking, so a FIFO is refused rather than waited on; only a regular
    file of at most ``MAX_FILE_BYTES`` is accepted.
    """
    shown = escape_controls(str(path))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImportFileError(f"{shown} does not exist") from None
    except OSError as exc:
        raise ImportFileError(f"{shown}: cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImportFileError(f"{shown} is a directory: name the CSV file to import")
        if not stat.S_ISREG(info.st_mode):
            raise ImportFileError(
                f"{shown} is a pipe, device or socket, not a regular file: save the list to a file and import that"
            )
        if info.st_size > MAX_FILE_BYTES:
            raise _too_big(shown)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _too_big(shown: str) -> ImportFileError:
    return ImportFileError(f"{shown} is over {MAX_FILE_BYTES // 2**20} MB, the most one import reads: split it")


def read_subscriber_file(path: Path) -> CsvFile:
    """``read_csv`` on a file, with its name in any error about the whole file."""
    with open_subscriber_file(path) as handle:
        try:
            return read_csv(handle)
        except ImportFileError as exc:
            raise ImportFileError(f"{escape_controls(str(path))}: {exc}") from None
        except OSError as exc:
            raise ImportFileError(f"{escape_controls(str(path))}: cannot be read ({exc.strerror})") from None


def read_csv(data: bytes | BinaryIO) -> CsvFile:
    """Read a messy subscriber file: any common encoding, delimiter, header or none.

    Raises ``ImportFileError`` only when the file as a whole is unusable (empty, binary,
    too big, no email column); a bad line is listed in ``rejected`` with its line number
    and the rest still count. A file object must be seekable: it is read twice, once to
    settle the encoding and once for the rows, and never held in memory whole.
    """
    handle: BinaryIO = io.BytesIO(data) if isinstance(data, bytes) else data
    head = handle.read(_BINARY_SAMPLE)
    handle.seek(0)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, lines = "utf-16", _utf16_lines(handle)
    else:
        if head.count(0) * 10 > len(head):
            raise ImportFileError("this is not a text (CSV) file")
        encoding = _settle_encoding(handle)
        handle.seek(0)
        lines = _decoded_lines(handle, encoding)
    rejected: list[tuple[int, str]] = []
    good = _keep_good(lines, rejected)
    first: list[tuple[int, str]] = []
    filled = 0
    for number, text in good:  # enough lines to guess the delimiter from
        if text.strip():
            filled += 1
        elif len(first) >= 1000:
            continue  # a run of blank lines: nothing to guess from, nor worth holding
        first.append((number, text))
        if filled == 20:
            break
    if not filled and not rejected:
        raise ImportFileError("the file is empty")
    delimiter = _guess_delimiter([t for _, t in first if t.strip()])
    records = _records(chain(first, good), delimiter, rejected)
    header_record = next(records, None)
    if header_record is None:
        rejected.sort()
        return CsvFile(rows=[], encoding=encoding, delimiter=delimiter, header=False, rejected=rejected)
    header_cells = header_record[1]
    keys = [_header_key(c) for c in header_cells]
    header = not any("@" in c for c in header_cells) and any(
        k in _EMAIL_HEADERS | _NAME_HEADERS | _FIRST_HEADERS | _LAST_HEADERS or "mail" in k for k in keys
    )
    if header:
        data_rows: Iterator[tuple[int, list[str]]] = records
        email_col = next((i for i, k in enumerate(keys) if k in _EMAIL_HEADERS), None)
        if email_col is None:
            email_col = next((i for i, k in enumerate(keys) if "mail" in k), None)
        if email_col is None:
            shown = escape_controls(", ".join(header_cells))[:200]
            raise ImportFileError(f"no email column in the header ({shown})")
        # In the file's column order, whatever the columns are called: "Li" then "Wei" is
        # "Li Wei". Which part is the family name is the reader's business, not ours.
        name_cols = [i for i, k in enumerate(keys) if k in _NAME_HEADERS][:1] or [
            i for i, k in enumerate(keys) if k in _FIRST_HEADERS | _LAST_HEADERS
        ]
        zone_col = next((i for i, k in enumerate(keys) if k in _ZONE_HEADERS), None)
    else:
        sample = [header_record]
        for record in records:
            sample.append(record)
            if len(sample) == 50:
                break
        data_rows = chain(sample, records)
        votes = Counter(i for _, cells in sample for i, c in enumerate(cells) if "@" in c)
        email_col = votes.most_common(1)[0][0] if votes else 0
        widths = Counter(len(cells) for _, cells in sample)
        name_cols = [1 - email_col] if widths.most_common(1)[0][0] == 2 and email_col < 2 else []
        zone_col = None
    result = CsvFile(rows=[], encoding=encoding, delimiter=delimiter, header=header, rejected=rejected)
    for line, cells in data_rows:
        email = cells[email_col] if email_col < len(cells) else ""
        if not email:
            rejected.append((line, "no email address on this line"))
            continue
        name = " ".join(cells[i] for i in name_cols if i < len(cells) and cells[i])
        zone = cells[zone_col] if zone_col is not None and zone_col < len(cells) else ""
        result.rows.append(CsvRow(line, email, name, zone))
    rejected.sort()
    return result


def _raw_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes with their line ending) per line; None for a line over the cap.

    A line over ``MAX_LINE_BYTES`` is read past in chunks, never held. CR alone ends a line
    too (old Mac files), as in the csv module.
    """
    number = 0
    total = 0
    while True:
        chunk = handle.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        total += len(chunk)
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = handle.readline(_READ_CHUNK)
                total += len(chunk)
                if total > MAX_FILE_BYTES:
                    raise _too_big("the file")
            number += 1
            yield number, None
            continue
        if total > MAX_FILE_BYTES:
            raise _too_big("the file")
        for piece in chunk.splitlines(keepends=True):
            number += 1
            yield number, piece


def _settle_encoding(handle: BinaryIO) -> str:
    """ "utf-8", or "cp1252" when no line is UTF-8 beyond ASCII and some line is not UTF-8 at all."""
    utf8 = other = False
    for number, raw in _raw_lines(handle):
        if raw is None or raw.isascii():
            continue
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            return "utf-8"
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            other = True
        else:
            utf8 = True
        if utf8:
            return "utf-8"
    return "cp1252" if other else "utf-8"


_TOO_LONG = f"longer than {MAX_LINE_BYTES // 2**20} MB: not read"


def _decoded_lines(handle: BinaryIO, encoding: str) -> Iterator[tuple[int, str | None, str]]:
    """(number, text, "") per line, or (number, None, why) for a line that cannot be decoded."""
    for number, raw in _raw_lines(handle):
        if raw is None:
            yield number, None, _TOO_LONG
            continue
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield number, raw.decode("utf-8"), ""
            continue
        except UnicodeDecodeError:
            pass
        if encoding == "utf-8":
            yield number, None, "not UTF-8, unlike the rest of the file: save the file as UTF-8"
            continue
        try:
            yield number, raw.decode("cp1252"), ""
        except UnicodeDecodeError:
            yield number, None, "has bytes that are neither UTF-8 nor Windows-1252 text"


def _utf16_lines(handle: BinaryIO) -> Iterator[tuple[int, str | None, str]]:
    """Lines of a UTF-16 file (it has a byte-order mark), capped like ``_raw_lines``."""
    text = io.TextIOWrapper(handle, encoding="utf-16", errors="replace", newline="")  # type: ignore[arg-type]
    limit = MAX_LINE_BYTES // 2
    number = 0
    while True:
        line = text.readline(limit + 1)
        if not line:
            text.detach()
            return
        if handle.tell() > MAX_FILE_BYTES:
            raise _too_big("the file")
        number += 1
        if len(line) > limit and not line.endswith(("\n", "\r")):
            while line and not line.endswith(("\n", "\r")):
                line = text.readline(_READ_CHUNK)
                if handle.tell() > MAX_FILE_BYTES:
                    raise _too_big("the file")
            yield number, None, _TOO_LONG
        elif "\ufffd" in line:
            yield number, None, "is not valid UTF-16, unlike the rest of the file"
        else:
            yield number, line, ""


def _keep_good(
    lines: Iterator[tuple[int, str | None, str]], rejected: list[tuple[int, str]]
) -> Iterator[tuple[int, str]]:
    """The lines worth parsing; the others go to ``rejected`` with their number and why."""
    for number, text, why in lines:
        if text is None:
            rejected.append((number, why))
        elif "\x00" in text:
            rejected.append((number, "contains a NUL byte (is part of this line binary?)"))
        else:
            yield number, text


_LINE_BREAK = re.compile(r"[\r\n]")


def _records(
    lines: Iterable[tuple[int, str]], delimiter: str, rejected: list[tuple[int, str]]
) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records, each with the number of the line it starts on.

    A record the csv module cannot read (a field over its limit) is rejected on its own.
    So is one whose quoted field runs over lines holding addresses: a quote left open
    would otherwise swallow the readers after it into one name.
    """
    numbers: deque[int] = deque()

    def feed() -> Iterator[str]:
        for number, text in lines:
            numbers.append(number)
            yield text

    reader = csv.reader(feed(), delimiter=delimiter, skipinitialspace=True)
    consumed = 0
    while True:
        problem = ""
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = f"cannot be read as CSV ({exc})"
            cells = []
        start = end = numbers[0] if numbers else consumed + 1
        for _ in range(reader.line_num - consumed):
            end = numbers.popleft() if numbers else start
        consumed = reader.line_num
        if not problem and end > start and any(_LINE_BREAK.search(c) and "@" in c for c in cells):
            problem = f"a quoted field opened here runs on to line {end}: check the quotes"
        if problem:
            rejected.append((start, problem))
        elif any(c.strip() for c in cells):
            yield start, [_unformula(c) for c in cells]


@dataclass
class ImportReport:
    """What an import did (or would do, with ``dry_run``), row by row."""

    added: int = 0
    activated: int = 0  # pending -> active
    reactivated: int = 0  # unsubscribed/bounced -> active, with force
    unchanged: int = 0  # already on the list
    kept_out: list[tuple[int, str]] = field(default_factory=list)  # left the list; not re-added without force
    duplicates: list[tuple[int, str]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


def import_rows(
    session: Session,
    rows: Iterable[CsvRow],
    clock: Clock,
    *,
    force: bool = False,
    dry_run: bool = False,
    source: str = "import",
    by: str = "",
) -> ImportReport:
    """Add the good rows, all in the caller's one transaction; bad rows are only reported.

    Imported readers are active: a list brought from another system already consented
    there. Those who unsubscribed or bounced here stay out unless ``force``, staff's word
    that they agreed to come back; each such "reactivated" event records ``by`` (who ran
    the import, "cli:ana") when given, else ``source``.

    A row's time zone (the optional ``timezone`` column) must be empty or a zone the tz
    database has, or the row is rejected with its line and the column named. It is given
    to new readers and to those the import activates; a reader already active keeps
    theirs (``subscribers edit`` changes it), and an empty cell never wipes one.
    """
    source = clean_source(source)
    who = clean_source(by, "who did it") if by else source
    report = ImportReport()
    first_line: dict[str, int] = {}
    wanted: list[tuple[CsvRow, str, str, str]] = []
    for row in rows:
        try:
            address = normalise_email(row.email)
            # A line break inside a quoted spreadsheet cell is layout, not part of the name.
            name = clean_name(_LINE_BREAK.sub(" ", row.name))
            zone = check_zone(row.timezone, ZONE_COLUMN)
        except UsageError as exc:
            report.rejected.append((row.line, str(exc)))
            continue
        if address in first_line:
            report.duplicates.append((row.line, f"{address} is already on line {first_line[address]}"))
            continue
        first_line[address] = row.line
        wanted.append((row, address, name, zone))
    existing = subscribers_by_email(session, [address for _, address, _, _ in wanted])
    now = clock.now()
    new: list[Subscriber] = []
    for row, address, name, zone in wanted:
        subscriber = existing.get(address)
        if subscriber is None:
            report.added += 1
            new.append(new_subscriber(address, name, SubscriberStatus.ACTIVE, source, now, zone))
        elif subscriber.status == SubscriberStatus.ACTIVE:
            report.unchanged += 1
        elif subscriber.status == SubscriberStatus.PENDING:
            report.activated += 1
            if not dry_run:
                set_status(subscriber, SubscriberStatus.ACTIVE, clock, source=source)
                subscriber.timezone = zone or subscriber.timezone
        elif force and subscriber.status in LEFT:
            report.reactivated += 1
            if not dry_run:
                set_status(subscriber, SubscriberStatus.ACTIVE, clock, source=who)
                subscriber.name = name or subscriber.name
                subscriber.timezone = zone or subscriber.timezone
        else:
            report.kept_out.append((row.line, f"{address} is {subscriber.status.value}; not re-added without --force"))
    if new and not dry_run:
        insert_subscribers(session, new, CONFIRMED, source, now)
    return report
