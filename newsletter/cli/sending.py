"""Editions going out: ``preview``, ``send``, ``status``, the ``scheduler`` daemon and ``worker``."""

from __future__ import annotations

import logging
import sys
from datetime import date
from pathlib import Path
from typing import Any

import click

from newsletter import routes
from newsletter.cli.base import DATE, App, Progress, cli, graceful_stop, pass_app
from newsletter.context import Context
from newsletter.editions import counted
from newsletter.errors import UsageError
from newsletter.render import GMAIL_CLIP_BYTES, fill_markers
from newsletter.store import Store
from newsletter.store import deliveries as delivery_log
from newsletter.store.bounces import Feedback, edition_feedback
from newsletter.store.editions import edition_for, list_editions
from newsletter.store.models import DeliveryStatus, Edition, EditionStatus
from newsletter.store.readers import count_subscribers
from newsletter.subscribers import escape_controls

# --- editions ---------------------------------------------------------------------------


@cli.command()
@click.option("--date", "day", type=DATE, help="Edition date (default: the next edition readers get).")
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

    Without --date it is the next edition readers get: the one due now if it has not gone
    out, else tomorrow's with the articles published so far.

    \b
    Example:
      newsletter preview --date 2026-11-24 --out /tmp/edition.html
    """
    from newsletter.preparation import next_edition_day, preview_edition

    day = day or next_edition_day(app.context)
    shown = preview_edition(app.context, day)
    html, plain, markers = shown.html, shown.text, shown.markers
    if shown.selection is None:
        note = f"edition of {day} ({shown.state}): {counted(shown.story_count, 'article')}"
    else:  # not started: `send` makes it again from the articles as they are
        note = f"edition of {day} as it would go out now ({shown.state}): {counted(shown.story_count, 'article')}"
    too_old = shown.selection.too_old_note(app.config.newsletter.max_age_hours) if shown.selection else ""
    source, escape = (plain, False) if text else (html, True)
    content = fill_markers(
        source,
        markers,
        greeting="Good morning, Ana",
        unsubscribe_url=routes.url(app.config.web.base_url, routes.UNSUBSCRIBE, token="PREVIEW"),
        escape=escape,
    )
    out.write_text(content, encoding="utf-8")
    size = shown.html_bytes
    part = f"text {len(content.encode()) / 1024:.1f} KB" if text else f"HTML {size / 1024:.1f} KB"
    click.echo(f"wrote {out} ({note}; {part})")
    if too_old:
        click.echo(f"warning: {too_old}", err=True)
    if size > GMAIL_CLIP_BYTES:
        click.echo("warning: the HTML is over 100 KB; Gmail will clip it and hide the footer", err=True)


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
@click.option(
    "--ignore-preflight",
    is_flag=True,
    help="Send even if preflight finds errors (an edition the scheduler held, say).",
)
@pass_app
def send(
    app: App,
    day: date | None,
    dry_run: bool,
    to_address: str | None,
    enqueue_only: bool,
    scheduled: bool,
    ignore_preflight: bool,
) -> None:
    """Prepare the edition and send it to every active subscriber who has not had it yet.

    Running it again resumes: nobody who already has the edition gets it twice. Before the
    first message goes out, preflight checks the edition (`newsletter preflight`), and with
    [preflight] block_on_error errors stop the send; --ignore-preflight sends it anyway.

    \b
    Examples:
      newsletter send --dry-run
      newsletter send --to me@example.org
      newsletter send --date 2026-11-24
      newsletter send --date 2026-11-24 --ignore-preflight
      newsletter send --enqueue-only      # PostgreSQL: workers do the sending
      newsletter send --scheduled         # from cron every 5 minutes: sends once, when due
    """
    from newsletter.errors import PreflightHeldError
    from newsletter.preflight.gate import send_gate
    from newsletter.publish import send_edition, send_test_copy
    from newsletter.subscribers import normalise_email

    if scheduled:
        conflicting = day is not None or dry_run or bool(to_address) or enqueue_only or ignore_preflight
        _send_scheduled(app, conflicting=conflicting)
        return
    if to_address:
        if dry_run or enqueue_only or ignore_preflight:
            raise UsageError("--to sends one test copy and records nothing; it cannot be combined with "
                             "--dry-run, --enqueue-only or --ignore-preflight")  # fmt: skip
        from newsletter.preparation import next_edition_day

        address = normalise_email(to_address)
        day = day or next_edition_day(app.context)
        reply = send_test_copy(app.signing_context, day, address)
        click.echo(f"test copy of the edition of {day} sent to {address}: {reply}")
        return
    progress = Progress(enabled=sys.stderr.isatty() and not dry_run)
    ctx = app.signing_context
    gate = send_gate(ctx, ignore=ignore_preflight or dry_run)
    with graceful_stop() as stop:
        try:
            report = send_edition(
                ctx,
                day=day,
                dry_run=dry_run,
                stop=stop,
                on_progress=progress,
                enqueue_only=enqueue_only,
                gate=gate,
            )
        except PreflightHeldError as exc:  # the findings, then the one line every error gets
            for check, message in exc.errors:
                click.echo(f"preflight error: {check}: {escape_controls(message)}", err=True)
            raise
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


def _scheduler_context(app: App, store: Store) -> Context:
    """The command's context on ``store`` (see ``_scheduler_store``); it signs links, so without
    a secret key it stops here."""
    app.config.require_secret_key()
    return Context(app.config, store, app.clock, app.tokens)


def _send_scheduled(app: App, conflicting: bool) -> None:
    """``send --scheduled``: cron's view of the morning; silent unless it sends or something is wrong."""
    from newsletter.due import feed_fetcher, send_scheduled

    if conflicting:
        raise UsageError(
            "--scheduled decides the edition itself: use it without --date, --dry-run, --to, --enqueue-only "
            "or --ignore-preflight"
        )
    store = _scheduler_store(app, "send --scheduled")
    try:
        with graceful_stop() as stop:
            ctx = _scheduler_context(app, store)
            result = send_scheduled(ctx, fetch=feed_fetcher(ctx), stop=stop)
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
    from newsletter.due import feed_fetcher
    from newsletter.scheduler import EditionScheduler

    ours = logging.getLogger("newsletter")
    ours.setLevel(min(ours.level, logging.INFO))  # a daemon's log is its only voice: every event
    theirs = logging.getLogger("apscheduler")  # its warnings, in the same format on the same stream
    theirs.handlers[:] = ours.handlers
    theirs.setLevel(logging.WARNING)
    theirs.propagate = False
    store = _scheduler_store(app, "scheduler")
    try:
        ctx = _scheduler_context(app, store)
        code = EditionScheduler(ctx, fetch=feed_fetcher(ctx)).run()
    finally:
        store.dispose()
    sys.exit(code)


