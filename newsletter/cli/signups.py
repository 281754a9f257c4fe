"""Sign-up mails from the command line: a fresh confirmation link, and the outbox they wait in.

Both commands go through the same outbox as the web form: the mail is queued first and
then sent, so a mail server that is down loses nothing, and the scheduler (or
``send --scheduled``) retries what is left.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from newsletter.cli.base import App, pass_app
from newsletter.cli.readers import subscribers
from newsletter.editions import counted
from newsletter.outbox import OutboxReport, deliver_outbox, queue_signup_mail
from newsletter.store.models import OutboxKind, OutboxStatus
from newsletter.store.outbox import outbox_counts, waiting_mails
from newsletter.subscribers import escape_controls, pending_reader
from newsletter.transports import Transport

ERROR_WIDTH = 70  # `subscribers outbox` cuts longer errors, with an ellipsis


def _transport_factory(app: App) -> Callable[[], Transport]:
    from newsletter.publish import transport_factory

    return transport_factory(app.config)


@subscribers.command("resend-confirmation")
@click.argument("email")
@pass_app
def subscribers_resend_confirmation(app: App, email: str) -> None:
    """Send a pending reader a fresh confirmation link (queued first, so nothing is lost).

    Only for readers still pending: an active reader has nothing to confirm, and one who
    unsubscribed or bounced comes back only by signing up again through the form. If the
    mail server does not take it now, the link stays queued and is retried.

    \b
    Example:
      newsletter subscribers resend-confirmation ana@example.org
    """
    now = app.clock.now()
    with app.store.session() as session:
        reader = pending_reader(session, email=email)
        address, subscriber_id = reader.email, reader.id
        mail_id = queue_signup_mail(session, subscriber_id, address, OutboxKind.CONFIRM, now)
    report = deliver_outbox(app.signing_context, _transport_factory(app), limit=1, only=mail_id)
    if report.sent:
        click.echo(escape_controls(f"sent a new confirmation link to {address}"))
    else:
        why = report.last_error or "another process is sending it"
        click.echo(
            escape_controls(
                f"queued a new confirmation link to {address}, not sent yet: {why}; "
                "it is retried automatically (or run `newsletter subscribers outbox --send`)"
            )
        )


@subscribers.command("outbox")
@click.option("--send", "send_now", is_flag=True, help="Deliver the mails that are due now.")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="How many to show or send."
)
@pass_app
def subscribers_outbox(app: App, send_now: bool, limit: int) -> None:
    """Show the sign-up mails waiting to go out (confirmations, "you already get it"); --send delivers them.

    Each line is the mail's id, kind, address, attempts, next attempt (UTC) and the last
    error. A mail is retried after a minute, then with a doubling wait up to an hour, and
    given up after 48 hours; the scheduler and `send --scheduled` deliver them on their
    own, so --send is for when you do not want to wait.

    \b
    Example:
      newsletter subscribers outbox
      newsletter subscribers outbox --send
    """
    if send_now:
        report = deliver_outbox(app.signing_context, _transport_factory(app), limit=limit)
        click.echo(escape_controls(report.summary()))
        if _nothing_went(report):
            sys.exit(1)
        return
    with app.store.session() as session:
        rows = [
            (
                str(m.id),
                m.kind.value,
                escape_controls(m.recipient),
                counted(m.attempts, "attempt"),
                m.next_attempt_at.strftime("%Y-%m-%d %H:%M"),
                escape_controls(_cut(m.last_error, ERROR_WIDTH)),
            )
            for m in waiting_mails(session, limit)
        ]
        counts = outbox_counts(session)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        cells = [row[0].rjust(widths[0]), *(cell.ljust(widths[i + 1]) for i, cell in enumerate(row[1:]))]
        click.echo("  ".join(cells).rstrip())
    if not rows:
        click.echo("nothing waiting")
    click.echo(", ".join(f"{counts[s]} {s.value}" for s in OutboxStatus))


def _nothing_went(report: OutboxReport) -> bool:
    """Exit 1 for cron when mails were due and the server took none of them."""
    return not report.sent and bool(report.deferred or report.given_up)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
