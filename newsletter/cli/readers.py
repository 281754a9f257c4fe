"""Readers: the subscriber list, staff accounts and the web app.

What these commands print may come from anyone (a name typed into the sign-up form, a
row of an imported file), so every stored text is printed with its control characters
escaped: a row cannot retitle or recolour the terminal listing it.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.base import App, cli, pass_app
from newsletter.editions import counted
from newsletter.store.models import SubscriberStatus
from newsletter.store.readers import MAX_SUBSCRIBER_ID, count_subscribers
from newsletter.subscribers import add_subscriber, escape_controls

if TYPE_CHECKING:
    from collections.abc import Sequence
    from zoneinfo import ZoneInfo

    from newsletter.store.bounces import Reason

MAX_SEARCH = 200
NAME_WIDTH = 40  # `subscribers list` cuts longer names, with an ellipsis
NEWSROOM_ZONE = "the newsletter's"  # how the readers without a zone of their own are named
ZONES_SHOWN = 8  # `subscribers stats` names the largest zones, then says how many more


def _operator() -> str:
    """Who ran the command, for the record of a consent change: "cli:$USER", else "cli"."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "cli"
    user = "".join(c for c in user if c.isprintable() and not c.isspace())[:40]
    return f"cli:{user}" if user else "cli"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _columns(rows: Sequence[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    """Rows as aligned text columns (``right``: the right-aligned ones); the last is not padded."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell if i == len(row) - 1 else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def _check_search(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if len(value) > MAX_SEARCH:
        raise click.BadParameter(f"at most {MAX_SEARCH} characters")
    if escape_controls(value) != value:
        raise click.BadParameter("cannot contain control characters")
    return value


# --- subscribers ------------------------------------------------------------------------


@cli.group()
def subscribers() -> None:
    """Add, edit, unsubscribe, remove, list, import, export and count subscribers.

    \b
    Example:
      newsletter subscribers add ana@example.org --name "Ana García"
    """


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The reader's name as they write it, used in the greeting.")
@click.option("--pending", is_flag=True, help="Add as pending (not sent to until confirmed).")
@click.option("--force", is_flag=True, help="Re-activate someone who unsubscribed or bounced: only with their consent.")
@pass_app
def subscribers_add(app: App, email: str, name: str, pending: bool, force: bool) -> None:
    """Add a subscriber; an address already on the list is left as it is unless --force.

    Someone who unsubscribed or bounced is made active again only with --force, which
    says they asked to come back; the change is recorded with your user name.

    \b
    Example:
      newsletter subscribers add ana@example.org --name "Ana García"
    """
    status = SubscriberStatus.PENDING if pending else SubscriberStatus.ACTIVE
    with app.store.session() as session:
        result = add_subscriber(session, email, app.clock, name=name, status=status, force=force, by=_operator())
        subscriber = result.subscriber
        line = f"{'added' if result.created else 'already listed'}: {subscriber.email} ({subscriber.status})"
    click.echo(escape_controls(line))


@subscribers.command("list")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]), help="Only this status.")
@click.option("--search", default="", callback=_check_search, help="Text in the address or name.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="How many to show.")
@click.option(
    "--after",
    type=click.IntRange(0, MAX_SUBSCRIBER_ID),
    default=0,
    help="Start after this subscriber id (the next page).",
)
@pass_app
def subscribers_list(app: App, status: str | None, search: str, limit: int, after: int) -> None:
    """List subscribers in id order (oldest first): id, status, address, name; then counts by status.

    Names longer than 40 characters are cut with "…"; control characters are shown
    escaped (ESC as \\x1b). When a reader on the page has a time zone of their own, a
    last column shows it (blank: the newsletter's). With --status bounced, each reader has
    a second line saying why: when, the kind of bounce, the status code, the server's
    reply and the edition.

    \b
    Example:
      newsletter subscribers list --status active --search example.org
      newsletter subscribers list --status bounced
      newsletter subscribers list --after 100        # the next page
    """
    from newsletter.store.bounces import bounce_reasons
    from newsletter.subscribers import page_subscribers

    with app.store.session() as session:
        page = page_subscribers(
            session, status=SubscriberStatus(status) if status else None, search=search, after_id=after, size=limit
        )
        rows: list[tuple[str, ...]] = [
            (str(s.id), s.status.value, escape_controls(s.email), escape_controls(_cut(s.name, NAME_WIDTH)))
            for s in page.rows
        ]
        if any(s.timezone for s in page.rows):  # else the list looks as it always did
            rows = [(*row, escape_controls(s.timezone)) for row, s in zip(rows, page.rows, strict=True)]
        reasons = bounce_reasons(session, [s.id for s in page.rows]) if status == SubscriberStatus.BOUNCED else None
        counts = count_subscribers(session)
    indent = " " * (max((len(r[0]) for r in rows), default=0) + 2)
    for row, line in zip(rows, _columns(rows, right=(0,)), strict=True):
        click.echo(line)
        if reasons is not None:
            click.echo(indent + _bounce_reason(reasons.get(int(row[0])), app.config.newsletter.zone))
    if not rows:
        click.echo("no subscribers match")
    if page.next_after:
        click.echo(f"more: add --after {page.next_after}")
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))


REASON_WIDTH = 120  # the server's reply under a bounced reader, cut with "…"
_BOUNCE_KINDS = {"hard_bounce": "hard bounce", "soft_bounce": "soft bounces (the last)"}


def _bounce_reason(reason: Reason | None, zone: ZoneInfo) -> str:
    """Why a reader bounced, in one line: "hard bounce on 2026-11-24, 5.1.1: <reply> (edition of 2026-11-24)"."""
    if reason is None:
        return "why: not on record (bounced before reasons were kept)"
    day = reason.at.astimezone(zone).date().isoformat()
    if reason.event in _BOUNCE_KINDS:
        what = f"{_BOUNCE_KINDS[reason.event]} on {day}"
    elif reason.source == "delivery":
        what = f"refused while sending on {day}"
    else:
        what = f"marked bounced by {reason.source or 'staff'} on {day}"
    if reason.status:
        what += f", {reason.status}"
    if reason.detail:
        what += f": {_cut(reason.detail, REASON_WIDTH)}"
    if reason.edition_date is not None:
        what += f" (edition of {reason.edition_date.isoformat()})"
    return "why: " + escape_controls(what)


def _zone_shown(zone: str) -> str:
    return zone or NEWSROOM_ZONE


@subscribers.command("edit")
@click.argument("email")
@click.option(
    "--timezone",
    "zone",
    metavar="ZONE",
    help='Their own IANA time zone, such as Asia/Kolkata; "none" or "" for the newsletter\'s.',
)
@pass_app
def subscribers_edit(app: App, email: str, zone: str | None) -> None:
    """Change a subscriber's details: for now their own time zone.

    The zone is an IANA name (Europe/London, America/New_York, Asia/Kolkata, UTC), in any
    case; legacy names the tz database still has (US/Eastern) are kept as they are. With
    a zone of their own a reader gets each edition at the sending time in that zone, once
    the newsletter sends by readers' zones; "none" (or "") gives them the newsletter's
    zone again. Any status: a pending or departed reader keeps it for when they are active.

    \b
    Example:
      newsletter subscribers edit ana@example.org --timezone Asia/Kolkata
      newsletter subscribers edit ana@example.org --timezone none
    """
    from newsletter.errors import UsageError
    from newsletter.subscribers import change_zone

    if zone is None:
        raise UsageError("nothing to change: give --timezone ZONE (or --timezone none to clear it)")
    with app.store.session() as session:
        change = change_zone(session, zone, app.clock, field="--timezone", email=email)
    if change.changed:
        line = f"{change.email}: time zone now {_zone_shown(change.after)} (was {_zone_shown(change.before)})"
    else:
        line = f"{change.email}: time zone already {_zone_shown(change.after)}"
    click.echo(escape_controls(line))


@subscribers.command("unsubscribe")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@pass_app
def subscribers_unsubscribe(app: App, emails: tuple[str, ...]) -> None:
    """Stop sending to readers, keeping them on the list as unsubscribed, with their history.

    For a reader who asks by phone or letter. They can join again only by signing up
    themselves (or by `subscribers add --force`, with their consent). Every address
    must be on the list; otherwise nothing changes.

    \b
    Example:
      newsletter subscribers unsubscribe ana@example.org tom@example.org
    """
    from newsletter.subscribers import unsubscribe_addresses

    with app.store.session() as session:
        done = unsubscribe_addresses(session, emails, app.clock, source="cli")
    for item in done:
        if item.was == SubscriberStatus.UNSUBSCRIBED:
            click.echo(f"already unsubscribed: {item.email}")
        elif item.was == SubscriberStatus.ACTIVE:
            click.echo(f"unsubscribed: {item.email}")
        else:
            click.echo(f"unsubscribed: {item.email} (was {item.was.value})")


@subscribers.command("remove")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@pass_app
def subscribers_remove(app: App, emails: tuple[str, ...]) -> None:
    """Delete subscribers and their address and name (for erasure requests).

    Past editions keep their counts: their deliveries stay, without the address, and any
    not yet sent are skipped. A removal is counted in `stats` without the address. To stop
    sending to someone but remember that they left, use `subscribers unsubscribe`. Every
    address must be on the list; otherwise nothing changes.

    \b
    Example:
      newsletter subscribers remove ana@example.org tom@example.org
    """
    from newsletter.subscribers import remove_subscribers

    with app.store.session() as session:
        removed = remove_subscribers(session, emails, app.clock, source="cli")
    for item in removed:
        skipped = f" ({counted(item.skipped, 'unsent delivery', 'unsent deliveries')} skipped)" if item.skipped else ""
        click.echo(f"removed: {item.email}{skipped}")


@subscribers.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--force", is_flag=True, help="Re-activate listed readers who unsubscribed or bounced: only with their consent."
)
@click.option("--dry-run", is_flag=True, help="Check the file and report; change nothing.")
@click.option("--source", default="import", show_default=True, help="Recorded as where these readers came from.")
@pass_app
def subscribers_import(app: App, file: Path, force: bool, dry_run: bool, source: str) -> None:
    """Add the readers in a CSV file as active subscribers, row by row.

    Per row, not all or nothing: every good row is imported (in one transaction) and
    every bad line is reported with its line number and the reason. Addresses are
    validated (without DNS lookups), lower-cased and de-duplicated, within the file and
    against the list. Names are kept as written, in the file's column order. Someone who
    unsubscribed or bounced stays out unless --force (recorded with your user name).

    An optional column headed timezone (or tz, "time zone") gives readers their own IANA
    zone (Asia/Kolkata); empty is the newsletter's. A row whose zone tz does not know is
    rejected, naming the line and the column. Readers already active keep their zone:
    `subscribers edit` changes it.

    The file may be UTF-8 (with or without BOM), UTF-16 or Windows-1252/Latin-1; separated
    by commas, semicolons or tabs; with a header row naming email / e-mail and name (or
    first name and last name) columns in any case, or without one. It must be a regular
    file of at most 100 MB; a line over 1 MB, with a NUL byte, or in another encoding than
    the rest of the file is rejected.

    \b
    Example:
      newsletter subscribers import readers.csv --dry-run
      newsletter subscribers import readers.csv
    """
    from newsletter.subscriber_csv import import_rows, read_subscriber_file
    from newsletter.subscribers import clean_source

    source = clean_source(source)  # before reading what may be a big file
    parsed = read_subscriber_file(file)
    with app.store.session() as session:
        report = import_rows(
            session, parsed.rows, app.clock, force=force, dry_run=dry_run, source=source, by=_operator()
        )
        if dry_run:
            session.rollback()
    rejected = sorted(parsed.rejected + report.rejected)
    for line, reason in rejected:
        click.echo(escape_controls(f"line {line}: rejected: {reason}"))
    for line, reason in sorted(report.duplicates + report.kept_out):
        click.echo(escape_controls(f"line {line}: skipped: {reason}"))
    layout = "delimiter " + {"\t": "tab"}.get(parsed.delimiter, repr(parsed.delimiter))
    rows = len(parsed.rows) + len(parsed.rejected)
    click.echo(
        escape_controls(f"{file.name}: ")
        + f"{parsed.encoding}, {layout}, {'a header row' if parsed.header else 'no header row'}; "
        + counted(rows, "row")
    )
    changed = report.added + report.activated + report.reactivated
    verb = "would be imported" if dry_run else "imported"
    if changed == rows:
        outcome = f"the only row {verb}" if rows == 1 else f"all {rows:,} rows {verb}"
    elif changed == 0:
        outcome = f"no row {verb}"
    else:
        outcome = f"{changed:,} of {rows:,} rows {verb}"
    done = (
        f"would add {report.added}, activate {report.activated} pending, re-activate {report.reactivated}"
        if dry_run
        else f"added {report.added}, activated {report.activated} pending, re-activated {report.reactivated}"
    )
    click.echo(
        f"{done}; {report.unchanged} already subscribed, {len(report.kept_out)} left earlier (not re-added), "
        f"{counted(len(report.duplicates), 'duplicate')}, {len(rejected)} rejected: {outcome}"
        + ("; dry run: nothing changed" if dry_run else "")
    )


@subscribers.command("export")
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True, path_type=Path), help="Write here instead of stdout."
)
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]), help="Only this status.")
@pass_app
def subscribers_export(app: App, out: Path | None, status: str | None) -> None:
    """Write the list as CSV: email,name,status,created_at,confirmed_at,unsubscribed_at (UTC),timezone.

    \b
    Example:
      newsletter subscribers export --status active --out readers.csv
    """
    import csv
    import io

    from newsletter.subscriber_csv import export_rows

    chosen = SubscriberStatus(status) if status else None
    with app.store.session() as session:
        if out is None:
            line = io.StringIO()
            writer = csv.writer(line)
            for row in export_rows(session, chosen):
                writer.writerow(row)
                click.echo(line.getvalue(), nl=False)
                line.seek(0)
                line.truncate()
            return
        with out.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            count = -1  # the header row is not a subscriber
            for row in export_rows(session, chosen):
                writer.writerow(row)
                count += 1
    click.echo(f"wrote {counted(count, 'subscriber')} to {out}", err=True)


@subscribers.command("stats")
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="How many days back.")
@pass_app
def subscribers_stats(app: App, days: int) -> None:
    """Counts by status, and sign-ups, joins and leaves per day (in the newsletter's time zone).

    Once readers have time zones of their own, a line counts the active ones per zone.

    "joined" counts confirmations and re-activations; "left" counts unsubscribes,
    bounces and removals.

    \b
    Example:
      newsletter subscribers stats --days 30
    """
    from newsletter.store.readers import active_zone_counts
    from newsletter.subscribers import daily_counts

    zone = app.config.newsletter.zone
    with app.store.session() as session:
        counts = count_subscribers(session)
        rows = daily_counts(session, zone, app.clock.now().astimezone(zone).date(), days)
        zones = active_zone_counts(session)
    click.echo("subscribers: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if any(zones):  # only once some reader has a zone of their own
        shown = [f"{n:,} {escape_controls(z) or NEWSROOM_ZONE}" for z, n in zones.items()]
        more = f" and {len(shown) - ZONES_SHOWN} more" if len(shown) > ZONES_SHOWN else ""
        click.echo("active readers by time zone: " + ", ".join(shown[:ZONES_SHOWN]) + more)
    click.echo("day         sign-ups  joined   left  unsub  bounced  removed")
    for r in rows:
        click.echo(
            f"{r.day.isoformat():<10}  {r.signups:>8}  {r.joined:>6}  {r.left:>5}  {r.unsubscribed:>5}  "
            f"{r.bounced:>7}  {r.removed:>7}"
        )


# --- web app and staff ------------------------------------------------------------------


@cli.group()
def staff() -> None:
    """Staff accounts for the web admin (/admin): add, list, change a password, remove.

    \b
    Example:
      newsletter staff add ana
    """


def _password(from_stdin: bool) -> str:
    """The new password: the first line of stdin, or typed twice at a hidden prompt.

    Stdin is read to at most one line of the longest password allowed, so a stream that
    never ends (/dev/zero) is refused instead of filling memory.
    """
    from newsletter.errors import UsageError
    from newsletter.web.auth import MAX_PASSWORD, check_password

    if from_stdin:
        try:
            line = sys.stdin.readline(MAX_PASSWORD + 2)
        except UnicodeDecodeError:
            raise UsageError("the password on stdin is not valid UTF-8") from None
        password = line.removesuffix("\n").removesuffix("\r")
        if len(password) > MAX_PASSWORD:
            raise UsageError(f"the password is too long: at most {MAX_PASSWORD} characters")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt="Repeat it")
    return check_password(password)


@staff.command("add")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--replace", is_flag=True, help="Set a new password for an existing user (ends their sessions).")
@pass_app
def staff_add(app: App, username: str, password_stdin: bool, replace: bool) -> None:
    """Create a staff user for the web admin; the password is asked for twice and stored hashed.

    \b
    Example:
      newsletter staff add ana
      printf '%s\\n' "$PASSWORD" | newsletter staff add ana --password-stdin
    """
    from newsletter.web.auth import add_staff_user, check_username

    name = check_username(username)
    password = _password(password_stdin)
    with app.store.session() as session:
        created = add_staff_user(session, name, password, app.clock, replace=replace)
    click.echo(f"{'created' if created else 'new password set for'} staff user {name}")


@staff.command("list")
@pass_app
def staff_list(app: App) -> None:
    """List the staff accounts: name, when created, last login (in the newsletter's time zone).

    \b
    Example:
      newsletter staff list
    """
    from newsletter.web.auth import staff_accounts

    zone = app.config.newsletter.zone
    with app.store.session() as session:
        users = [(u.username, u.created_at, u.last_login_at) for u in staff_accounts(session)]
    if not users:
        click.echo("no staff accounts: `newsletter staff add NAME` creates one")
        return
    rows = [("name", "created", "last login")] + [
        (
            escape_controls(name),
            created.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            last.astimezone(zone).strftime("%Y-%m-%d %H:%M") if last else "never",
        )
        for name, created, last in users
    ]
    for line in _columns(rows):
        click.echo(line)


@staff.command("password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_app
def staff_password(app: App, username: str, password_stdin: bool) -> None:
    """Set a new password for a staff user; every admin session they have open ends.

    The password is asked for twice (not shown), or read from the first line of stdin.

    \b
    Example:
      newsletter staff password ana
      printf '%s\\n' "$PASSWORD" | newsletter staff password ana --password-stdin
    """
    from newsletter.web.auth import require_staff_user, set_staff_password

    with app.store.session() as session:  # an unknown name fails before the password is typed
        name = require_staff_user(session, username).username
    password = _password(password_stdin)
    with app.store.session() as session:
        set_staff_password(session, name, password)
    click.echo(f"new password set for staff user {name}; their open admin sessions have ended")


@staff.command("remove")
@click.argument("username")
@pass_app
def staff_remove(app: App, username: str) -> None:
    """Delete a staff account; their open admin sessions end at their next click.

    Removing the last account is allowed: the admin then lets nobody in until
    `newsletter staff add` creates one.

    \b
    Example:
      newsletter staff remove ana
    """
    from newsletter.web.auth import remove_staff_user

    with app.store.session() as session:
        left = remove_staff_user(session, username)
    click.echo(f"removed staff user {username.strip()}; their admin sessions have ended")
    if not left:
        click.echo("no staff account is left: `newsletter staff add NAME` creates one")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@pass_app
def serve(app: App, host: str, port: int) -> None:
    """Run the web app (subscribe, confirm, unsubscribe, admin) on Flask's development server.

    For trying it on this machine. In production run it under a WSGI server such as
    gunicorn behind a reverse proxy with HTTPS (see the README).

    \b
    Example:
      newsletter serve --port 8000     # then open http://127.0.0.1:8000/subscribe
    """
    from newsletter.web import create_app

    web = create_app(app.config, store=app.store, clock=app.clock)
    # The development server speaks plain HTTP, where a Secure cookie would never come back.
    web.config["SESSION_COOKIE_SECURE"] = False
    click.echo(f"serving http://{host}:{port}/subscribe and /admin (development server: not for production)")
    web.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)
