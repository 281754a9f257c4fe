"""The morning's flow for one date: prepare the edition once, then send it to everyone due.

Every trigger (the scheduler, ``send --scheduled`` from cron, staff running ``send``) comes
through ``send_edition``. Preparing is idempotent (one edition per date, articles assigned
in the same transaction), and sending holds the edition's lock and works from the delivery
log, so a second trigger, a crash or a restart can only resume, never start over.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from newsletter import release, routes
from newsletter.clock import Clock
from newsletter.codes import CLICK, ReaderCodes
from newsletter.config import Config
from newsletter.context import Context
from newsletter.delivery import (
    DeliveryRun,
    Personal,
    Personaliser,
    RateLimiter,
    RunStats,
)
from newsletter.dkim import load_signer
from newsletter.editions import (
    counted,
)
from newsletter.errors import ConfigError
from newsletter.message import EditionHeaders, MessageTemplate, Reader
from newsletter.preparation import (
    edition_as_it_stands,
    make_edition,
    next_edition_day,
    plan_for,
    render_plan,
    resolve_day,
    waiting_note,
)
from newsletter.release import ZoneRelease
from newsletter.render import Markers, RenderedEdition
from newsletter.returnpath import return_paths
from newsletter.store import Store, worker_identity
from newsletter.store import deliveries as delivery_log
from newsletter.store.editions import edition_for, has_gone_out
from newsletter.store.locks import DatabaseLock, process_is_gone
from newsletter.store.models import (
    DeliveryStatus,
    Edition,
    EditionStatus,
    SubscriberStatus,
)
from newsletter.store.readers import active_zone_counts, count_subscribers
from newsletter.tokens import UNSUBSCRIBE, Tokens
from newsletter.tracking import untrack
from newsletter.transports import (
    MaildirPool,
    MaildirTransport,
    PoolFactory,
    SMTPPool,
    SMTPTransport,
    Transport,
    check_reachable,
)

log = logging.getLogger(__name__)
# Threads that sign messages ahead of the send loop when an RSA key signs: its private-key
# operation (a quarter of a millisecond) releases the GIL, so two keep both cores of a small
# machine busy. An Ed25519 signature takes a tenth of that, less than the hand-over of the
# GIL between threads costs: measured here, signing it in the loop itself sends a fifth more.
PREPARE_THREADS = 2


@dataclass
class SendReport:
    """What a send did, in words a person and a cron mail can read."""

    day: date
    outcome: str  # skipped | already-sent | sent | incomplete | interrupted | failed | dry-run | enqueued
    message: str
    stats: RunStats | None = None
    subject: str = ""
    gave_up: bool = False  # deferred messages were turned into failures: worth a cron mail

    @property
    def ok(self) -> bool:
        return self.outcome in ("skipped", "already-sent", "sent", "dry-run", "enqueued") and not self.gave_up


# --- personalising ---------------------------------------------------------------------


def edition_headers(config: Config, subject: str) -> EditionHeaders:
    return EditionHeaders(
        subject=subject,
        from_name=config.from_name,
        from_address=config.sender.from_address,
        reply_to=config.sender.reply_to,
        list_id=config.list_id,
        list_name=config.newsletter.name,
        envelope_from=config.bounces.return_address(config.sender),
    )


def compile_template(config: Config, edition: Edition, subject: str | None = None) -> MessageTemplate:
    rendered = RenderedEdition(
        html=edition.html, text=edition.text, web_html=edition.web_html, markers=Markers.for_nonce(edition.nonce)
    )
    return MessageTemplate.compile(rendered, edition_headers(config, subject or edition.subject))


def unsubscribe_mailbox(config: Config) -> str:
    return config.sender.unsubscribe_address or config.sender.from_address


def message_id_parts(config: Config, edition: Edition) -> tuple[str, str]:
    """Message-ID = prefix + delivery id + suffix: stable per delivery, unique across installations.

    A copy resent after a crash carries the same Message-ID, which many mailbox providers
    use to drop the duplicate.
    """
    return f"<{edition.date:%Y%m%d}.", f".{edition.nonce}@{config.sender.domain}>"


def personaliser(config: Config, edition: Edition, template: MessageTemplate, tokens: Tokens) -> Personaliser:
    """Per reader: a signed token, two links, a Message-ID, a return path and the DKIM
    signature over them; everything else was done once."""
    unsubscribe = routes.prefix(config.web.base_url, routes.UNSUBSCRIBE)
    mailbox = unsubscribe_mailbox(config)
    prefix, suffix = message_id_parts(config, edition)
    paths = return_paths(config)
    clicks = ReaderCodes(config.require_secret_key(), CLICK)
    signer = load_signer(config.dkim)
    edition_id = edition.id

    def personalise(work: delivery_log.Work, now: datetime) -> Personal:
        token = tokens.make(UNSUBSCRIBE, work.subscriber_id, work.email, edition_id)
        code = paths.code(edition_id, work.subscriber_id)
        reader = Reader(
            email=work.email,
            name=work.name,
            unsubscribe_url=unsubscribe + token,
            unsubscribe_mailto=f"mailto:{mailbox}?subject=unsubscribe%20{token}",
            message_id=f"{prefix}{work.delivery_id}{suffix}",
            return_code=code,
            click_code=clicks.code(edition_id, work.subscriber_id),
        )
        parts = template.render_parts(reader, now)
        # One buffer: copying 60 KB is a few microseconds, while each separate part would
        # cost the send loop a memoryview, an iovec and a deque step (about a tenth of the
        # sending rate with click tracking's two parts per link).
        data = b"".join(parts)
        if signer is not None:
            return Personal(paths.mail_from(code), (signer.sign(parts, now, whole=data), data))
        return Personal(paths.mail_from(code), data)

    return personalise


_RESERVED_TLDS = ("example", "test", "invalid", "localhost")  # RFC 2606 and 6761
_RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def is_reserved_domain(domain: str) -> bool:
    """A domain set aside for examples: mail "from" it is refused or junked everywhere."""
    domain = domain.lower().rstrip(".")
    return domain.rsplit(".", 1)[-1] in _RESERVED_TLDS or any(
        domain == d or domain.endswith("." + d) for d in _RESERVED_DOMAINS
    )


def refuse_example_sender(config: Config) -> None:
    """Stop a bulk send to real readers from the example configuration's sender address.

    Sending through a server on this machine (the demo, a test sink, a local relay under
    trial) is allowed; through any other server, the first real edition would go out as
    news.example.com, and mailbox providers would bin it.
    """
    if config.smtp.host.lower() in _LOOPBACK or config.smtp.host.startswith("127."):
        return
    if is_reserved_domain(config.sender.domain):
        raise ConfigError(
            config.source,
            "sender.from_address",
            f"expected an address at your own domain; {config.sender.from_address} is an example address, "
            f"and an edition from it to real readers through {config.smtp.host} would be refused or junked "
            "(`send --to` and the demo still work with it)",
        )


def transport_factory(config: Config) -> Callable[[], Transport]:
    """One blocking connection at a time: for single messages (test copies, confirmations)."""
    if config.delivery.transport == "maildir":
        path = Path(config.delivery.maildir)
        return lambda: MaildirTransport(path)
    return lambda: SMTPTransport(config.smtp)


def pool_factory(config: Config) -> PoolFactory:
    """The connections a bulk send uses: ``smtp.connections`` SMTP sessions, or a Maildir."""
    if config.delivery.transport == "maildir":
        path = Path(config.delivery.maildir)
        return lambda is_durable: MaildirPool(path, is_durable)
    return lambda is_durable: SMTPPool(config.smtp, config.smtp.connections, is_durable)


# --- sending ---------------------------------------------------------------------------


def _release_dead_claims(store: Store, edition_id: int, clock: Clock, retry_deferred: bool) -> None:
    with store.engine.begin() as conn:
        dead = [h for h in delivery_log.claim_holders(conn, edition_id) if process_is_gone(h)]
        delivery_log.release_dead_claims(conn, edition_id, dead)
        now = clock.now()
        delivery_log.recover(conn, edition_id, now, deferred_due=True)
        if retry_deferred:
            delivery_log.retry_deferred_now(conn, edition_id)


def give_up_stale(ctx: Context, edition: Edition) -> str:
    """Yesterday's news is not worth retrying for ever: old deferrals become failures.

    Returns what was given up on, in words for the run's summary ("" when nothing was),
    so a resumed run never hides the readers it stopped trying.
    """
    hours = ctx.config.delivery.give_up_hours
    if ctx.clock.now() - edition.window_end < timedelta(hours=hours):
        return ""
    with ctx.store.engine.begin() as conn:
        count, example = delivery_log.give_up_deferred(conn, edition.id)
    if not count:
        return ""
    said = f"gave up on {count} deferred after {hours} h" + (f" (last reply: {example[:200]})" if example else "")
    log.warning("edition %s: %s", edition.date, said)
    return said


def zone_plan(ctx: Context, day: date) -> list[ZoneRelease]:
    """When the readers of each zone get the edition of ``day``: one grouped count of the list.

    A send reads it once and hands it to the release and to the finish, so a zone's run
    does not count the whole list twice.
    """
    with ctx.store.reading() as session:
        counts = active_zone_counts(session)
    n = ctx.config.newsletter
    return release.plan(day, n.send_time, n.zone, counts)


def zones_to_come(ctx: Context, edition: Edition, plan: list[ZoneRelease] | None = None) -> list[ZoneRelease]:
    """The zones whose readers' morning has not come yet for ``edition`` (none unless it goes zone by zone)."""
    if edition.released_until is None:
        return []
    if plan is None:
        plan = zone_plan(ctx, edition.date)
    return release.still_to_come(plan, edition.released_until)


