"""The ``newsletter`` command: each subcommand builds its collaborators and calls one function.

Configuration is loaded once per invocation, lazily, so ``init``, ``demo`` and ``--help``
work before any config exists. Every ``NewsletterError`` becomes one line on stderr and an
exit code (2 for configuration and usage problems, 1 otherwise); nobody sees a traceback
for bad input.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import click

from newsletter import __version__
from newsletter.articles import ArticleInput, upsert_article
from newsletter.clock import SystemClock
from newsletter.config import Config, load_config
from newsletter.delivery import RunStats
from newsletter.errors import NewsletterError, UsageError
from newsletter.render import GMAIL_CLIP_BYTES, Markers, fill_markers
from newsletter.store import Store
from newsletter.store import deliveries as log_
from newsletter.store.models import DeliveryStatus, EditionStatus, SubscriberStatus
from newsletter.store.store import count_subscribers, edition_for, list_articles, list_editions
from newsletter.subscribers import add_subscriber
from newsletter.tokens import Tokens

log = logging.getLogger("newsletter")


class App:
    """What a command may need, each built on first use from the one configuration."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.clock = SystemClock()

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)

    @cached_property
    def store(self) -> Store:
        store = Store(self.config.store.url)
        store.check_schema()
        return store

    def close(self) -> None:
        """Return the database connections when the command ends."""
        if "store" in self.__dict__:
            self.store.dispose()

    @cached_property
    def tokens(self) -> Tokens:
        return Tokens(self.config.require_secret_key(), self.clock)


pass_app = click.make_pass_decorator(App)


class DateType(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date like 2026-11-24", param, ctx)


DATE = DateType()


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger("newsletter")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _set_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    app = ctx.find_object(App)
    if value and app is not None:
        app.config_path = value


class _Command(click.Command):
    """A command that also takes ``--config`` after its name, where people tend to type it."""

    def __init__(self, name: str | None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        if name not in ("init", "demo"):
            self.params.append(
                click.Option(
                    ["--config"],
                    metavar="PATH",
                    expose_value=False,
                    callback=_set_config,
                    help="Configuration file (may also come before the command).",
                )
            )


class _Group(click.Group):
    """Turns a ``NewsletterError`` anywhere below into one line and its exit code."""

    command_class = _Command
    group_class = type  # subgroups are _Group too, so their commands take --config as well

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Configuration file (default: $NEWSLETTER_CONFIG, then ./newsletter.toml).",
)
@click.option("-v", "--verbose", count=True, help="Log more (-v: each step, -vv: debug).")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Breakfast in red: collect the day's articles, render one edition and send it to every reader.

    \b
    Start here:
      newsletter demo                 a whole morning on this machine, nothing to set up
      newsletter init                 write ./newsletter.toml and create the database
    """
    _setup_logging(verbose)
    ctx.obj = App(config_path)
    ctx.call_on_close(ctx.obj.close)


# --- set-up -----------------------------------------------------------------------------


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to write newsletter.toml.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing newsletter.toml.")
def init(directory: Path, force: bool) -> None:
    """Write a starter newsletter.toml (with a fresh secret key) and create the database.

    \b
    Example:
      newsletter init && $EDITOR newsletter.toml
    """
    path = directory / "newsletter.toml"
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; edit it, or pass --force to start again")
    directory.mkdir(parents=True, exist_ok=True)
    example = resources.files("newsletter").joinpath("config.example.toml").read_text(encoding="utf-8")
    text = example.replace('secret_key = ""', f'secret_key = "{secrets.token_urlsafe(32)}"', 1)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    config = load_config(path, environ={k: v for k, v in os.environ.items() if k != "NEWSLETTER_DATABASE_URL"})
    store = Store(config.store.url)
    revision = store.upgrade()
    click.echo(f"wrote {path} (secret key inside: keep it private)")
    click.echo(f"database {store.safe_url} is at schema {revision}")
    click.echo("next: set publication, [smtp], [sender] and [web] base_url in it, then `newsletter send --dry-run`")


@cli.group()
def db() -> None:
    """Database schema commands.

    \b
    Example:
      newsletter db upgrade
    """


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the tables, or migrate them to this version's schema. Safe to run every time.

    \b
    Example:
      newsletter db upgrade
    """
    store = Store(app.config.store.url)
    revision = store.upgrade()
    click.echo(f"database {store.safe_url} is at schema {revision}")


# --- articles ---------------------------------------------------------------------------


@cli.group()
def articles() -> None:
    """Add, import and list articles.

    \b
    Example:
      newsletter articles list --limit 10
    """


def _parse_published(value: str | None, app: App) -> datetime:
    if not value:
        return app.clock.now()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--published {value!r}: expected a time like 2026-11-24T05:30 or 2026-11-24T05:30+00:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=app.config.newsletter.zone)


