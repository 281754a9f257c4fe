"""Readers: the subscriber list, staff accounts, the web app and mailed unsubscribes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from newsletter.cli.base import App, cli, pass_app
from newsletter.store.models import SubscriberStatus
from newsletter.store.store import count_subscribers
from newsletter.subscribers import add_subscriber

# --- subscribers ------------------------------------------------------------------------


@cli.group()
def subscribers() -> None:
    """Add, remove, list, import, export and count subscribers.

    \b
    Example:
      newsletter subscribers add ana@example.org --name "Ana García"
    """


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The reader's name, used in the greeting.")
@click.option("--pending", is_flag=True, help="Add as pending (not sent to until confirmed).")
@click.option("--force", is_flag=True, help="Re-activate someone who unsubscribed or bounced.")
@pass_app
def subscribers_add(app: App, email: str, name: str, pending: bool, force: bool) -> None:
    """Add a subscriber; an address already on the list is left as it is unless --force.

    \b
    Example:
      newsletter subscribers add ana@example.org --name "Ana García"
    """
    status = SubscriberStatus.PENDING if pending else SubscriberStatus.ACTIVE
    with app.store.session() as session:
        result = add_subscriber(session, email, app.clock, name=name, status=status, force=force)
        subscriber = result.subscriber
        line = f"{'added' if result.created else 'already listed'}: {subscriber.email} ({subscriber.status})"
    click.echo(line)


@subscribers.command("list")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]), help="Only this status.")
@click.option("--search", default="", help="Text in the address or name.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="How many to show.")
@click.option("--after", type=click.IntRange(0), default=0, help="Start after this subscriber id (the next page).")
@pass_app
def subscribers_list(app: App, status: str | None, search: str, limit: int, after: int) -> None:
    """List subscribers in id order (oldest first), with counts by status.

    \b
    Example:
      newsletter subscribers list --status active --search example.org
      newsletter subscribers list --after 100        # the next page
    """
    from newsletter.subscribers import page_subscribers

    with app.store.session() as session:
        page = page_subscribers(
            session, status=SubscriberStatus(status) if status else None, search=search, after_id=after, size=limit
        )
        lines = [f"{s.id:>7}  {s.status:<12}  {s.email}  {s.name}" for s in page.rows]
        counts = count_subscribers(session)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("no subscribers match")
    if page.next_after:
        click.echo(f"more: add --after {page.next_after}")
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))


@subscribers.command("remove")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@pass_app
def subscribers_remove(app: App, emails: tuple[str, ...]) -> None:
    """Delete subscribers and their delivery history (for erasure requests).

    To stop sending to someone but remember that they left, unsubscribe them instead
    (the admin pages, or the link in any edition). A removal is counted in `stats`
    without the address.

    \b
    Example:
      newsletter subscribers remove ana@example.org tom@example.org
    """
    from newsletter.subscribers import remove_subscriber

    with app.store.session() as session:
        lines = [
            f"{'removed' if remove_subscriber(session, email, app.clock, source='cli') else 'not on the list'}: {email}"
            for email in emails
        ]
    for line in lines:
        click.echo(line)


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Re-activate listed readers who unsubscribed or bounced.")
@click.option("--dry-run", is_flag=True, help="Check the file and report; change nothing.")
@click.option("--source", default="import", show_default=True, help="Recorded as where these readers came from.")
@pass_app
def subscribers_import(app: App, file: Path, force: bool, dry_run: bool, source: str) -> None:
    """Add the readers in a CSV file as active subscribers, row by row.

    Per row, not all or nothing: every good row is imported (in one transaction) and
    every bad line is reported with its line number and the reason. Addresses are
    validated (without DNS lookups), lower-cased and de-duplicated, within the file and
    against the list. Someone who unsubscribed or bounced stays out unless --force.

    The file may be UTF-8 (with or without BOM), UTF-16 or Latin-1; separated by commas,
    semicolons or tabs; with a header row naming email / e-mail and name (or first name and
    last name) columns in any case, or without one.

    \b
    Example:
      newsletter subscribers import readers.csv --dry-run
      newsletter subscribers import readers.csv
    """
    from newsletter.subscriber_csv import ImportFileError, import_rows, read_csv

    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"{file}: cannot be read ({exc.strerror})") from None
    try:
        parsed = read_csv(data)
    except ImportFileError as exc:
        raise ImportFileError(f"{file}: {exc}") from None
    with app.store.session() as session:
        report = import_rows(session, parsed.rows, app.clock, force=force, dry_run=dry_run, source=source)
        if dry_run:
            session.rollback()
    rejected = sorted(parsed.rejected + report.rejected)
    for line, reason in rejected:
        click.echo(f"line {line}: rejected: {reason}")
    for line, reason in sorted(report.duplicates + report.kept_out):
        click.echo(f"line {line}: skipped: {reason}")
    layout = "delimiter " + {"\t": "tab"}.get(parsed.delimiter, repr(parsed.delimiter))
    click.echo(
        f"{file.name}: {parsed.encoding}, {layout}, {'a header row' if parsed.header else 'no header row'}; "
        f"{len(parsed.rows) + len(parsed.rejected)} rows"
    )
    verb = "would add" if dry_run else "added"
    click.echo(
        f"{verb} {report.added}, activated {report.activated} pending, re-activated {report.reactivated}; "
        f"{report.unchanged} already subscribed, {len(report.kept_out)} left earlier (not re-added), "
        f"{len(report.duplicates)} duplicates, {len(rejected)} rejected"
        + (" (the other rows were imported)" if rejected and not dry_run else "")
        + ("; dry run: nothing changed" if dry_run else "")
    )


@subscribers.command("export")
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True, path_type=Path), help="Write here instead of stdout."
)
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]), help="Only this status.")
@pass_app
def subscribers_export(app: App, out: Path | None, status: str | None) -> None:
    """Write the list as CSV: email,name,status,created_at,confirmed_at,unsubscribed_at (UTC).

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
    click.echo(f"wrote {count} subscribers to {out}", err=True)