def release_zones(ctx: Context, edition: Edition, plan: list[ZoneRelease] | None = None) -> list[ZoneRelease]:
    """Give the readers of every zone whose morning has come their deliveries; returns those zones.

    Run by every sender before it claims (``send``, the scheduler, ``newsletter worker``):
    making the rows is idempotent and ``released_until`` only records how far it got, so
    two processes releasing at once, or one killed half-way, leave nobody out and nobody
    with two copies.
    """
    if edition.released_until is None and edition.enqueued_at is not None:
        return []  # sent to everyone at once
    now = ctx.clock.now()
    if plan is None:
        plan = zone_plan(ctx, edition.date)
    come = release.due(plan, edition.released_until, now)
    for zone in come:
        if zone.warning:
            log.warning("edition %s: %s", edition.date, zone.warning)
    delivery_log.enqueue(ctx.store.engine, edition.id, zones={r.zone for r in come})
    with ctx.store.engine.begin() as conn:
        delivery_log.mark_released(conn, edition.id, now)
    if come and edition.enqueued_at is not None:
        readers = sum(r.readers for r in come)
        log.info(
            "edition %s: released to %s in %s",
            edition.date,
            counted(readers, "reader"),
            ", ".join(r.label for r in come),
        )
    edition.released_until = now
    return come


