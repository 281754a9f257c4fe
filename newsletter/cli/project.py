"""Setting up: ``init``, ``db upgrade`` and the ``demo`` of a whole morning."""

from __future__ import annotations

import os
import secrets
import sys
from importlib import resources
from pathlib import Path

import click

from newsletter.cli.base import App, Progress, cli, pass_app
from newsletter.clock import SystemClock
from newsletter.config import load_config
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

    click.echo(f"demo in {directory.resolve()}: {counted(count, 'subscriber')}, local SMTP server on 127.0.0.1")
    progress = Progress(enabled=sys.stderr.isatty())
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
    click.echo(f"delivered to outbox: {counted(result.delivered, 'message')} in {result.outbox}/new")
    click.echo(f"preview of the edition: {result.preview}")
    click.echo(f'read one message:   less "$(ls -d {result.outbox}/new/* | head -n 1)"')
    click.echo(f"its configuration:  {result.config_path}")
    if not report.ok:
        sys.exit(1)