@articles.command("add")
@click.option("--title", required=True, help="Headline.")
@click.option("--url", required=True, help="Link to the article on the site.")
@click.option("--standfirst", default="", help="One or two sentences under the headline.")
@click.option("--section", default="", help="Section, e.g. News or Sport.")
@click.option("--author", default="", help="Byline.")
@click.option("--image-url", default="", help="Picture for the lead story.")
@click.option("--image-caption", default="", help="Caption of the picture.")
@click.option("--published", help="Publication time (ISO 8601; no zone means the newsletter's). Default: now.")
@click.option("--guid", help="Stable identifier (default: the URL). Adding the same guid again updates it.")
@pass_app
def articles_add(
    app: App,
    title: str,
    url: str,
    standfirst: str,
    section: str,
    author: str,
    image_url: str,
    image_caption: str,
    published: str | None,
    guid: str | None,
) -> None:
    """Add an article (or update the one with the same guid).

    \b
    Example:
      newsletter articles add --title "Bridge reopens" --url https://news.example.com/bridge \\
        --standfirst "Traffic flows again from Monday." --section News --published 2026-11-24T05:30
    """
    data = ArticleInput(
        guid=guid or url,
        url=url,
        title=title.strip(),
        standfirst=standfirst.strip(),
        section=section.strip(),
        author=author.strip(),
        image_url=image_url,
        image_caption=image_caption.strip(),
        published_at=_parse_published(published, app),
    )
    with app.store.session() as session:
        outcome = upsert_article(session, data, app.clock)
    click.echo(f"{outcome}: {data.title}")


@articles.command("list")
@click.option("--limit", default=30, show_default=True, help="How many, newest first.")
@pass_app
def articles_list(app: App, limit: int) -> None:
    """List the newest articles, with the edition each went into.

    \b
    Example:
      newsletter articles list --limit 10
    """
    zone = app.config.newsletter.zone
    with app.store.session() as session:
        rows = list_articles(session, limit=limit)
        lines = [
            f"{a.published_at.astimezone(zone):%Y-%m-%d %H:%M}  "
            f"{(a.edition.date.isoformat() if a.edition else 'unsent'):<10}  {a.section[:12]:<12}  {a.title}"
            for a in rows
        ]
    if not lines:
        click.echo("no articles yet: add one with `newsletter articles add`")
    for line in lines:
        click.echo(line)


@articles.command("import")
@click.argument("source")
@click.option("--section", default="", help="Put every article in this section (default: each item's category).")
@pass_app
def articles_import(app: App, source: str, section: str) -> None:
    """Import articles from a feed URL, an RSS or Atom file, or a JSON Lines file.

    An article already imported (same guid: the feed's id, else its link) is updated,
    never duplicated. Prints what was new, updated, unchanged and rejected (and why); the
    exit code is 1 only when SOURCE cannot be read at all.

    \b
    Example:
      newsletter articles import https://news.example.com/feed.xml --section News
      newsletter articles import cms-export.jsonl
    """
    from newsletter.articles import import_source, iter_details

    summary = import_source(source, app.config, app.store, app.clock, section=section.strip())
    click.echo(summary.describe())
    for line in iter_details(summary):
        click.echo(line, err=True)