def finish_edition(ctx: Context, edition_id: int, plan: list[ZoneRelease] | None = None) -> dict[DeliveryStatus, int]:
    """Store the counts, and mark the edition sent once nothing is open and no zone waits any more.

    ``plan`` is the zone plan the run released from (``zone_plan``), when it read one.
    """
    with ctx.store.session() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
    # Outside that session: on SQLite a second transaction inside it would wait for its lock.
    waiting = bool(zones_to_come(ctx, edition, plan))
    with ctx.store.engine.begin() as conn:
        counts = delivery_log.status_counts(conn, edition_id)
        delivery_log.store_counts(conn, edition_id, counts)
        if not waiting and not any(counts[s] for s in delivery_log.OPEN_STATUSES):
            delivery_log.mark_sent(conn, edition_id, ctx.clock.now())
    return counts


def send_edition(
    ctx: Context,
    *,
    day: date | None = None,
    dry_run: bool = False,
    retry_deferred: bool = True,
    pools: PoolFactory | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    enqueue_only: bool = False,
    gate: Callable[[Edition], None] | None = None,
) -> SendReport:
    """Prepare the edition for ``day`` and send it to every active subscriber not yet served.

    ``enqueue_only`` creates the delivery rows and leaves the sending to ``newsletter worker``
    processes (PostgreSQL). ``gate`` sees the edition as made, before its first delivery
    exists, and raises to stop it going out (preflight); an edition already part-sent is
    resumed without it, since holding it would split the list.
    """
    config, store, clock = ctx.config, ctx.store, ctx.clock
    day = resolve_day(config, clock, day)
    if dry_run:
        return _dry_run(ctx, day)
    if pools is None and config.delivery.transport == "smtp":
        refuse_example_sender(config)  # before anything is made or recorded
    edition, selection = make_edition(ctx, day)
    too_old = selection.too_old_note(config.newsletter.max_age_hours) if selection else ""
    if edition.status == EditionStatus.SKIPPED:
        message = f"no articles for the edition of {day}: nothing sent" + waiting_note(store, clock, edition.window_end)
        return SendReport(day, "skipped", message + (f"; {too_old}" if too_old else ""), subject=edition.subject)
    if edition.status == EditionStatus.SENT:
        return SendReport(
            day,
            "already-sent",
            f"the edition of {day} was already sent to {counted(edition.sent_count, 'reader')}; nothing to do"
            + waiting_note(store, clock, edition.window_end),
            subject=edition.subject,
        )
    if pools is None and config.delivery.transport == "smtp" and not enqueue_only:
        check_reachable(config.smtp)  # unreachable or bad credentials: say so before checking or claiming anything
    if gate is not None and edition.status == EditionStatus.READY:
        gate(edition)
    # Zone by zone, each send reads the zone plan once, for both its release and its finish.
    goes_by_zone = config.newsletter.per_reader_timezone or edition.released_until is not None
    plan = zone_plan(ctx, edition.date) if goes_by_zone else None
    if enqueue_only:
        edition = _start(ctx, edition.id, plan)
        count = finish_edition(ctx, edition.id, plan)
        waiting = sum(count[s] for s in delivery_log.OPEN_STATUSES)
        return SendReport(
            day,
            "enqueued",
            f"{waiting} deliveries of the edition of {day} wait for `newsletter worker`",
            subject=edition.subject,
        )
    with DatabaseLock(store, f"edition:{day.isoformat()}", clock):
        edition = _start(ctx, edition.id, plan)
        gave_up = give_up_stale(ctx, edition)
        _release_dead_claims(store, edition.id, clock, retry_deferred)
        stats = run_edition(ctx, edition, worker=worker_identity(), pools=pools, stop=stop, on_progress=on_progress)
        counts = finish_edition(ctx, edition.id, plan)
    report = _report(day, edition.subject, stats, counts)
    if gave_up:
        report.message += f"; {gave_up}"
        report.gave_up = True
    if too_old:
        report.message += f"; {too_old}"
    return report


