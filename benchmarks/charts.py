"""How long the report and the admin's charts take on a big list: a million readers, a year of editions.

    python benchmarks/charts.py                                   # SQLite, in a temporary folder
    python benchmarks/charts.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/charts.py -n 100000 --editions 90          # smaller, quicker

It makes a database of its own (a SQLite file in a temporary folder, or a new PostgreSQL
database next to the one named, dropped afterwards unless ``--keep``), migrates it, and
seeds it with set-based ``INSERT ... SELECT`` statements, so a million readers take
seconds rather than minutes:

- N subscribers who joined over three years (sources web, import, 400 article pages,
  staff and the CLI), 78 % active, 12 % unsubscribed, 5 % bounced, 3 % pending, with their
  "subscribed", "confirmed", "unsubscribed" and "bounced" events (unsubscribes and hard
  bounces name the edition of their day) and a complaint now and then;
- an edition a day for ``--editions`` days, each with 20 links and ``--clicks`` clicks,
  and ``--opens`` opens on each of the last 30; every edition is sent (its counts on its
  row) except the latest, which is still going out, with a delivery row per active reader,
  so the report counts that one live, as it does while an edition is being sent;
- the click rollups (``clicks_by_edition``, ``clicks_by_link``) filled from those clicks,
  as migration 0016 fills them (the click endpoint keeps them as it records each batch).

Then it times each question the report and the admin home page ask, the best of three
runs (the first one warms the cache; the figures are for a warm database), and prints one
line per question. Seeding the full size took about 5 minutes on either database
(2 cores); ``--keep`` then ``--reuse URL`` measures again without seeding, after applying
any migration the kept database lacks (and says how long that took).

Measured 2026-12-01 on 2 cores shared with other engineers' builds and test runs, so the
figures are noisy (a run minutes later can differ by half); PostgreSQL 15 and SQLite 3.40,
full size, milliseconds, best of 3, warm, each column from a freshly seeded database.
"Before" is migration 0015, which counted the raw clicks; "after" is 0018, which reads the
click rollups (0016) and the partial indexes of the readers who left (0017):

    question                                        PostgreSQL         SQLite
                                                   before   after   before   after
    report (latest edition, going out; opens)          90      69      122      27
    report --date D (a sent edition; opens)            12       7       25       2
    report --days 30                                  206     106      380      48
    report --days 30 --json (links too)               317     120      609      58
    report --days 366 --json (links too)             4125     404     7124     254
    admin home: the last 30 editions                  228      89      407      48
    admin home: the list's last 90 days               336     250      424     312
    admin edition page figures (opens)                 46       5       73       2
      click_totals, 30 editions, with opens           929       1     2324       0
      link_totals, 30 editions (now click_totals)     123       -      324       -
      edition_event_counts, 30 editions                13      16       22      21
      edition_link_counts, latest edition               4       1        5       0

Measured again on kept databases (``--reuse``), the list's last 90 days took 142 to
165 ms on PostgreSQL and 203 to 250 ms on SQLite. An earlier measurement on the same
machine under heavier load, with migration 0011, had the before figures up to three
times these (the admin's last 30 editions 1287 and 1398 ms, its last 90 days 1479 and
1190 ms, ``report --days 30`` 750 and 1456 ms).

What is left is counted live, by design: the delivery statuses of the edition still going
out (most of the latest edition's report), today's readers by status (an index-only count
of a million rows, 45 to 120 ms) and the window's sign-ups, confirmations and departures
by day (index ranges of 14,000 to 75,000 rows).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TODAY = date(2026, 12, 1)
ZONE = ZoneInfo("Europe/London")
YEARS = 3
LINKS = 20


def _numbers(dialect: str, count: int) -> str:
    """A FROM clause yielding i = 1..count."""
    if dialect == "postgresql":
        return f"generate_series(1::bigint, {int(count)}) AS n(i)"
    return f"(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {int(count)}) SELECT i FROM n)"


def _at(dialect: str, seconds: str) -> str:
    """SQL for the UTC timestamp ``seconds`` (an SQL expression) after the seed's start, as each database stores it."""
    start = datetime.combine(TODAY - timedelta(days=365 * YEARS), datetime.min.time())
    if dialect == "postgresql":
        return f"(TIMESTAMPTZ '{start.isoformat()}+00:00' + ({seconds}) * INTERVAL '1 second')"
    # As SQLAlchemy writes a datetime on SQLite: text that sorts in time order.
    return f"(strftime('%Y-%m-%d %H:%M:%S', '{start.isoformat(' ')}', '+' || ({seconds}) || ' seconds') || '.000000')"