@cli.command()
@click.option("--date", "day", type=DATE, help="Show one edition in detail.")
@click.option("--limit", type=click.IntRange(1, 1000), default=7, show_default=True, help="How many recent editions.")
@pass_app
def status(app: App, day: date | None, limit: int) -> None:
    """Show recent editions with their delivery counts, the latest errors, and the next scheduled send.

    Bounces, sender-side rejections and complaints read from the mailbox are counted under
    each edition that had any, with a warning when complaints pass 0.1 % of the mail
    delivered, or when receiving servers refused mail because of the sender.

    \b
    Example:
      newsletter status --date 2026-11-24
    """
    if day is not None:
        _show_edition(app, day)
        return
    with app.store.session() as session:
        editions = list(list_editions(session, limit))
        subs = count_subscribers(session)
        feedback = edition_feedback(session, [e.id for e in editions])
    if not editions:
        click.echo("no editions yet")
    for edition in editions:
        with app.store.engine.connect() as conn:
            counts = delivery_log.status_counts(conn, edition.id)
            errors = delivery_log.recent_errors(conn, edition.id, limit=2)
            gave_up = delivery_log.given_up_count(conn, edition.id)
        total = sum(counts.values())
        detail = ", ".join(f"{n:,} {s}" for s, n in counts.items() if n) or "no deliveries"
        if gave_up:
            detail += f" ({gave_up:,} given up after retries)"
        click.echo(
            f"{edition.date}  {edition.status:<8} {counted(edition.article_count, 'article'):>12}  "
            f"{counted(total, 'reader'):>13}: {detail}  — {edition.subject}"
        )
        if edition.status == EditionStatus.SENDING:
            for line in _zone_lines(app, edition, limit=3):
                click.echo(f"            {line}")
            click.echo(f"            still open: `newsletter send --date {edition.date}` resumes it")
        for email, state, error in errors:
            click.echo(f"            {state}: {email}: {error}")
        for line in _feedback_lines(feedback[edition.id]):
            click.echo(f"            {line}")
    click.echo("subscribers: " + ", ".join(f"{n:,} {s}" for s, n in subs.items()))
    _show_workers(app, editions)
    from newsletter.scheduler import schedule_summary

    for line in schedule_summary(app.context):
        click.echo(line)


