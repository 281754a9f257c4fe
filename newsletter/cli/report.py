"""``newsletter report``: what an edition did (deliveries, bounces, complaints, unsubscribes, clicks).

Thin by design: the counts come from ``store.reports`` and the figures and their wording
from ``newsletter.reports``. Its options are checked here, and any mistake in them (a
date that is not one, ``--days 0``, a missing value) is one line and exit code 2, like
every other usage error, rather than click's usage screen.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import click

from newsletter.cli.base import FIRST_DAY, LAST_DAY, App, _Command, cli, pass_app
from newsletter.errors import UsageError

MAX_DAYS = 366


class _OneLineCommand(_Command):
    """A command whose option errors go through the group's one-line error path (exit 2)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any):  # type: ignore[no-untyped-def]
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise UsageError(" ".join(exc.format_message().split())) from None


def _day(value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--date {value[:40]!r} is not a date like 2026-11-24") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise UsageError(f"--date {value} is out of range: editions are dated {FIRST_DAY.year} to {LAST_DAY.year}")
    return day


def _days(value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdecimal()) or len(text) > 6 or not 1 <= int(text) <= MAX_DAYS:
        raise UsageError(f"--days {value[:40]!r} is not a number of days from 1 to {MAX_DAYS}")
    return int(text)


@cli.command(cls=_OneLineCommand)
@click.option("--date", "day_text", metavar="YYYY-MM-DD", help="The edition of this date (default: the latest sent).")
@click.option("--days", "days_text", metavar="N", help=f"One line per edition sent in the last N days (1-{MAX_DAYS}).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per edition, one per line.")
@pass_app
def report(app: App, day_text: str | None, days_text: str | None, as_json: bool) -> None:
    """What an edition did: deliveries, bounces, complaints, unsubscribes and clicks, each link's clicks.

    Without options, the latest edition that went out. Delivered is the mail the receiving
    servers accepted; the click-through rate is the readers who clicked a link over that.
    Unsubscribes count the readers who left from this edition's unsubscribe link (or by
    complaining about it). Days are in [newsletter] timezone, and skipped days are left out.
    With [tracking] opens on, the report of one edition counts the readers who opened it.

    \b
    Examples:
      newsletter report
      newsletter report --date 2026-11-24
      newsletter report --days 30
      newsletter report --days 30 --json > editions.jsonl
    """
    from newsletter.reports import SUMMARY_HEADER, figures_json, report_lines, summary_line
    from newsletter.store.reports import (
        edition_on,
        edition_reports,
        editions_out_between,
        latest_edition_out,
        report_window,
    )

    if day_text is not None and days_text is not None:
        raise UsageError("--date reports one edition and --days a span of them: give one or the other")
    day = _day(day_text) if day_text is not None else None
    days = _days(days_text) if days_text is not None else None
    opens = app.config.tracking.opens
    zone = app.config.newsletter.zone
    with app.store.reading() as session:
        if days is not None:
            first, last = report_window(app.clock.now().astimezone(zone).date(), days)
            editions = editions_out_between(session, first, last)
        elif day is not None:
            found = edition_on(session, day)
            if found is None:
                raise UsageError(f"there is no edition of {day} (`newsletter status` lists the editions)")
            if found.status.value not in ("sending", "sent"):
                raise UsageError(f"the edition of {day} has not gone out ({found.status.value}): nothing to report")
            editions = [found]
        else:
            latest = latest_edition_out(session)
            editions = [latest] if latest is not None else []
        # Opens are shown for one edition only: a span prints a line per edition, with no column for them.
        figures = edition_reports(session, editions, opens=opens and days is None, with_links=as_json or days is None)
    if as_json:
        for one in figures:
            click.echo(json.dumps(figures_json(one), ensure_ascii=False))
        return
    if not figures:
        click.echo(f"no edition went out in the last {days} days" if days else "no edition has gone out yet")
        return
    if days is not None:
        click.echo(SUMMARY_HEADER)
        for one in figures:
            click.echo(summary_line(one))
        return
    for line in report_lines(figures[0]):
        click.echo(_printable(line))


def _printable(line: str) -> str:
    """A subject or URL with control characters shown escaped, never acted on by the terminal."""
    from newsletter.subscribers import escape_controls

    return escape_controls(line)