def _edition_of(dialect: str, seconds: str, editions: int) -> str:
    """SQL for the id of the edition dated on the day ``seconds`` falls on, or NULL before the first."""
    span_days = 365 * YEARS
    day = f"(({seconds}) / 86400)"
    first = span_days - editions + 1  # editions are dated the last ``editions`` days, ids 1..editions
    return f"(CASE WHEN {day} >= {first} AND {day} <= {span_days} THEN {day} - {first} + 1 END)"


def seed(engine: Engine, subscribers: int, editions: int, clicks: int, opens: int) -> None:
    dialect = engine.dialect.name
    n = subscribers
    span = 365 * YEARS * 86400
    joined = f"((i - 1) * {span // n})"  # seconds after the start: evenly over three years
    kind = "((i * 7919) % 100)"  # < 78 active, < 90 unsubscribed, < 95 bounced, else pending
    status = (
        f"CASE WHEN {kind} < 78 THEN 'active' WHEN {kind} < 90 THEN 'unsubscribed' "
        f"WHEN {kind} < 95 THEN 'bounced' ELSE 'pending' END"
    )
    left = f"({joined} + 600 + ((i * 104729) % ({span} - {joined} - 600)))"  # sometime between joining and today
    source_kind = "((i * 31) % 100)"
    source = (
        f"CASE WHEN {source_kind} < 45 THEN 'web' WHEN {source_kind} < 70 THEN 'import' "
        f"WHEN {source_kind} < 88 THEN 'article:/2026/' || (i % 400) || '/story' "
        f"WHEN {source_kind} < 95 THEN 'admin:ana' ELSE 'cli' END"
    )
    updated = f"CASE WHEN {kind} >= 78 AND {kind} < 95 THEN {left} ELSE {joined} + 600 END"
    active = round(n * 0.78)
    first_day = TODAY - timedelta(days=editions - 1)
    sent_at = f"{_at(dialect, f'({365 * YEARS - editions} + i) * 86400 + 21600')}"
    statements = [
        f"""INSERT INTO editions (id, date, window_start, window_end, subject, status, html, text, web_html, nonce,
                                  article_count, recipient_count, sent_count, failed_count, deferred_count,
                                  skipped_count, created_at, enqueued_at, started_at, finished_at)
            SELECT i, {_date(dialect, first_day, "i - 1")}, {sent_at}, {sent_at}, 'Edition ' || i,
                   CASE WHEN i = {editions} THEN 'sending' ELSE 'sent' END, '', '', '', 'nonce' || i, 12,
                   {active}, {active} - 900 - i % 50, 300 + i % 20, 0, 600 + i % 30,
                   {sent_at}, {sent_at}, {sent_at}, {sent_at}
            FROM {_numbers(dialect, editions)}""",
    ]
    statements += [
        f"""INSERT INTO subscribers
            (id, email, name, status, source, created_at, updated_at, confirmed_at, unsubscribed_at)
            SELECT i, 'reader' || i || '@example.org', '', {status}, {source}, {_at(dialect, joined)},
                   {_at(dialect, updated)},
                   CASE WHEN {kind} < 95 THEN {_at(dialect, joined + " + 600")} END,
                   CASE WHEN {kind} >= 78 AND {kind} < 90 THEN {_at(dialect, left)} END
            FROM {_numbers(dialect, n)}""",
        # Sign-ups from the web were pending first; everyone else was added confirmed.
        f"""INSERT INTO subscriber_events (subscriber_id, event, source, at, status, detail, reference)
            SELECT i, 'subscribed', 'web', {_at(dialect, joined)}, '', '', ''
            FROM {_numbers(dialect, n)} WHERE {source_kind} < 45""",
        f"""INSERT INTO subscriber_events (subscriber_id, event, source, at, status, detail, reference)
            SELECT i, 'confirmed', 'web', {_at(dialect, joined + " + 600")}, '', '', ''
            FROM {_numbers(dialect, n)} WHERE {kind} < 95""",
        f"""INSERT INTO subscriber_events (subscriber_id, event, source, at, edition_id, status, detail, reference)
            SELECT i, 'unsubscribed', 'web', {_at(dialect, left)}, {_edition_of(dialect, left, editions)}, '', '', ''
            FROM {_numbers(dialect, n)} WHERE {kind} >= 78 AND {kind} < 90""",
        f"""INSERT INTO subscriber_events (subscriber_id, event, source, at, edition_id, status, detail, reference)
            SELECT i, 'hard_bounce', 'mailbox', {_at(dialect, left)}, {_edition_of(dialect, left, editions)},
                   '5.1.1', 'user unknown', 'ref' || i
            FROM {_numbers(dialect, n)} WHERE {kind} >= 90 AND {kind} < 95""",
        f"""INSERT INTO subscriber_events (subscriber_id, event, source, at, edition_id, status, detail, reference)
            SELECT i, 'bounced', 'mailbox', {_at(dialect, left)}, {_edition_of(dialect, left, editions)}, '', '', ''
            FROM {_numbers(dialect, n)} WHERE {kind} >= 90 AND {kind} < 95""",
        f"""INSERT INTO subscriber_events (subscriber_id, event, source, at, edition_id, status, detail, reference)
            SELECT i, 'complaint', 'mailbox', {_at(dialect, left)}, {_edition_of(dialect, left, editions)},
                   '', '', 'arf' || i
            FROM {_numbers(dialect, n)} WHERE {kind} >= 78 AND {kind} < 90 AND i % 50 = 7""",
    ]
    statements += [
        f"""INSERT INTO edition_links (edition_id, position, url)
            SELECT 1 + (i - 1) / {LINKS}, 1 + (i - 1) % {LINKS},
                   'https://news.example.com/2026/story-' || i || '?utm_source=newsletter'
            FROM {_numbers(dialect, editions * LINKS)}""",
        # Clicks: a few links take most of them; readers spread over the list.
        f"""INSERT INTO clicks (edition_id, position, subscriber_id, at)
            SELECT 1 + (i - 1) / {clicks}, 1 + ((i * 7) % 97) % {LINKS}, 1 + (i * 2654435761) % {n},
                   {_at(dialect, f"({365 * YEARS - editions} + (i - 1) / {clicks}) * 86400 + 25000 + i % 40000")}
            FROM {_numbers(dialect, editions * clicks)}""",
        f"""INSERT INTO clicks (edition_id, position, subscriber_id, at)
            SELECT {max(1, editions - 29)} + (i - 1) / {opens}, 0, 1 + (i * 40503) % {n},
                   {_at(dialect, f"({365 * YEARS - min(30, editions)} + (i - 1) / {opens}) * 86400 + 23000")}
            FROM {_numbers(dialect, min(30, editions) * opens)}""",
        # The click rollups, as migration 0016 fills them from clicks recorded before it
        # (the endpoint's writer keeps them as it records each batch).
        """INSERT INTO clicks_by_edition (edition_id, clickers, clicks, openers)
           SELECT edition_id, COUNT(DISTINCT CASE WHEN position > 0 THEN subscriber_id END),
                  COALESCE(SUM(CASE WHEN position > 0 THEN 1 ELSE 0 END), 0),
                  COUNT(DISTINCT CASE WHEN position = 0 THEN subscriber_id END)
           FROM clicks GROUP BY edition_id""",
        """INSERT INTO clicks_by_link (edition_id, position, readers, clicks)
           SELECT edition_id, position, COUNT(DISTINCT subscriber_id), COUNT(*)
           FROM clicks WHERE position > 0 GROUP BY edition_id, position""",
        # The latest edition is going out: a delivery per active reader, most of them sent.
        f"""INSERT INTO deliveries (edition_id, subscriber_id, status, attempts, last_error, message_id, claimed_by)
            SELECT {editions}, id, CASE WHEN id % 100 < 90 THEN 'sent' WHEN id % 100 < 99 THEN 'pending'
                   ELSE 'failed' END, 1, '', '', ''
            FROM subscribers WHERE status = 'active'""",
    ]
    with engine.begin() as conn:
        for statement in statements:
            started = time.perf_counter()
            result = conn.execute(text(statement))
            table = statement.split("INTO", 1)[1].split("(", 1)[0].strip()
            print(
                f"  seeded {result.rowcount:>11,} rows of {table} in {time.perf_counter() - started:5.1f} s", flush=True
            )
        if dialect == "postgresql":
            for table in ("subscribers", "subscriber_events", "editions"):
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
                )
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))