def run_edition(
    ctx: Context,
    edition: Edition,
    *,
    worker: str,
    pools: PoolFactory | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    limiter: RateLimiter | None = None,
) -> RunStats:
    """Send an enqueued edition's open deliveries as one worker: the part every sender shares."""
    config = ctx.config
    template = compile_template(config, edition)
    return DeliveryRun(
        ctx.store,
        edition.id,
        personaliser(config, edition, template, ctx.tokens),
        pools or pool_factory(config),
        ctx.clock,
        config.delivery,
        limiter=limiter or RateLimiter(config.smtp.max_per_second),
        worker=worker,
        stop=stop,
        on_progress=on_progress,
        message_id=message_id_parts(config, edition),
        prepare_threads=PREPARE_THREADS if config.dkim.enabled and config.dkim.algorithm == "rsa-sha256" else 0,
    ).run()


def _start(ctx: Context, edition_id: int, plan: list[ZoneRelease] | None = None) -> Edition:
    """Create the delivery rows once (resumably) and mark the edition as sending.

    Zone by zone (``per_reader_timezone``), only the zones whose morning has come get their
    rows now, and each later send releases the next ones; else every reader's at once.
    """
    store = ctx.store
    with store.session() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        needs_enqueue = edition.enqueued_at is None
    if needs_enqueue:
        if ctx.config.newsletter.per_reader_timezone:
            release_zones(ctx, edition, plan)
        else:
            delivery_log.enqueue(store.engine, edition_id)
        with store.engine.begin() as conn:
            delivery_log.mark_sending(conn, edition_id, ctx.clock.now())
    else:
        release_zones(ctx, edition, plan)
    with store.session() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return edition