@articles.command("fetch")
@pass_app
def articles_fetch(app: App) -> None:
    """Import every [[feeds]] entry of the configuration, asking each server only for news.

    Each feed is fetched with its last ETag / Last-Modified, so an unchanged feed costs a
    304 and nothing more. A feed that fails is reported and the others still go in; the
    exit code is then 1.

    \b
    Example:
      newsletter articles fetch && newsletter preview
    """
    from newsletter.articles import fetch_feeds, iter_details

    if not app.config.feeds:
        raise UsageError(
            f"{app.config.source} has no [[feeds]]: add one with a url (see config.example.toml), "
            "or import a file with `newsletter articles import SOURCE`"
        )
    summaries = fetch_feeds(app.config, app.store, app.clock)
    for summary in summaries:
        click.echo(summary.describe() if summary.ok else f"error: {summary.error}", err=not summary.ok)
        for line in iter_details(summary):
            click.echo(line, err=True)
    if not all(s.ok for s in summaries):
        sys.exit(1)


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


# --- editions ---------------------------------------------------------------------------


@cli.command()
@click.option("--date", "day", type=DATE, help="Edition date (default: the edition due now).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("preview.html"),
    show_default=True,
    help="Where to write the HTML.",
)
@click.option("--text", is_flag=True, help="Write the plain-text part instead.")
@pass_app
def preview(app: App, day: date | None, out: Path, text: bool) -> None:
    """Render an edition to a file to look at in a browser; nothing is sent or recorded.

    \b
    Example:
      newsletter preview --date 2026-11-24 --out /tmp/edition.html
    """
    from newsletter.publish import plan_for, render_plan, resolve_day

    day = resolve_day(app.config, app.clock, day)
    with app.store.session() as session:
        edition = edition_for(session, day)
    if edition is not None and edition.html:
        html, plain, markers = edition.html, edition.text, Markers.for_nonce(edition.nonce)
        note = f"edition of {day} ({edition.status})"
    else:
        plan, _ = plan_for(app.config, app.store, app.clock, day)
        rendered = render_plan(app.config, plan, "preview")
        html, plain, markers = rendered.html, rendered.text, rendered.markers
        note = f"edition of {day} as it would be now: {plan.story_count} articles"
    sample = {"greeting": "Good morning, Ana", "unsubscribe_url": f"{app.config.web.base_url}/unsubscribe/PREVIEW"}
    content = fill_markers(plain, markers, escape=False, **sample) if text else fill_markers(html, markers, **sample)
    out.write_text(content, encoding="utf-8")
    size = len(html.encode())
    click.echo(f"wrote {out} ({note}; HTML {size / 1024:.1f} KB)")
    if size > GMAIL_CLIP_BYTES:
        click.echo("warning: the HTML is over 100 KB; Gmail will clip it and hide the footer", err=True)