def _date(dialect: str, first: date, days: str) -> str:
    if dialect == "postgresql":
        return f"(DATE '{first.isoformat()}' + ({days})::int)"
    return f"date('{first.isoformat()}', '+' || ({days}) || ' days')"


def timed(label: str, work: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    print(f"  {label:<58} {best * 1000:8.0f} ms", flush=True)
    return best


def measure(url: str, editions: int) -> dict[str, float]:
    from newsletter.reports import days_between
    from newsletter.store import Store
    from newsletter.store.clicks import click_totals, edition_link_counts
    from newsletter.store.reports import (
        edition_event_counts,
        edition_on,
        edition_reports,
        editions_out_between,
        latest_edition_out,
        latest_editions_out,
        list_growth,
    )

    store = Store(url)
    results: dict[str, float] = {}

    def run(label: str, query: Callable[..., object]) -> None:
        def once() -> object:
            with store.session() as session:
                return query(session)

        results[label] = timed(label, once)

    middle = TODAY - timedelta(days=editions // 2)
    month = (TODAY - timedelta(days=29), TODAY)
    year = (TODAY - timedelta(days=365), TODAY)
    ids = list(range(max(1, editions - 29), editions + 1))
    run(
        "report (latest edition, going out: live counts; opens)",
        lambda s: edition_reports(s, [latest_edition_out(s)], opens=True),
    )
    run(f"report --date {middle} (sent; opens)", lambda s: edition_reports(s, [edition_on(s, middle)], opens=True))
    run(
        "report --days 30", lambda s: edition_reports(s, editions_out_between(s, *month), opens=False, with_links=False)
    )
    run(
        "report --days 30 --json (links too)",
        lambda s: edition_reports(s, editions_out_between(s, *month), opens=False),
    )
    run(
        "report --days 366 --json (links too)",
        lambda s: edition_reports(s, editions_out_between(s, *year), opens=False),
    )
    run(
        "admin home: the last 30 editions",
        lambda s: edition_reports(s, latest_editions_out(s, 30), opens=False, with_links=False),
    )
    run("admin home: the list's last 90 days", lambda s: list_growth(s, ZONE, TODAY - timedelta(days=89), TODAY))
    run(
        "admin edition page figures (opens)",
        lambda s: edition_reports(s, [edition_on(s, TODAY - timedelta(days=1))], opens=True),
    )
    run("  store.clicks.click_totals, 30 editions (with opens)", lambda s: click_totals(s, ids))
    run("  store.reports.edition_event_counts, 30 editions", lambda s: edition_event_counts(s, ids))
    run("  store.clicks.edition_link_counts, latest edition", lambda s: edition_link_counts(s, editions))
    assert len(days_between(TODAY - timedelta(days=89), TODAY)) == 90
    store.dispose()
    return results


def main() -> None:
    from newsletter.store import Store

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a PostgreSQL URL allowed to CREATE DATABASE (default: SQLite)")
    parser.add_argument("-n", "--subscribers", type=int, default=1_000_000)
    parser.add_argument("--editions", type=int, default=365)
    parser.add_argument("--clicks", type=int, default=30_000, help="link clicks per edition")
    parser.add_argument("--opens", type=int, default=200_000, help="opens on each of the last 30 editions")
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    parser.add_argument(
        "--reuse", metavar="URL", help="measure a database kept by an earlier --keep run (migrated first)"
    )
    args = parser.parse_args()

    if args.reuse:
        store = Store(args.reuse)
        started = time.perf_counter()
        before = store.current_revision()
        store.upgrade()  # new indexes and rollups, if any
        if store.current_revision() != before:
            print(f"migrated {before} -> {store.current_revision()} in {time.perf_counter() - started:.1f} s")
        store.dispose()
        print(f"reusing {args.reuse}; best of 3, warm:")
        measure(args.reuse, args.editions)
        return

    from newsletter.store import Store

    admin: Engine | None = None
    folder = None
    if args.database_url:
        admin_url = make_url(args.database_url)
        if not admin_url.drivername.startswith("postgresql"):
            raise SystemExit("--database-url is for PostgreSQL; without it the benchmark uses SQLite")
        name = f"newsletter_charts_{os.getpid()}_{secrets.token_hex(2)}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin_url.set(database=name).render_as_string(hide_password=False)
    else:
        folder = tempfile.mkdtemp(prefix="newsletter-charts-")
        url = f"sqlite:///{folder}/charts.db"
    try:
        store = Store(url)
        store.upgrade()
        print(
            f"{store.engine.dialect.name}: {args.subscribers:,} subscribers, {args.editions} editions, "
            f"{args.clicks:,} clicks each, {args.opens:,} opens on each of the last 30; {os.cpu_count()} cores"
        )
        started = time.perf_counter()
        seed(store.engine, args.subscribers, args.editions, args.clicks, args.opens)
        print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
        store.dispose()
        print("best of 3, warm:")
        measure(url, args.editions)
        if args.keep:
            print(f"kept: {url}")
    finally:
        if admin is not None:
            if not args.keep:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        elif folder and not args.keep:
            for leftover in Path(folder).iterdir():
                leftover.unlink()
            os.rmdir(folder)


if __name__ == "__main__":
    main()