def _show_edition(app: App, day: date) -> None:
    """`status --date D`: one edition in full, its window, stories, deliveries and failures."""
    from newsletter.due import local_text
    from newsletter.preparation import plan_for
    from newsletter.store.articles import edition_articles

    zone = app.config.newsletter.zone
    with app.store.session() as session:
        edition = edition_for(session, day)
        stories = [(a.id, a.title) for a in edition_articles(session, edition.id)] if edition else []
        feedback = edition_feedback(session, [edition.id])[edition.id] if edition else None
    if edition is None:
        selection = plan_for(app.context, day, look_ahead=True)
        window = selection.plan.window
        click.echo(f"no edition for {day} yet: it would hold {counted(selection.plan.story_count, 'article')} now, "
                   f"published {local_text(window.start, zone)} to {local_text(window.end, zone)} "
                   f"(`newsletter preview --date {day}` shows it)")  # fmt: skip
        return
    with app.store.engine.connect() as conn:
        counts = delivery_log.status_counts(conn, edition.id)
        errors = delivery_log.recent_errors(conn, edition.id, limit=20)
        gave_up = delivery_log.given_up_count(conn, edition.id)
    click.echo(f"edition of {day} ({edition.status}): {edition.subject}")
    click.echo(
        f"  window:   published {local_text(edition.window_start, zone)} to {local_text(edition.window_end, zone)}"
    )
    times = [("made", edition.created_at), ("started", edition.started_at), ("finished", edition.finished_at)]
    click.echo("  when:     " + "; ".join(f"{what} {local_text(at, zone)}" for what, at in times if at))
    click.echo(f"  articles: {len(stories) or edition.article_count}")
    for article_id, title in stories:
        click.echo(f"    #{article_id} {title}")
    total = sum(counts.values())
    detail = ", ".join(f"{n:,} {s}" for s, n in counts.items() if n) or "none yet"
    click.echo(f"  readers:  {total:,}: {detail}")
    if gave_up:
        click.echo(f"  gave up:  {gave_up:,} deferred after {app.config.delivery.give_up_hours} h of retries")
    if feedback is not None:
        for line in _feedback_lines(feedback):
            click.echo(f"  {line}")
    if edition.status == EditionStatus.SENDING:
        for line in _zone_lines(app, edition, limit=50):
            click.echo(f"  {line}")
        click.echo(f"  still open: `newsletter send --date {day}` resumes it")
    if errors:
        click.echo(f"  latest failures and deferrals ({len(errors)}):")
        for email, state, error in errors:
            click.echo(f"    {state}: {email}: {error}")


def _zone_lines(app: App, edition: Edition, limit: int) -> list[str]:
    """The zones still to come of an edition sent zone by zone, soonest first (none otherwise)."""
    from newsletter.due import zone_text
    from newsletter.publish import zones_to_come

    zones = zones_to_come(app.context, edition)
    if not zones:
        return []
    lines = [f"zone by zone: {counted(len(zones), 'zone')} still to come"]
    lines += [f"  {zone_text(zone, app.config.newsletter.zone)}" for zone in zones[:limit]]
    if len(zones) > limit:
        lines.append(f"  and {len(zones) - limit} more (`newsletter status --date {edition.date}` lists them)")
    return lines


SENDER_DETAIL_WIDTH = 160  # the example diagnostic of a sender-side rejection, cut with "…"


def _feedback_lines(feedback: Feedback) -> list[str]:
    """What came back about an edition, as `status` says it: nothing at all when nothing did.

    Complaints get a warning above 0.1 % of delivered mail (Gmail and Yahoo ask bulk
    senders for under 0.3 %, so 0.1 % is where to act); sender-side rejections get a loud
    line, since no reader's status changes for them and only the sender can fix them.
    """
    if not feedback.any:
        return []
    parts = [
        counted(feedback.hard, "hard bounce"),
        counted(feedback.soft, "soft bounce"),
        counted(feedback.sender, "sender-side rejection"),
        counted(feedback.complaints, "complaint"),
    ]
    rate = ""
    if feedback.complaints:
        rate = f" ({_percent(feedback.complaint_rate)} of {feedback.delivered:,} delivered)"
    lines = ["feedback: " + ", ".join(parts) + rate]
    if feedback.alarming:
        lines.append(
            f"warning: complaints are {_percent(feedback.complaint_rate)} of the mail delivered, above the 0.1 % "
            "to act at (Gmail and Yahoo require bulk senders to stay under 0.3 %): check that every reader "
            "signed up themselves and that the unsubscribe link is easy to find"
        )
    if feedback.sender:
        commonest = ": ".join(p for p in (feedback.sender_status, feedback.sender_detail) if p)
        example = f" (most often {escape_controls(_cut(commonest, SENDER_DETAIL_WIDTH))})" if commonest else ""
        lines.append(
            f"SENDER REJECTED: the mail servers of {counted(feedback.sender, 'reader')} refused this edition "
            f"because of the sender, not the reader{example}. The sender must act: check SPF, DKIM and DMARC for the "
            "From domain, and whether the sending IP or domain is on a blocklist"
        )
    return lines


def _percent(rate: float) -> str:
    """'0.25 %'; two decimals, as the thresholds that matter are tenths of a percent."""
    return f"{rate * 100:.2f} %"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


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
            counts = delivery_log.status_counts(conn, edition.id)
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
    progress = Progress(enabled=sys.stderr.isatty())
    with graceful_stop() as stop:
        try:
            report = run_worker(
                app.signing_context,
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