class _Progress:
    """A progress bar with rate and ETA on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._shown = 0

    def __call__(self, stats: RunStats) -> None:
        if not self.enabled or not stats.to_send:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=stats.to_send,
                label="sending",
                show_pos=True,
                show_eta=True,
                item_show_func=lambda s: s,
                file=sys.stderr,
            )
            self._bar.__enter__()
        done = stats.done + stats.released
        self._bar.update(max(0, done - self._shown), f"{stats.rate:.0f} msg/s")
        self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@contextmanager
def _graceful_stop() -> Iterator[threading.Event]:
    """First SIGINT/SIGTERM: finish what is in flight and record it. A second: stop at once."""
    stop = threading.Event()
    previous: dict[int, Any] = {}

    def handle(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo(
            f"\n{signal.Signals(signum).name}: finishing messages in flight, then stopping (again to stop at once)",
            err=True,
        )

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handle)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.command()
@click.option("--date", "day", type=DATE, help="Edition date (default: the edition due now).")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send and record nothing.")
@click.option("--to", "to_address", metavar="ADDRESS", help="Send one test copy to ADDRESS only; record nothing.")
@click.option("--enqueue-only", is_flag=True, help="Create the deliveries and leave sending to `newsletter worker`.")
@click.option(
    "--scheduled",
    is_flag=True,
    help="For cron or a systemd timer: send the edition if it is due and not sent yet, resume one left "
    "part-sent, else do nothing (exit 0). Safe to run every few minutes.",
)
@pass_app
def send(
    app: App, day: date | None, dry_run: bool, to_address: str | None, enqueue_only: bool, scheduled: bool
) -> None:
    """Prepare the edition and send it to every active subscriber who has not had it yet.

    Running it again resumes: nobody who already has the edition gets it twice.

    \b
    Examples:
      newsletter send --dry-run
      newsletter send --to me@example.org
      newsletter send --date 2026-11-24
      newsletter send --enqueue-only      # PostgreSQL: workers do the sending
      newsletter send --scheduled         # from cron every 5 minutes: sends once, when due
    """
    from newsletter.publish import send_edition, send_test_copy
    from newsletter.subscribers import normalise_email

    if scheduled:
        _send_scheduled(app, conflicting=day is not None or dry_run or bool(to_address) or enqueue_only)
        return
    if to_address:
        address = normalise_email(to_address)
        reply = send_test_copy(app.config, app.store, app.clock, app.tokens, day, address)
        click.echo(f"test copy sent to {address}: {reply}")
        return
    progress = _Progress(enabled=sys.stderr.isatty() and not dry_run)
    with _graceful_stop() as stop:
        try:
            report = send_edition(
                app.config,
                app.store,
                app.clock,
                app.tokens,
                day=day,
                dry_run=dry_run,
                stop=stop,
                on_progress=progress,
                enqueue_only=enqueue_only,
            )
        finally:
            progress.close()
    click.echo(f"{report.day}: {report.message}")
    if report.outcome == "interrupted":
        sys.exit(130)
    if not report.ok and report.outcome != "incomplete":
        sys.exit(1)


def _scheduler_store(app: App, role: str) -> Store:
    """A store whose database sessions name this process, so a lock's loser can say who holds it."""
    from newsletter.store import worker_identity

    store = Store(app.config.store.url, application_name=f"newsletter {role} {worker_identity()}")
    store.check_schema()
    return store


def _send_scheduled(app: App, conflicting: bool) -> None:
    """``send --scheduled``: cron's view of the morning; silent unless it sends or something is wrong."""
    from newsletter.schedule import feed_fetcher, send_scheduled

    if conflicting:
        raise UsageError(
            "--scheduled decides the edition itself: use it without --date, --dry-run, --to or --enqueue-only"
        )
    store = _scheduler_store(app, "send --scheduled")
    try:
        with _graceful_stop() as stop:
            fetch = feed_fetcher(app.config, store, app.clock)
            result = send_scheduled(app.config, store, app.clock, app.tokens, fetch=fetch, stop=stop)
    finally:
        store.dispose()
    for report in result.reports:
        click.echo(f"{report.day}: {report.message}")
    sys.exit(result.exit_code)