@subscribers.command("stats")
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="How many days back.")
@pass_app
def subscribers_stats(app: App, days: int) -> None:
    """Counts by status, and sign-ups, joins and leaves per day (in the newsletter's time zone).

    "joined" counts confirmations and re-activations; "left" counts unsubscribes,
    bounces and removals.

    \b
    Example:
      newsletter subscribers stats --days 30
    """
    from newsletter.subscribers import daily_counts

    zone = app.config.newsletter.zone
    with app.store.session() as session:
        counts = count_subscribers(session)
        rows = daily_counts(session, zone, app.clock.now().astimezone(zone).date(), days)
    click.echo("subscribers: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    click.echo("day         sign-ups  joined   left  unsub  bounced  removed")
    for r in rows:
        click.echo(
            f"{r.day.isoformat():<10}  {r.signups:>8}  {r.joined:>6}  {r.left:>5}  {r.unsubscribed:>5}  "
            f"{r.bounced:>7}  {r.removed:>7}"
        )


# --- web app and staff ------------------------------------------------------------------


@cli.group()
def staff() -> None:
    """Staff accounts for the web admin (/admin).

    \b
    Example:
      newsletter staff add ana
    """


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
    from newsletter.web.auth import add_staff_user, check_password, check_username

    name = check_username(username)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt="Repeat it")
    check_password(password)
    with app.store.session() as session:
        created = add_staff_user(session, name, password, app.clock, replace=replace)
    click.echo(f"{'created' if created else 'new password set for'} staff user {name}")


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


@cli.group()
def unsubscribes() -> None:
    """Unsubscribe requests that arrive by email (the mailto in List-Unsubscribe).

    \b
    Example:
      newsletter unsubscribes process ~/Maildir/.unsubscribe
      newsletter unsubscribes process          # the [imap] mailbox of the config
    """


@unsubscribes.command("process")
@click.argument("maildir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_app
def unsubscribes_process(app: App, maildir: Path | None) -> None:
    """Unsubscribe the senders of the requests waiting in MAILDIR (or the [imap] mailbox).

    A request whose subject carries the signed token from an edition unsubscribes that
    reader; otherwise the From address is unsubscribed if it is on the list and the
    subject starts with "unsubscribe" (automatic replies are ignored). Each message handled is
    marked seen and moved into a "Processed" folder (MAILDIR's, or [imap]
    processed_mailbox), so running it again (from cron) does no work twice.

    \b
    Example:
      newsletter unsubscribes process /var/mail/newsletter-unsubscribe
      newsletter unsubscribes process          # reads [imap] host / mailbox instead
    """
    from newsletter.errors import UsageError
    from newsletter.unsubscribes import process_imap, process_maildir

    if maildir is not None:
        report = process_maildir(maildir, app.config, app.store, app.clock, app.tokens)
    elif app.config.imap.host:
        report = process_imap(app.config, app.store, app.clock, app.tokens)
    else:
        raise UsageError(f"give a MAILDIR, or set [imap] host in {app.config.source} to read the mailbox over IMAP")
    for outcome in report.outcomes:
        click.echo(f"{outcome.action}: {outcome.detail}")
    click.echo(report.summary())
