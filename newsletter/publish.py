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

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.clock import Clock
from newsletter.config import Config
from newsletter.delivery import DeliveryRun, MaildirPool, Personaliser, PoolFactory, RateLimiter, RunStats
from newsletter.editions import (
    EditionPlan,
    Layout,
    Window,
    counted,
    edition_date_due,
    local_date,
    plan_edition,
    window_for,
)
from newsletter.errors import ConfigError, ConflictError, UsageError
from newsletter.message import EditionHeaders, MessageTemplate, Reader
from newsletter.render import Branding, Links, Markers, RenderedEdition, build_environment, render_edition
from newsletter.smtpmux import SMTPPool, check_reachable
from newsletter.store import Store, worker_identity
from newsletter.store import deliveries as log_
from newsletter.store.articles import edition_candidates, free_article_count, too_old_articles
from newsletter.store.locks import DatabaseLock, process_is_gone
from newsletter.store.models import (
    Article,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.store.store import OPEN_STATUSES, edition_for, previous_edition, save_open_edition
from newsletter.tokens import UNSUBSCRIBE, Tokens
from newsletter.transport import MaildirTransport, SMTPTransport, Transport

log = logging.getLogger(__name__)


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


# --- preparing -------------------------------------------------------------------------


def branding(config: Config) -> Branding:
    n = config.newsletter
    return Branding(name=n.name, publication=n.publication, address=n.address)


def links_for(config: Config, day: date) -> Links:
    base = config.web.base_url
    return Links(view_in_browser=f"{base}/editions/{day.isoformat()}", subscribe=f"{base}/subscribe")


def resolve_day(config: Config, clock: Clock, day: date | None) -> date:
    """No date means the edition most recently due: today's after its send time, else yesterday's."""
    if day is not None:
        return day
    n = config.newsletter
    return edition_date_due(clock.now(), n.send_time, n.zone)


def layout(config: Config) -> Layout:
    n = config.newsletter
    return Layout(sections=n.sections, more_stories=n.more_stories)


def _window(config: Config, clock: Clock, day: date, previous: Edition | None, look_ahead: bool) -> Window:
    n = config.newsletter
    max_age = timedelta(hours=n.max_age_hours)
    try:
        window = window_for(day, n.send_time, n.zone, previous.window_end if previous else None, max_age)
    except OverflowError:  # the first or last days of the calendar: no window fits
        raise UsageError(f"there is no edition for {day}: the date is out of range") from None
    now = clock.now()
    if window.end > now:
        upcoming = local_date(now, n.zone) + timedelta(days=1)  # a look ahead reaches tomorrow at most
        if day > local_date(now, n.zone) and not (look_ahead and day == upcoming):
            hint = (
                f"; the next one, {upcoming}, can be previewed as it stands"
                if look_ahead
                else f"; `newsletter preview --date {upcoming}` shows the next one as it stands"
            )
            raise UsageError(f"the edition for {day} is not due yet: it goes out at its send time{hint}")
        # Sent early by hand, or looked at ahead of time: cover up to now (a send makes the
        # next edition start from here, so nothing published before its send time is lost).
        window = Window(start=window.start, end=now)
    return window


@dataclass(frozen=True)
class Selection:
    """What the edition for a date holds if it is made now, and what is too old to go in it."""

    plan: EditionPlan
    article_ids: tuple[int, ...]
    too_old: tuple[tuple[int, str, datetime], ...]  # (id, title, published_at) of each

    def too_old_note(self, max_age_hours: int) -> str:
        if not self.too_old:
            return ""
        n = len(self.too_old)
        what = "1 article was" if n == 1 else f"{n} articles were"
        return (
            f"{what} published too long before this edition (over {max_age_hours} hours, and before the "
            "previous edition) and will not be sent: `newsletter articles list` marks them; "
            "`articles pin ID` puts one in"
        )


def plan_for(config: Config, store: Store, clock: Clock, day: date, *, look_ahead: bool = False) -> Selection:
    """Select and lay out an edition still open (not made, made, or skipped) without writing anything.

    The same selection makes the edition when it is sent, so a preview shows what would go
    out now. ``look_ahead`` (for previews and test copies, which record nothing) also accepts
    the edition after the one due now, with the articles published so far.
    """
    with store.session() as session:
        existing = edition_for(session, day)
        previous = previous_edition(session, day)
        window = _window(config, clock, day, previous, look_ahead)
        remaking = existing.id if existing is not None and existing.status in OPEN_STATUSES else None
        articles = edition_candidates(session, day, window.start, window.end, edition_id=remaking)
        old = too_old_articles(session, day, window.start, previous.created_at if previous else None)
        too_old = tuple((a.id, a.title, a.published_at) for a in old)
        previous_day = previous.date if previous is not None else None
    n = config.newsletter
    plan = plan_edition(
        day,
        window,
        articles,
        n.subject,
        name=n.name,
        publication=n.publication,
        layout=layout(config),
        previous=previous_day,
    )
    return Selection(plan, tuple(s.id for s in plan.stories), too_old)


def next_edition_day(config: Config, store: Store, clock: Clock) -> date:
    """The edition a reader will get next: the one due now, unless it has gone out (or was
    skipped), or is empty while newer articles wait (a new install after the send time);
    then the first one after it that has not gone out."""
    due = resolve_day(config, clock, None)
    with store.session() as session:
        made = edition_for(session, due)
        if made is not None and made.status != EditionStatus.READY:
            following = due + timedelta(days=1)
            while (later := edition_for(session, following)) is not None and later.status != EditionStatus.READY:
                following += timedelta(days=1)
            return following
    plan = plan_for(config, store, clock, due).plan
    if plan.is_empty and waiting_after(store, clock, plan.window.end):
        return due + timedelta(days=1)
    return due


def next_window_start(config: Config, store: Store, clock: Clock) -> datetime:
    """How far back the next edition readers get reaches: anything older and unsent is too old."""
    day = next_edition_day(config, store, clock)
    with store.session() as session:
        return _window(config, clock, day, previous_edition(session, day), look_ahead=True).start


def article_destination(config: Config, store: Store, clock: Clock, article_id: int) -> tuple[str, bool]:
    """Where an article stands, in words, and whether that is fine (False: it will not be sent)."""
    with store.session() as session:
        article = session.get(Article, article_id)
        assert article is not None
        made = article.edition
        if made is not None and made.status not in OPEN_STATUSES:
            return f"it is in the edition of {made.date} ({made.status})", True
        hidden, pinned, published = article.hidden, article.pinned_for, article.published_at
    if hidden:
        return "it is hidden: no edition takes it until `articles unhide`", True
    day = next_edition_day(config, store, clock)
    if pinned is not None and pinned > day:
        return f"it is pinned to lead the edition of {pinned}, and waits for it", True
    selection = plan_for(config, store, clock, day, look_ahead=True)
    if article_id in selection.article_ids:
        due = resolve_day(config, clock, None)
        with store.session() as session:
            skipped = (made := edition_for(session, due)) is not None and made.status == EditionStatus.SKIPPED
        if due != day and skipped and article_id in plan_for(config, store, clock, due).article_ids:
            return (
                f"it goes in the next edition, of {day}; or in the edition of {due}, skipped for want of "
                f"articles, if that is sent now (`newsletter send --date {due}`)",
                True,
            )
        return f"it goes in the next edition, of {day}", True
    if published > selection.plan.window.end:
        return f"it is dated after the next edition ({day}) and waits for a later one", True
    return (
        f"it was published too long before the next edition ({day}) to be sent (over "
        f"{config.newsletter.max_age_hours} hours, and before the previous edition): "
        f"`newsletter articles pin {article_id}` sends it anyway",
        False,
    )


def articles_waiting(config: Config, store: Store, clock: Clock, day: date) -> int:
    """How many articles the edition for ``day`` would hold if it were made now."""
    return len(plan_for(config, store, clock, day).article_ids)


def waiting_after(store: Store, clock: Clock, moment: datetime) -> int:
    """Articles already published after ``moment`` (a cutoff), waiting for a later edition."""
    with store.session() as session:
        return free_article_count(session, moment, clock.now())


def _waiting_note(store: Store, clock: Clock, cutoff_: datetime) -> str:
    waiting = waiting_after(store, clock, cutoff_)
    if not waiting:
        return ""
    counted = "1 newer article waits" if waiting == 1 else f"{waiting} newer articles wait"
    return f" ({counted} for the next edition)"


def render_plan(config: Config, plan: EditionPlan, nonce: str) -> RenderedEdition:
    env = build_environment(config.newsletter.templates or None)
    return render_edition(plan, branding(config), links_for(config, plan.date), nonce, env, config.design)


@dataclass(frozen=True)
class Preview:
    """An edition as it would reach a reader now: what `preview` writes and the admin shows."""

    day: date
    status: EditionStatus | None  # None: not made yet
    html: str
    text: str
    markers: Markers
    story_count: int
    selection: Selection | None  # None once the edition has started going out: its stories are fixed

    @property
    def state(self) -> str:
        """'not made', 'made', 'sending', 'sent' or 'skipped', in the words staff use."""
        if self.status is None:
            return "not made"
        return "made" if self.status == EditionStatus.READY else self.status.value


def preview_edition(config: Config, store: Store, clock: Clock, day: date) -> Preview:
    """The edition for ``day`` as it stands: the stored copy once it has started going out,
    else what `send` would make from the articles now (the same selection, so they agree)."""
    with store.session() as session:
        edition = edition_for(session, day)
    if edition is not None and edition.status not in OPEN_STATUSES:
        markers = Markers.for_nonce(edition.nonce)
        return Preview(day, edition.status, edition.html, edition.text, markers, edition.article_count, None)
    selection = plan_for(config, store, clock, day, look_ahead=True)
    rendered = render_plan(config, selection.plan, "preview")
    status = edition.status if edition is not None else None
    return Preview(day, status, rendered.html, rendered.text, rendered.markers, selection.plan.story_count, selection)


PREPARE_ATTEMPTS = 3


def prepare_edition(config: Config, store: Store, clock: Clock, day: date) -> Edition:
    """The edition for ``day``, made now unless it has started going out (see ``make_edition``)."""
    return make_edition(config, store, clock, day)[0]


def make_edition(config: Config, store: Store, clock: Clock, day: date) -> tuple[Edition, Selection | None]:
    """The edition for ``day``, made now if it has not started going out, with what was selected.

    An edition still open (made but not started, or skipped for want of articles) is made
    again from the articles as they are now: stories that arrived late, were hidden, pinned
    or edited since count, and a skipped day with articles now goes out. Once deliveries
    exist the edition is fixed, and the selection returned is None.
    """
    for _ in range(PREPARE_ATTEMPTS):
        with store.session() as session:
            existing = edition_for(session, day)
        if existing is not None and existing.status not in OPEN_STATUSES:
            return existing, None
        selection = plan_for(config, store, clock, day)
        plan = selection.plan
        nonce = existing.nonce if existing is not None else secrets.token_hex(8)
        empty = plan.is_empty and not config.newsletter.send_when_empty
        rendered = None if empty else render_plan(config, plan, nonce)
        now = clock.now()
        values = {
            "window_start": plan.window.start,
            "window_end": plan.window.end,
            "subject": plan.subject,
            "status": EditionStatus.SKIPPED if empty else EditionStatus.READY,
            "html": rendered.html if rendered else "",
            "text": rendered.text if rendered else "",
            "web_html": rendered.web_html if rendered else "",
            "nonce": nonce,
            "article_count": plan.story_count,
            "created_at": existing.created_at if existing is not None else now,
            "finished_at": now if empty else None,
        }
        try:
            with store.session() as session:
                edition = save_open_edition(session, day, values, selection.article_ids, existing)
        except (IntegrityError, ConflictError) as exc:
            log.info("edition %s changed while it was being made (%s); selecting again", day, exc)
            continue
        log.info(
            "edition %s %s: %d articles, window %s to %s%s",
            day,
            "remade" if existing is not None else "prepared",
            plan.story_count,
            plan.window.start.isoformat(timespec="minutes"),
            plan.window.end.isoformat(timespec="minutes"),
            " (empty: skipped)" if empty else "",
        )
        return edition, selection
    raise ConflictError(f"the edition of {day} kept changing while it was being made; run send again")


# --- personalising ---------------------------------------------------------------------


def edition_headers(config: Config, subject: str) -> EditionHeaders:
    return EditionHeaders(
        subject=subject,
        from_name=config.from_name,
        from_address=config.sender.from_address,
        reply_to=config.sender.reply_to,
        list_id=config.list_id,
        list_name=config.newsletter.name,
        envelope_from=config.sender.envelope_from,
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
    """Per reader: a signed token, two links, a Message-ID; everything else was done once."""
    base = config.web.base_url
    mailbox = unsubscribe_mailbox(config)
    prefix, suffix = message_id_parts(config, edition)

    def personalise(work: log_.Work, now: datetime) -> list[bytes]:
        token = tokens.make(UNSUBSCRIBE, work.subscriber_id, work.email)
        reader = Reader(
            email=work.email,
            name=work.name,
            unsubscribe_url=f"{base}/unsubscribe/{token}",
            unsubscribe_mailto=f"mailto:{mailbox}?subject=unsubscribe%20{token}",
            message_id=f"{prefix}{work.delivery_id}{suffix}",
        )
        return template.render_parts(reader, now)

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
        dead = [h for h in log_.claim_holders(conn, edition_id) if process_is_gone(h)]
        log_.release_dead_claims(conn, edition_id, dead)
        now = clock.now()
        log_.recover(conn, edition_id, now, deferred_due=True)
        if retry_deferred:
            log_.retry_deferred_now(conn, edition_id)


def give_up_stale(config: Config, store: Store, clock: Clock, edition: Edition) -> str:
    """Yesterday's news is not worth retrying for ever: old deferrals become failures.

    Returns what was given up on, in words for the run's summary ("" when nothing was),
    so a resumed run never hides the readers it stopped trying.
    """
    hours = config.delivery.give_up_hours
    if clock.now() - edition.window_end < timedelta(hours=hours):
        return ""
    with store.engine.begin() as conn:
        count, example = log_.give_up_deferred(conn, edition.id)
    if not count:
        return ""
    said = f"gave up on {count} deferred after {hours} h" + (f" (last reply: {example[:200]})" if example else "")
    log.warning("edition %s: %s", edition.date, said)
    return said


def finish_edition(store: Store, edition_id: int, clock: Clock) -> dict[DeliveryStatus, int]:
    """Store the counts, and mark the edition sent once nothing is open any more."""
    with store.engine.begin() as conn:
        counts = log_.status_counts(conn, edition_id)
        log_.store_counts(conn, edition_id, counts)
        if not any(counts[s] for s in log_.OPEN_STATUSES):
            conn.execute(
                update(Edition)
                .where(Edition.id == edition_id, Edition.status == EditionStatus.SENDING)
                .values(status=EditionStatus.SENT, finished_at=clock.now())
            )
    return counts


def send_edition(
    config: Config,
    store: Store,
    clock: Clock,
    tokens: Tokens,
    *,
    day: date | None = None,
    dry_run: bool = False,
    retry_deferred: bool = True,
    pools: PoolFactory | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    enqueue_only: bool = False,
) -> SendReport:
    """Prepare the edition for ``day`` and send it to every active subscriber not yet served.

    ``enqueue_only`` creates the delivery rows and leaves the sending to ``newsletter worker``
    processes (PostgreSQL).
    """
    day = resolve_day(config, clock, day)
    if dry_run:
        return _dry_run(config, store, clock, day)
    if pools is None and config.delivery.transport == "smtp":
        refuse_example_sender(config)  # before anything is made or recorded
    edition, selection = make_edition(config, store, clock, day)
    too_old = selection.too_old_note(config.newsletter.max_age_hours) if selection else ""
    if edition.status == EditionStatus.SKIPPED:
        message = f"no articles for the edition of {day}: nothing sent" + _waiting_note(
            store, clock, edition.window_end
        )
        return SendReport(day, "skipped", message + (f"; {too_old}" if too_old else ""), subject=edition.subject)
    if edition.status == EditionStatus.SENT:
        return SendReport(
            day,
            "already-sent",
            f"the edition of {day} was already sent to {counted(edition.sent_count, 'reader')}; nothing to do"
            + _waiting_note(store, clock, edition.window_end),
            subject=edition.subject,
        )
    if enqueue_only:
        edition = _start(store, edition.id, clock)
        count = finish_edition(store, edition.id, clock)
        waiting = sum(count[s] for s in log_.OPEN_STATUSES)
        return SendReport(
            day,
            "enqueued",
            f"{waiting} deliveries of the edition of {day} wait for `newsletter worker`",
            subject=edition.subject,
        )
    if pools is None and config.delivery.transport == "smtp":
        check_reachable(config.smtp)  # unreachable or bad credentials: say so before claiming anything
    with DatabaseLock(store, f"edition:{day.isoformat()}", clock):
        edition = _start(store, edition.id, clock)
        gave_up = give_up_stale(config, store, clock, edition)
        _release_dead_claims(store, edition.id, clock, retry_deferred)
        stats = run_edition(
            config,
            store,
            clock,
            tokens,
            edition,
            worker=worker_identity(),
            pools=pools,
            stop=stop,
            on_progress=on_progress,
        )
        counts = finish_edition(store, edition.id, clock)
    report = _report(day, edition.subject, stats, counts)
    if gave_up:
        report.message += f"; {gave_up}"
        report.gave_up = True
    if too_old:
        report.message += f"; {too_old}"
    return report


def run_edition(
    config: Config,
    store: Store,
    clock: Clock,
    tokens: Tokens,
    edition: Edition,
    *,
    worker: str,
    pools: PoolFactory | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    limiter: RateLimiter | None = None,
) -> RunStats:
    """Send an enqueued edition's open deliveries as one worker: the part every sender shares."""
    template = compile_template(config, edition)
    return DeliveryRun(
        store,
        edition.id,
        personaliser(config, edition, template, tokens),
        pools or pool_factory(config),
        template.headers.mail_from,
        clock,
        config.delivery,
        limiter=limiter or RateLimiter(config.smtp.max_per_second),
        worker=worker,
        stop=stop,
        on_progress=on_progress,
        message_id=message_id_parts(config, edition),
    ).run()


def _start(store: Store, edition_id: int, clock: Clock) -> Edition:
    """Create the delivery rows once (resumably) and mark the edition as sending."""
    with store.session() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        needs_enqueue = edition.enqueued_at is None
    if needs_enqueue:
        log_.enqueue(store.engine, edition_id)
        with store.session() as session:
            session.execute(
                update(Edition)
                .where(Edition.id == edition_id)
                .values(
                    enqueued_at=clock.now(),
                    started_at=clock.now(),
                    status=EditionStatus.SENDING,
                )
            )
    with store.session() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return edition


def _report(day: date, subject: str, stats: RunStats, counts: dict[DeliveryStatus, int]) -> SendReport:
    open_now = sum(counts[s] for s in log_.OPEN_STATUSES)
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


def _dry_run(config: Config, store: Store, clock: Clock, day: date) -> SendReport:
    with store.session() as session:
        edition = edition_for(session, day)
        active = session.scalar(
            select(func.count()).select_from(Subscriber).where(Subscriber.status == SubscriberStatus.ACTIVE)
        )
    if edition is not None and edition.status not in OPEN_STATUSES:
        return SendReport(
            day,
            "dry-run",
            f"the edition of {day} exists ({edition.status}): {edition.sent_count} sent, "
            f"{counted(edition.article_count, 'article')}; {counted(active, 'active subscriber')}",
            subject=edition.subject,
        )
    selection = plan_for(config, store, clock, day)  # no look ahead: what `send` itself would do
    plan = selection.plan
    too_old = selection.too_old_note(config.newsletter.max_age_hours)
    too_old = f"; {too_old}" if too_old else ""
    if plan.is_empty and not config.newsletter.send_when_empty:
        message = f"no articles for {day}: the edition would be skipped" + _waiting_note(store, clock, plan.window.end)
        return SendReport(day, "dry-run", message + too_old, subject=plan.subject)
    rendered = render_plan(config, plan, "dryrun")
    return SendReport(
        day,
        "dry-run",
        f"would send {counted(plan.story_count, 'article')} to {counted(active, 'active subscriber')}; "
        f"HTML {rendered.html_bytes // 1024} KB{too_old}",
        subject=plan.subject,
    )


def send_test_copy(
    config: Config,
    store: Store,
    clock: Clock,
    tokens: Tokens,
    day: date | None,
    address: str,
    transport: Transport | None = None,
) -> str:
    """One copy to one address, for checking how it looks; nothing is recorded.

    Without a date it is the edition readers get next, as it stands.
    """
    day = day or next_edition_day(config, store, clock)
    with store.session() as session:
        edition = edition_for(session, day)
    if edition is None or edition.status in OPEN_STATUSES:
        plan = plan_for(config, store, clock, day, look_ahead=True).plan
        nonce = secrets.token_hex(8)
        rendered = render_plan(config, plan, nonce)
        edition = Edition(
            date=day,
            html=rendered.html,
            text=rendered.text,
            web_html=rendered.web_html,
            nonce=nonce,
            subject=plan.subject,
        )
    template = compile_template(config, edition, subject=f"[Test] {edition.subject}")
    token = tokens.make(UNSUBSCRIBE, 0, address)
    reader = Reader(
        email=address,
        name="",
        unsubscribe_url=f"{config.web.base_url}/unsubscribe/{token}",
        unsubscribe_mailto=f"mailto:{unsubscribe_mailbox(config)}?subject=unsubscribe",
        message_id=f"<test.{secrets.token_hex(8)}@{config.sender.domain}>",
    )
    data = template.render(reader, clock.now())
    sender = transport or transport_factory(config)()
    try:
        return sender.send(template.headers.mail_from, address, data)
    finally:
        sender.close()