@cli.command()
@pass_app
def scheduler(app: App) -> None:
    """Run the scheduler: send each edition at its send time, unattended, until stopped.

    At start it resumes any edition a crash left part-sent, and sends this morning's at once
    if its send time passed less than [scheduler] grace_minutes ago (later, it logs that the
    edition was missed: `newsletter send --date D` sends it anyway). Deferred messages are
    retried every [delivery] retry_deferred_minutes. The schedule is kept in the database,
    and any number of schedulers (or cron runs) may share it: each edition goes once.
    SIGTERM/SIGINT stop it after the messages in flight are recorded; starting it again
    resumes. Logs one line per event on stderr.

    \b
    Examples:
      newsletter scheduler
      NEWSLETTER_CONFIG=/srv/newsletter/newsletter.toml newsletter scheduler
    """
    from newsletter.schedule import feed_fetcher
    from newsletter.scheduler import EditionScheduler

    ours = logging.getLogger("newsletter")
    ours.setLevel(min(ours.level, logging.INFO))  # a daemon's log is its only voice: every event
    theirs = logging.getLogger("apscheduler")  # its warnings, in the same format on the same stream
    theirs.handlers[:] = ours.handlers
    theirs.setLevel(logging.WARNING)
    theirs.propagate = False
    store = _scheduler_store(app, "scheduler")
    try:
        fetch = feed_fetcher(app.config, store, app.clock)
        code = EditionScheduler(app.config, store, app.clock, app.tokens, fetch=fetch).run()
    finally:
        store.dispose()
    sys.exit(code)


@cli.command()
@click.option("--date", "day", type=DATE, help="Show one edition in detail.")
@click.option("--limit", default=7, show_default=True, help="How many recent editions.")
@pass_app
def status(app: App, day: date | None, limit: int) -> None:
    """Show recent editions with their delivery counts, the latest errors, and the next scheduled send.

    \b
    Example:
      newsletter status --date 2026-11-24
    """
    with app.store.session() as session:
        editions = [edition_for(session, day)] if day else list(list_editions(session, limit))
        subs = count_subscribers(session)
    editions = [e for e in editions if e is not None]
    if not editions:
        click.echo(f"no edition for {day}" if day else "no editions yet")
    for edition in editions:
        with app.store.engine.connect() as conn:
            counts = log_.status_counts(conn, edition.id)
            errors = log_.recent_errors(conn, edition.id, limit=5 if day else 2)
        total = sum(counts.values())
        detail = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no deliveries"
        click.echo(
            f"{edition.date}  {edition.status:<8} {edition.article_count:>3} articles  {total:>7} readers: "
            f"{detail}  — {edition.subject}"
        )
        if edition.status == EditionStatus.SENDING:
            click.echo(f"            still open: `newsletter send --date {edition.date}` resumes it")
        for email, state, error in errors:
            click.echo(f"            {state}: {email}: {error}")
    click.echo("subscribers: " + ", ".join(f"{n} {s}" for s, n in subs.items()))
    _show_workers(app, editions)
    from newsletter.scheduler import schedule_summary

    for line in schedule_summary(app.config, app.store, app.clock):
        click.echo(line)


def _show_workers(app: App, editions: list[Any]) -> None:
    """Scale-out: who is sending, how fast, and when each open edition should be done."""
    from newsletter.workers import edition_rate, worker_views

    now = app.clock.now()
    views = worker_views(app.store, now)
    for view in views:
        age = int((now - view.heartbeat_at).total_seconds())
        state = view.state if view.live else f"stopped {age}s ago" if view.state == "stopped" else f"silent {age}s"
        click.echo(f"worker {view.id}: {state}; sent {view.sent}; {view.rate:.0f} msg/s")
    for edition in editions:
        if edition.status != EditionStatus.SENDING:
            continue
        with app.store.engine.connect() as conn:
            counts = log_.status_counts(conn, edition.id)
        left = counts[DeliveryStatus.PENDING] + counts[DeliveryStatus.SENDING]
        rate = sum(v.rate for v in views if v.live and v.edition_id == edition.id) or edition_rate(
            app.store, edition.id, now
        )
        eta = f", done in about {left / rate / 60:.0f} min" if rate > 0 and left else ""
        click.echo(f"edition {edition.date}: {left} to send at {rate:.0f} msg/s{eta}")