def _report(day: date, subject: str, stats: RunStats, counts: dict[DeliveryStatus, int]) -> SendReport:
    open_now = sum(counts[s] for s in delivery_log.OPEN_STATUSES)
    summary = (
        f"sent {stats.sent}, deferred {stats.deferred}, failed {stats.failed}, skipped {stats.skipped} "
        f"in {stats.elapsed:.1f}s ({stats.rate:.0f} messages/s)"
    )
    if stats.error is not None:
        return SendReport(
            day,
            "failed",
            f"{stats.error}; {summary}; {open_now} still to send: run send again to resume",
            stats,
            subject,
        )
    if stats.interrupted:
        return SendReport(
            day,
            "interrupted",
            f"stopped: {summary}; {open_now} still to send: run send again to resume",
            stats,
            subject,
        )
    if open_now:
        return SendReport(
            day, "incomplete", f"{summary}; {open_now} deferred or in flight: send again later to retry", stats, subject
        )
    return SendReport(day, "sent", summary, stats, subject)


def _dry_run(ctx: Context, day: date) -> SendReport:
    config, store, clock = ctx.config, ctx.store, ctx.clock
    with store.session() as session:
        edition = edition_for(session, day)
        active = count_subscribers(session)[SubscriberStatus.ACTIVE]
    if has_gone_out(edition):
        return SendReport(
            day,
            "dry-run",
            f"the edition of {day} exists ({edition.status}): {edition.sent_count} sent, "
            f"{counted(edition.article_count, 'article')}; {counted(active, 'active subscriber')}",
            subject=edition.subject,
        )
    selection = plan_for(ctx, day)  # no look ahead: what `send` itself would do
    plan = selection.plan
    too_old = selection.too_old_note(config.newsletter.max_age_hours)
    too_old = f"; {too_old}" if too_old else ""
    if plan.is_empty and not config.newsletter.send_when_empty:
        message = f"no articles for {day}: the edition would be skipped" + waiting_note(store, clock, plan.window.end)
        return SendReport(day, "dry-run", message + too_old, subject=plan.subject)
    rendered = render_plan(config, plan, "dryrun")
    return SendReport(
        day,
        "dry-run",
        f"would send {counted(plan.story_count, 'article')} to {counted(active, 'active subscriber')}; "
        f"HTML {rendered.html_bytes // 1024} KB{too_old}",
        subject=plan.subject,
    )


def send_test_copy(ctx: Context, day: date | None, address: str, transport: Transport | None = None) -> str:
    """One copy to one address, for checking how it looks; nothing is recorded.

    Without a date it is the edition readers get next, as it stands.
    """
    config = ctx.config
    day = day or next_edition_day(ctx)
    standing = edition_as_it_stands(ctx, day)
    edition = standing.edition
    # The click endpoint knows the links of a stored copy only. A copy made now links
    # straight to the stories, as the preview does (its tracked links would lead nowhere),
    # and names edition 0: an open edition's saved links may be another version's.
    clicks_of = edition.id if standing.selection is None else 0
    if standing.selection is not None:
        click = Markers.for_nonce(edition.nonce).click
        edition.html = untrack(edition.html, click, config.web.base_url, standing.links, escape=True)
        edition.text = untrack(edition.text, click, config.web.base_url, standing.links, escape=False)
    template = compile_template(config, edition, subject=f"[Test] {edition.subject}")
    token = ctx.tokens.make(UNSUBSCRIBE, 0, address)
    reader = Reader(
        email=address,
        name="",
        unsubscribe_url=routes.url(config.web.base_url, routes.UNSUBSCRIBE, token=token),
        unsubscribe_mailto=f"mailto:{unsubscribe_mailbox(config)}?subject=unsubscribe",
        message_id=f"<test.{secrets.token_hex(8)}@{config.sender.domain}>",
        # Reader 0 is a test copy: its clicks reach the stories and are never counted.
        click_code=ReaderCodes(config.require_secret_key(), CLICK).code(clicks_of, 0),
    )
    now = ctx.clock.now()
    parts = template.render_parts(reader, now)
    signer = load_signer(config.dkim)
    data = b"".join([signer.sign(parts, now), *parts] if signer is not None else parts)
    sender = transport or transport_factory(config)()
    try:
        return sender.send(template.headers.mail_from, address, data)
    finally:
        sender.close()
