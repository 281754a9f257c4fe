"""Setting up: ``init``, ``db upgrade`` and the ``demo`` of a whole morning."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from newsletter.cli.base import App, Progress, cli, pass_app
from newsletter.clock import SystemClock
from newsletter.config import load_config
from newsletter.demo.newsroom import NEWSROOM_ZONE, ZoneStep
from newsletter.editions import counted
from newsletter.errors import UsageError
from newsletter.store import Store

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


# --- demo -------------------------------------------------------------------------------


def _print_zone_steps(steps: Sequence[ZoneStep]) -> None:
    """One line per zone: when its readers got the edition, on the newsroom's clock and on theirs."""
    newsroom = ZoneInfo(NEWSROOM_ZONE)
    click.echo(f"{'released at (newsroom)':<22} {'zone':<22} {'their clock':<18} {'readers':>8} {'sent':>6}")
    for step in steps:
        for i, zone in enumerate(step.zones):
            local = step.at.astimezone(ZoneInfo(zone.zone) if zone.zone else newsroom)
            click.echo(
                f"{step.at.astimezone(newsroom):%a %d %H:%M %Z}".ljust(22)
                + f" {zone.zone or '(newsroom)':<22} {local:%a %d %H:%M %Z}".ljust(42)
                + f" {zone.readers:>8,} {step.sent if i == 0 else '':>6}"
            )


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
@click.option(
    "--zones",
    is_flag=True,
    help="Spread the readers over time zones and simulate the day: each zone gets the edition at 06:00 its time.",
)
def demo(directory: Path, count: int, zones: bool) -> None:
    """Send a real edition over real SMTP to a built-in local server, and show where to look.

    Creates DIR with a config, a SQLite database of sample articles and readers, runs an
    SMTP server on 127.0.0.1 that stores every message it receives in DIR/outbox, and
    sends today's edition through the same pipeline production uses.

    With --zones the readers live in eleven time zones ([newsletter] per_reader_timezone):
    the clock is pinned to the newsroom's send time and moved to each zone's morning in
    turn, and each release is printed as it happens.

    \b
    Example:
      newsletter demo --subscribers 10000
      newsletter demo --zones
    """
    from newsletter.demo.newsroom import run_demo

    click.echo(f"demo in {directory.resolve()}: {counted(count, 'subscriber')}, local SMTP server on 127.0.0.1")
    progress = Progress(enabled=sys.stderr.isatty())
    try:
        result = run_demo(directory, count, SystemClock(), on_progress=progress, zones=zones)
    finally:
        progress.close()
    report, stats = result.report, result.report.stats
    if result.zone_steps:
        _print_zone_steps(result.zone_steps)
        total = sum(step.sent for step in result.zone_steps)
        click.echo(f"{report.day}: sent {total} across {counted(len(result.zone_steps), 'release')}")
    else:
        click.echo(f"{report.day}: {report.message}")
    if stats is not None and not result.zone_steps:
        click.echo(f"messages sent:      {stats.sent}")
        click.echo(f"elapsed:            {stats.elapsed:.2f} s")
        click.echo(f"messages/second:    {stats.rate:.0f}")
    click.echo(f"delivered to outbox: {counted(result.delivered, 'message')} in {result.outbox}/new")
    click.echo(f"preview of the edition: {result.preview}")
    click.echo(f'read one message:   less "$(ls -d {result.outbox}/new/* | head -n 1)"')
    click.echo(f"its configuration:  {result.config_path}")
    if not report.ok:
        sys.exit(1)
