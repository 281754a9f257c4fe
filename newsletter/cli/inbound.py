"""Mail that comes back: ``newsletter mailbox process`` (and its old name, ``unsubscribes process``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from newsletter.cli.base import App, cli, pass_app
from newsletter.errors import UsageError
from newsletter.inbound import Outcome, configured_inboxes, process
from newsletter.inboxes import Inbox, open_path

_COLUMNS = (("message", 26), ("class", 11), ("status", 7), ("recipients", 30))


@cli.group()
def mailbox() -> None:
    """Bounces, spam complaints and mailed unsubscribe requests.

    \b
    Example:
      newsletter mailbox process                       # [bounces] maildir and [imap]
      newsletter mailbox process --dry-run --json ~/bounces.mbox
    """


def _openers(app: App, path: Path | None) -> list[Callable[[], Inbox]]:
    if path is not None:
        return [lambda: open_path(path)]
    openers = configured_inboxes(app.config)
    if not openers:
        raise UsageError(
            f"give a PATH (a Maildir, an mbox file or a message file), or set [bounces] maildir "
            f"or [imap] host in {app.config.source}"
        )
    return openers


def _cell(text: str, width: int) -> str:
    text = " ".join(text.split())
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def _table_row(outcome: Outcome) -> str:
    values = (outcome.message, outcome.kind, outcome.status or "-", ", ".join(outcome.recipients) or "-")
    line = " ".join(_cell(value, width) for value, (_, width) in zip(values, _COLUMNS, strict=True))
    detail = f"\n{' ' * 27}{outcome.diagnostic[:200]}" if outcome.diagnostic else ""
    return f"{line} {outcome.action}{detail}"


def _run(app: App, path: Path | None, dry_run: bool, as_json: bool) -> None:
    shown = False

    def show(outcome: Outcome) -> None:
        nonlocal shown
        if not (as_json or shown):  # the heading waits for a row: an error comes alone
            click.echo(" ".join(_cell(name, width) for name, width in _COLUMNS) + " action")
        shown = True
        click.echo(json.dumps(outcome.as_json(), ensure_ascii=False) if as_json else _table_row(outcome))

    report = process(
        app.signing_context,
        _openers(app, path),
        dry_run=dry_run,
        on_outcome=show,
    )
    if not as_json:
        click.echo(("dry run, nothing changed: " if dry_run else "") + report.summary())
    for line in report.warnings():
        click.echo(line, err=True)


_PATH = click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))


@mailbox.command("process")
@_PATH
@click.option("--dry-run", is_flag=True, help="Change nothing: show what each message is and what would be done.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message, per line.")
@pass_app
def mailbox_process(app: App, path: Path | None, dry_run: bool, as_json: bool) -> None:
    """Act on the bounces, complaints and unsubscribe requests waiting in the mailbox.

    Reads PATH (a Maildir; an mbox or single message file only with --dry-run), or else
    the configured [bounces] maildir and [imap] mailbox. A hard bounce marks the reader
    bounced; soft bounces on [bounces] soft_bounces different editions within
    soft_window_days do too; a spam complaint unsubscribes the reader; a bounce for the
    sender's own reasons (spam, policy, DMARC, blocklists) changes no reader and is
    reported. Each handled message is marked seen and moved to "Processed"; a message
    nothing could be done with stays in the mailbox, unread, for a person to read.

    \b
    With --json each message is one line:
      {"message": ..., "class": "hard"|"soft"|"sender"|"complaint"|"unsubscribe"|
       "autoreply"|"unknown", "recipients": [...], "status": "5.1.1",
       "diagnostic": "...", "action": "..."}

    \b
    Example:
      newsletter mailbox process
      newsletter mailbox process --dry-run --json /var/mail/bounces
    """
    _run(app, path, dry_run, as_json)


@cli.group()
def unsubscribes() -> None:
    """The earlier name of `mailbox`, still read (cron lines that use it keep working).

    \b
    Example:
      newsletter unsubscribes process ~/Maildir/.unsubscribe
    """


@unsubscribes.command("process")
@_PATH
@click.option("--dry-run", is_flag=True, help="Change nothing: show what each message is and what would be done.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message, per line.")
@pass_app
def unsubscribes_process(app: App, path: Path | None, dry_run: bool, as_json: bool) -> None:
    """The same as `newsletter mailbox process`.

    \b
    Example:
      newsletter unsubscribes process ~/Maildir/.unsubscribe
    """
    _run(app, path, dry_run, as_json)
