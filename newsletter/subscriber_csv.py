"""CSV in and out of the subscriber list: a forgiving reader for files from other systems.

Files from other newsletter tools and spreadsheets are messy: a byte-order mark, UTF-16 or
Latin-1, ";" or tab delimiters, a header row or none, columns named e-mail or "First
name" + "Last name", quoted line breaks, blank lines. ``read_csv`` accepts all of that and
says, per line, what it could not use; ``import_rows`` then adds the good rows in one
transaction (per-row: one bad line never stops the others). Exported cells that a
spreadsheet would run as formulas are quoted.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from newsletter.clock import Clock
from newsletter.errors import UsageError
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.subscribers import (
    CONFIRMED,
    clean_name,
    new_subscriber,
    normalise_email,
    set_status,
)


class ImportFileError(UsageError):
    """Raised when a subscriber file cannot be read at all (a bad line is only rejected)."""


# --- exporting ----------------------------------------------------------------------------


EXPORT_COLUMNS = ("email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(value: str) -> str:
    """Spreadsheets run cells starting with = + - @ as formulas; an apostrophe keeps them text."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def export_rows(session: Session, status: SubscriberStatus | None = None, batch: int = 1000) -> Iterator[list[str]]:
    """CSV rows (header first) for every subscriber in id order, read in batches."""
    yield list(EXPORT_COLUMNS)
    last = 0
    while True:
        query = select(Subscriber).where(Subscriber.id > last).order_by(Subscriber.id).limit(batch)
        if status is not None:
            query = query.where(Subscriber.status == status)
        rows = session.scalars(query).all()
        if not rows:
            return
        for s in rows:
            stamps = [
                t.isoformat(timespec="seconds") if t else "" for t in (s.created_at, s.confirmed_at, s.unsubscribed_at)
            ]
            yield [_csv_safe(s.email), _csv_safe(s.name), s.status.value, *stamps]
        last = rows[-1].id
        session.expunge_all()


# --- importing a CSV file ----------------------------------------------------------------


@dataclass(frozen=True)
class CsvRow:
    line: int
    email: str
    name: str


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
_DELIMITERS = ",;\t|"


def _decode(data: bytes) -> tuple[str, str]:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding), encoding.removesuffix("-sig")
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


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


def read_csv(data: bytes) -> CsvFile:
    """Read a messy subscriber file: any common encoding, delimiter, header or none.

    Raises ``ImportFileError`` only when the file as a whole is unusable; a bad row is
    listed in ``rejected`` with its line number and the rest still count.
    """
    if not data.strip():
        raise ImportFileError("the file is empty")
    text, encoding = _decode(data)
    if "\x00" in text:
        raise ImportFileError("this is not a text (CSV) file")
    lines = [line for line in text.splitlines() if line.strip()]
    delimiter = _guess_delimiter(lines)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    records: list[tuple[int, list[str]]] = []
    previous = 0
    try:
        for cells in reader:
            start, previous = previous + 1, reader.line_num
            if any(c.strip() for c in cells):
                records.append((start, [_unformula(c) for c in cells]))
    except csv.Error as exc:
        raise ImportFileError(f"line {reader.line_num}: cannot be read as CSV ({exc})") from None
    if not records:
        raise ImportFileError("the file has no rows")
    keys = [_header_key(c) for c in records[0][1]]
    header = not any("@" in c for c in records[0][1]) and any(
        k in _EMAIL_HEADERS | _NAME_HEADERS | _FIRST_HEADERS | _LAST_HEADERS or "mail" in k for k in keys
    )
    data_rows = records[1:] if header else records
    if header:
        email_col = next((i for i, k in enumerate(keys) if k in _EMAIL_HEADERS), None)
        if email_col is None:
            email_col = next((i for i, k in enumerate(keys) if "mail" in k), None)
        if email_col is None:
            raise ImportFileError(f"no email column in the header ({', '.join(records[0][1])})")
        name_cols = [i for i, k in enumerate(keys) if k in _NAME_HEADERS][:1] or [
            i for i, k in enumerate(keys) if k in _FIRST_HEADERS | _LAST_HEADERS
        ]
        # First name before last name, whatever the file's column order.
        name_cols.sort(key=lambda i: keys[i] in _LAST_HEADERS)
    else:
        votes = Counter(i for _, cells in data_rows[:50] for i, c in enumerate(cells) if "@" in c)
        email_col = votes.most_common(1)[0][0] if votes else 0
        widths = Counter(len(cells) for _, cells in data_rows[:50])
        name_cols = [1 - email_col] if widths.most_common(1)[0][0] == 2 and email_col < 2 else []
    result = CsvFile(rows=[], encoding=encoding, delimiter=delimiter, header=header)
    for line, cells in data_rows:
        email = cells[email_col] if email_col < len(cells) else ""
        if not email:
            result.rejected.append((line, "no email address on this line"))
            continue
        name = " ".join(cells[i] for i in name_cols if i < len(cells) and cells[i])
        result.rows.append(CsvRow(line, email, name))
    return result


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
) -> ImportReport:
    """Add the good rows, all in the caller's one transaction; bad rows are only reported.

    Imported readers are active: a list brought from another system already consented
    there. Those who unsubscribed or bounced here stay out unless ``force``.
    """
    report = ImportReport()
    first_line: dict[str, int] = {}
    wanted: list[tuple[CsvRow, str, str]] = []
    for row in rows:
        try:
            address = normalise_email(row.email)
            name = clean_name(" ".join(row.name.split()))
        except UsageError as exc:
            report.rejected.append((row.line, str(exc)))
            continue
        if address in first_line:
            report.duplicates.append((row.line, f"{address} is already on line {first_line[address]}"))
            continue
        first_line[address] = row.line
        wanted.append((row, address, name))
    existing: dict[str, Subscriber] = {}
    addresses = [address for _, address, _ in wanted]
    for i in range(0, len(addresses), 500):
        chunk = addresses[i : i + 500]
        existing.update((s.email, s) for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(chunk))))
    now = clock.now()
    new: list[Subscriber] = []
    for row, address, name in wanted:
        subscriber = existing.get(address)
        if subscriber is None:
            report.added += 1
            new.append(new_subscriber(address, name, SubscriberStatus.ACTIVE, source, now))
        elif subscriber.status == SubscriberStatus.ACTIVE:
            report.unchanged += 1
        elif subscriber.status == SubscriberStatus.PENDING:
            report.activated += 1
            if not dry_run:
                set_status(subscriber, SubscriberStatus.ACTIVE, clock, source=source)
        elif force:
            report.reactivated += 1
            if not dry_run:
                set_status(subscriber, SubscriberStatus.ACTIVE, clock, source=source)
                subscriber.name = name or subscriber.name
        else:
            report.kept_out.append((row.line, f"{address} is {subscriber.status.value}; not re-added without --force"))
    if new and not dry_run:
        session.add_all(new)
        session.flush()
        session.execute(
            insert(SubscriberEvent),
            [{"subscriber_id": s.id, "event": CONFIRMED, "source": source[:50], "at": now} for s in new],
        )
    return report