@cli.command()
@click.option("--until-idle", is_flag=True, help="Exit when no edition has anything left to send.")
@click.option("--poll", "poll_seconds", default=2.0, show_default=True, help="Seconds between looks for work.")
@pass_app
def worker(app: App, until_idle: bool, poll_seconds: float) -> None:
    """Send deliveries of any edition being sent, alongside other workers (PostgreSQL).

    Each worker claims batches with a lease, so any number can run on any number of
    machines against one database; one that dies holds its batch only until the lease
    ends. Runs until stopped (for systemd) or, with --until-idle, until nothing is left.

    \b
    Example:
      newsletter send --enqueue-only && newsletter worker --until-idle
    """
    from newsletter.workers import require_postgres, run_worker

    require_postgres(app.store)
    progress = _Progress(enabled=sys.stderr.isatty())
    with _graceful_stop() as stop:
        try:
            report = run_worker(
                app.config,
                app.store,
                app.clock,
                app.tokens,
                until_idle=until_idle,
                stop=stop,
                poll_seconds=poll_seconds,
                on_progress=progress,
            )
        finally:
            progress.close()
    totals = report.totals
    click.echo(
        f"worker done: sent {totals.sent}, deferred {totals.deferred}, failed {totals.failed}, skipped {totals.skipped}"
    )
    if report.error is not None:
        click.echo(f"error: {report.error}", err=True)
        sys.exit(1)
    if report.interrupted:
        click.echo("stopped: claims in hand went back to pending; other workers or a restart carry on", err=True)
        sys.exit(130)


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
    """


@unsubscribes.command("process")
@click.argument("maildir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_app
def unsubscribes_process(app: App, maildir: Path) -> None:
    """Unsubscribe the senders of the requests waiting in MAILDIR, then file them away.

    A request whose subject carries the signed token from an edition unsubscribes that
    reader; otherwise the From address is unsubscribed if it is on the list and the
    subject asks to unsubscribe (automatic replies are ignored). Each message handled is
    moved into MAILDIR's "Processed" folder, so running it again (from cron) does no work
    twice.

    \b
    Example:
      newsletter unsubscribes process /var/mail/newsletter-unsubscribe
    """
    from newsletter.unsubscribes import process_maildir

    report = process_maildir(maildir, app.config, app.store, app.clock, app.tokens)
    for outcome in report.outcomes:
        click.echo(f"{outcome.action}: {outcome.detail}")
    click.echo(report.summary())


# --- demo -------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("newsletter-demo"),
    show_default=True,
    help="Where to put the demo's files.",
)
@click.option(
    "--subscribers",
    "count",
    type=click.IntRange(0, 10_000_000),
    default=1000,
    show_default=True,
    help="How many readers to send to.",
)
def demo(directory: Path, count: int) -> None:
    """Send a real edition over real SMTP to a built-in local server, and show where to look.

    Creates DIR with a config, a SQLite database of sample articles and readers, runs an
    SMTP server on 127.0.0.1 that stores every message it receives in DIR/outbox, and
    sends today's edition through the same pipeline production uses.

    \b
    Example:
      newsletter demo --subscribers 10000
    """
    from newsletter.demo import run_demo

    click.echo(f"demo in {directory.resolve()}: {count} subscribers, local SMTP server on 127.0.0.1")
    progress = _Progress(enabled=sys.stderr.isatty())
    try:
        result = run_demo(directory, count, SystemClock(), on_progress=progress)
    finally:
        progress.close()
    report, stats = result.report, result.report.stats
    click.echo(f"{report.day}: {report.message}")
    if stats is not None:
        click.echo(f"messages sent:      {stats.sent}")
        click.echo(f"elapsed:            {stats.elapsed:.2f} s")
        click.echo(f"messages/second:    {stats.rate:.0f}")
    click.echo(f"delivered to outbox: {result.delivered} messages in {result.outbox}/new")
    click.echo(f"preview of the edition: {result.preview}")
    click.echo(f'read one message:   less "$(ls -d {result.outbox}/new/* | head -n 1)"')
    click.echo(f"its configuration:  {result.config_path}")
    if not report.ok:
        sys.exit(1)


# --- entry point ------------------------------------------------------------------------


def main() -> None:
    cli(prog_name="newsletter")
