"""When editions are due, and one scheduled pass: what cron and the daemon both run.

Three triggers, one decision. The daemon (``newsletter scheduler``, in ``scheduler.py``),
its retry tick, and a cron job or systemd timer running ``newsletter send --scheduled``
every few minutes all ask ``decide`` what to do now: send the edition due, resume one left
half-sent, or nothing (already done, not due yet, or missed: past the grace period, when a
send would bring yesterday's news at lunchtime), or leave it held (preflight found errors in
it: see ``preflight.gate``). Exactly once comes from below:
``send_edition`` prepares one edition per date and sends it under the edition's database
lock from the delivery log, so any two triggers can only resume each other's work, never
repeat it. The trigger, the decision and the date arithmetic are pure and take ``now``.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from newsletter.articles import ImportSummary, fetch_feeds
from newsletter.config import WEEKDAYS, Config
from newsletter.context import Context
from newsletter.editions import counted, cutoff, edition_date_due, local_date
from newsletter.errors import LockHeldError, NewsletterError, PreflightHeldError
from newsletter.preflight.gate import Gate, fingerprint_now, override_command
from newsletter.preflight.notice import tell_staff
from newsletter.preflight.tools import Tools
from newsletter.preparation import articles_waiting
from newsletter.publish import SendReport, send_edition, transport_factory, zones_to_come
from newsletter.release import ZoneRelease
from newsletter.store import Store
from newsletter.store.editions import edition_for, edition_progress, unfinished_editions
from newsletter.store.holds import Hold, hold_of
from newsletter.store.models import Edition, EditionStatus
from newsletter.transports import Transport

log = logging.getLogger("newsletter.scheduler")

# A process needs a moment to wake: a send this late is on time whatever the grace period.
ON_TIME = timedelta(minutes=1)

FeedFetcher = Callable[[], Sequence[ImportSummary]]
"""Imports the configured feeds; ``feed_fetcher`` binds the real one to its collaborators."""


def feed_fetcher(ctx: Context) -> FeedFetcher:
    return partial(fetch_feeds, ctx)


# --- when: the trigger ----------------------------------------------------------------------


class EditionTrigger(CronTrigger):
    """A cron trigger at the send time on the configured weekdays, firing exactly at each cutoff.

    APScheduler's own cron arithmetic works on wall times: it skips a day whose send time
    falls in a spring-forward gap and fires twice when it falls in a repeated autumn hour
    (America/Havana at 00:30, Europe/London at 01:30). An edition must go once per date, at
    the instant ``editions.cutoff`` defines, so fire times come from there; the cron fields
    still describe the schedule in logs and in the job table.
    """

    def __init__(self, send_time: time, zone: ZoneInfo, days: Sequence[str]) -> None:
        super().__init__(
            day_of_week=",".join(days),
            hour=send_time.hour,
            minute=send_time.minute,
            second=send_time.second,
            timezone=zone,
        )
        self.send_time = send_time
        self.days = tuple(days)

    @classmethod
    def for_config(cls, config: Config) -> EditionTrigger:
        return cls(config.newsletter.send_time, config.newsletter.zone, config.scheduler.days)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # APScheduler's contract: after the previous fire time if there is one (even if that
        # is still before now: it is how missed runs are counted), else at or after now.
        after = now if previous_fire_time is None else min(now, previous_fire_time + timedelta(microseconds=1))
        zone: ZoneInfo = self.timezone
        day = local_date(after, zone) - timedelta(days=1)
        for _ in range(9):  # a scheduled weekday comes round within a week
            if WEEKDAYS[day.weekday()] in self.days:
                fire = cutoff(day, self.send_time, zone)
                if fire >= after:
                    return fire.astimezone(zone)
            day += timedelta(days=1)
        return None

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state["edition"] = (self.send_time, self.days)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.send_time, self.days = state.pop("edition")
        super().__setstate__(state)


def scheduled_day(fire_time: datetime, config: Config) -> date:
    """The edition date a fire time belongs to (a cutoff in a gap near midnight can land on the next date)."""
    n = config.newsletter
    day = local_date(fire_time, n.zone)
    instant = fire_time.astimezone(UTC)  # == across zones is False in a repeated hour (PEP 495)
    for candidate in (day, day - timedelta(days=1)):
        if cutoff(candidate, n.send_time, n.zone) == instant:
            return candidate
    return day


def latest_scheduled_day(now: datetime, config: Config) -> date:
    """The most recent date on a scheduled weekday whose send time has passed."""
    n = config.newsletter
    day = edition_date_due(now, n.send_time, n.zone)
    while WEEKDAYS[day.weekday()] not in config.scheduler.days:
        day -= timedelta(days=1)
    return day


def lateness_allowed(config: Config) -> timedelta:
    return max(timedelta(minutes=config.scheduler.grace_minutes), ON_TIME)


# --- what: the decision ---------------------------------------------------------------------


class Action(enum.StrEnum):
    SEND = "send"  # due, within the grace period, not started
    RESUME = "resume"  # started and left with work to do
    DONE = "done"  # sent, or skipped for want of articles (and none have come in since)
    NOT_DUE = "not-due"  # started; what is left is deferred to a later retry
    MISSED = "missed"  # not sent, and now too late to send unattended
    HELD = "held"  # made, and held by preflight's errors: for a person to send, or for a change to check


@dataclass(frozen=True)
class EditionState:
    """What the store says about one edition, as far as deciding goes."""

    status: EditionStatus
    open_now: int = 0  # pending, or claimed by a worker
    deferred: int = 0
    next_retry_at: datetime | None = None
    waiting: int = 0  # skipped: articles for it that have come in since, which it would now take
    zones: tuple[ZoneRelease, ...] = ()  # sent zone by zone: the zones whose morning is still to come
    held: Hold | None = None  # made, not started: preflight held it (``preflight.gate``)

    def has_work(self, now: datetime, retry_deferred: bool) -> bool:
        """Something to send now; an edition with nothing open left still needs finishing."""
        if self.open_now or (self.zones and self.zones[0].at <= now):
            return True
        if self.deferred:
            return retry_deferred or self.next_retry_at is None or self.next_retry_at <= now
        return not self.zones


@dataclass(frozen=True)
class Decision:
    action: Action
    day: date
    cutoff: datetime
    reason: str
    state: EditionState | None = None  # what the store said about that day's edition


StateOf = Callable[[date], EditionState | None]


def decide(now: datetime, config: Config, state_of: StateOf, *, retry_deferred: bool = False) -> Decision:
    """What a trigger should do at ``now`` about the latest scheduled edition; pure given ``state_of``.

    :param state_of: the store's view of the edition for a date (None: not prepared yet).
    :param retry_deferred: count deferred messages as due whatever their retry time.
    """
    n = config.newsletter
    day = latest_scheduled_day(now, config)
    due_at = cutoff(day, n.send_time, n.zone)
    state = state_of(day)
    on_time = now - due_at <= lateness_allowed(config)
    if state is None or state.status == EditionStatus.READY:
        held = state.held if state is not None and config.preflight.block_on_error else None
        if on_time and held is not None:
            return Decision(Action.HELD, day, due_at, held_message(held, config), state)
        if on_time:
            reason = f"the edition of {day} is due (send time {local_text(due_at, n.zone)})"
            return Decision(Action.SEND, day, due_at, reason, state)
        missed = missed_message(day, due_at, now, config, held=held is not None)
        return Decision(Action.MISSED, day, due_at, missed, state)
    if state.status == EditionStatus.SKIPPED and state.waiting:
        came = "1 article for it has" if state.waiting == 1 else f"{state.waiting} articles for it have"
        if on_time:
            reason = f"the edition of {day} was skipped, but {came} come in since"
            return Decision(Action.SEND, day, due_at, reason, state)
        reason = (
            f"the edition of {day} was skipped and {came} come in since, past the grace period: "
            "they go in the next edition"
        )
        return Decision(Action.DONE, day, due_at, reason, state)
    if state.status == EditionStatus.SENDING:
        if state.has_work(now, retry_deferred):
            if state.zones and state.zones[0].at <= now and not state.open_now:
                reason = f"the edition of {day}: the morning of {zones_text(state.zones, now)} has come"
                return Decision(Action.RESUME, day, due_at, reason, state)
            return Decision(Action.RESUME, day, due_at, f"the edition of {day} was left part-sent", state)
        if state.zones and not state.deferred:
            reason = f"the edition of {day} goes out zone by zone: next, {zone_text(state.zones[0], n.zone)}"
            if len(state.zones) > 1:
                reason += f"; {counted(len(state.zones), 'zone')} still to come"
            return Decision(Action.NOT_DUE, day, due_at, reason, state)
        retry = local_text(state.next_retry_at, n.zone) if state.next_retry_at else "the next retry"
        return Decision(
            Action.NOT_DUE,
            day,
            due_at,
            f"the edition of {day} has {state.deferred} deferred messages to retry at {retry}",
            state,
        )
    done = "had no articles and was skipped" if state.status == EditionStatus.SKIPPED else "was already sent"
    return Decision(Action.DONE, day, due_at, f"the edition of {day} {done}; nothing to do", state)


def missed_message(day: date, due_at: datetime, now: datetime, config: Config, *, held: bool = False) -> str:
    late = span(now - due_at)
    anyway = f"preflight held it, and `{override_command(day)}`" if held else f"`newsletter send --date {day}`"
    return (
        f"the edition of {day} was missed: its send time {local_text(due_at, config.newsletter.zone)} passed {late} "
        f"ago, beyond the {config.scheduler.grace_minutes}-minute grace period, so it is not sent unattended; "
        f"{anyway} sends it anyway"
    )


def held_message(hold: Hold, config: Config) -> str:
    """Why a held edition is not sent: since when, its first error, and the two ways out."""
    errors = hold.errors
    first = f"; first: {errors[0].check}: {errors[0].message}" if errors else ""
    return (
        f"the edition of {hold.day} is held: preflight found {counted(len(errors), 'error')} at "
        f"{local_text(hold.held_at, config.newsletter.zone)}{first}; `{override_command(hold.day)}` sends it as it "
        "is, and a change to the edition is checked again"
    )


def zone_text(zone: ZoneRelease, newsroom: ZoneInfo) -> str:
    """'America/New_York at 2026-11-24 11:00 GMT (120 readers)': one zone's release, in the newsroom's time."""
    return f"{zone.label} at {local_text(zone.at, newsroom)} ({counted(zone.readers, 'reader')})"


def zones_text(zones: Sequence[ZoneRelease], now: datetime) -> str:
    """The names of the zones whose release time has come by ``now``."""
    come = [z.label for z in zones if z.at <= now]
    return ", ".join(come[:5]) + (f" and {len(come) - 5} more" if len(come) > 5 else "")


def local_text(moment: datetime, zone: ZoneInfo) -> str:
    """'2026-11-24 06:00 GMT': the wall time readers see, with seconds only when there are any."""
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S %Z}" if local.second else f"{local:%Y-%m-%d %H:%M %Z}"


def span(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"


# --- the store's view -----------------------------------------------------------------------


def state_reader(
    store: Store,
    waiting: Callable[[date], int] | None = None,
    zones: Callable[[Edition], Sequence[ZoneRelease]] | None = None,
) -> StateOf:
    """:param waiting: how many articles a skipped edition for a date would take if made now.
    :param zones: the zones still to come of an edition sent zone by zone (``publish.zones_to_come``).
    """

    def state_of(day: date) -> EditionState | None:
        with store.session() as session:
            edition = edition_for(session, day)
            status = edition.status if edition is not None else None
        if edition is None or status is None:
            return None
        if status == EditionStatus.SKIPPED and waiting is not None:
            # Outside the session above: counting opens its own, and on SQLite a second
            # session inside the first would wait for the first's write lock for ever.
            return EditionState(status, waiting=waiting(day))
        if status == EditionStatus.READY:
            with store.reading() as session:
                return EditionState(status, held=hold_of(session, edition.id))
        if status != EditionStatus.SENDING:
            return EditionState(status)
        to_come = tuple(zones(edition)) if zones is not None else ()
        with store.session() as session:
            open_now, deferred, next_retry = edition_progress(session, edition.id)
            return EditionState(edition.status, open_now, deferred, next_retry, zones=to_come)

    return state_of


# --- doing it: shared by the daemon and ``send --scheduled`` -----------------------------------


@dataclass
class PassResult:
    """What one scheduled pass did: the decision, each send's report, and what stood in the way."""

    decision: Decision | None = None  # None: only resuming, as at start-up
    reports: list[SendReport] = field(default_factory=list)
    lock_held: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # editions preflight held on this pass

    @property
    def exit_code(self) -> int:
        if any(r.outcome == "interrupted" for r in self.reports):
            return 130
        if self.errors or self.held or any(not r.ok and r.outcome != "incomplete" for r in self.reports):
            return 1
        return 0


class ScheduledSender:
    """Decides, fetches feeds, sends, and says so in one log line per event."""

    def __init__(
        self,
        ctx: Context,
        *,
        fetch: FeedFetcher | None = None,
        stop: threading.Event | None = None,
        lock_level: int = logging.WARNING,
        retry_hint: str = "the next run tries again",
        tools: Tools | None = None,
        notices: Callable[[], Transport] | None = None,
    ) -> None:
        """:param tools: what preflight fetches and runs with (default: the real web).
        :param notices: the connection a held edition's notice to the staff goes through
            (default: the single-message transport, as test copies use)."""
        config = ctx.config
        self.ctx = ctx
        self.fetch = fetch if (config.scheduler.fetch_feeds and config.feeds) else None
        self.stop = stop or threading.Event()
        self.lock_level = lock_level
        self.retry_hint = retry_hint
        self.state_of = state_reader(ctx.store, partial(articles_waiting, ctx), partial(zones_to_come, ctx))
        self._tools = tools
        self.notices = notices or transport_factory(config)

    @property
    def tools(self) -> Tools:
        """Preflight's tools, built when first needed (most passes send nothing)."""
        if self._tools is None:
            self._tools = Tools.real(self.ctx.config.preflight.user_agent)
        return self._tools

    def run_pass(
        self,
        *,
        retry_deferred: bool,
        others: bool,
        missed_level: int = logging.WARNING,
        quiet_level: int = logging.INFO,
    ) -> PassResult:
        """Act on the latest scheduled edition, then (``others``) on any older one left part-sent."""
        decision = decide(self.ctx.clock.now(), self.ctx.config, self.state_of, retry_deferred=retry_deferred)
        result = PassResult(decision)
        if decision.action == Action.SEND:
            if decision.state is None or decision.state.status == EditionStatus.SKIPPED:
                # Not made yet (or to be made again): bring in the latest articles first.
                self.fetch_feeds(f"before the edition of {decision.day}")
            self.send(decision.day, f"{decision.reason}: sending", retry_deferred, result, check=True)
        elif decision.action == Action.HELD:
            self.recheck_held(decision, retry_deferred, result, quiet_level)
        elif decision.action == Action.RESUME:
            self.send(decision.day, f"{decision.reason}: resuming it", retry_deferred, result)
        elif decision.action == Action.MISSED:
            log.log(missed_level, "%s", decision.reason)
        else:
            log.log(quiet_level, "%s", decision.reason)
        if others:
            self.resume_unfinished(retry_deferred, result, skip=decision.day)
        return result

    def resume_unfinished(self, retry_deferred: bool, result: PassResult, skip: date | None = None) -> None:
        """Resume every edition left "sending" (a crash, a stop, deferrals) that has work due."""
        with self.ctx.store.session() as session:
            days = [e.date for e in unfinished_editions(session) if e.date != skip]
        for day in days:
            if self.stop.is_set():
                return
            state = self.state_of(day)
            if state and state.status == EditionStatus.SENDING and state.has_work(self.ctx.clock.now(), retry_deferred):
                self.send(day, f"the edition of {day} was left part-sent: resuming it", retry_deferred, result)

    def release_zones_due(self, result: PassResult) -> None:
        """Send each edition going out zone by zone to the zones whose morning has come."""
        with self.ctx.store.session() as session:
            days = [e.date for e in unfinished_editions(session)]
        for day in days:
            if self.stop.is_set():
                return
            now = self.ctx.clock.now()
            state = self.state_of(day)
            if state and state.status == EditionStatus.SENDING and state.zones and state.zones[0].at <= now:
                why = f"the edition of {day}: the morning of {zones_text(state.zones, now)} has come: sending it there"
                self.send(day, why, False, result)

    def send(self, day: date, why: str, retry_deferred: bool, result: PassResult, *, check: bool = False) -> None:
        """Send (or resume) the edition of ``day``; ``check`` runs preflight first if it has not started."""
        if self.stop.is_set():
            return
        log.info("%s", why)
        ctx = self.ctx
        gate = Gate(ctx, self.tools, remember=True) if check else None
        try:
            report = send_edition(
                ctx,
                day=day,
                retry_deferred=retry_deferred,
                stop=self.stop,
                gate=gate,
            )
        except PreflightHeldError as exc:
            self.on_hold(exc, result)
            return
        except LockHeldError as exc:
            line = f"the edition of {day} is being sent by {exc.holder}; leaving it to that process"
            log.log(self.lock_level, "%s", line)
            result.lock_held.append(line)
            return
        except NewsletterError as exc:
            log.error("the edition of %s was not sent: %s; %s", day, exc, self.retry_hint)
            result.errors.append(str(exc))
            return
        level = logging.INFO if report.ok else logging.WARNING if report.outcome != "failed" else logging.ERROR
        log.log(level, "edition %s: %s", day, report.message)
        result.reports.append(report)

    def on_hold(self, exc: PreflightHeldError, result: PassResult) -> None:
        """Say why the edition is held, one line per error and one for the ways out; tell the staff."""
        day = exc.day
        assert isinstance(day, date)  # the gate holds an edition by its date; the error keeps any object
        for check, message in exc.errors:
            log.error("the edition of %s: preflight error: %s: %s", day, check, message)
        log.error(
            "the edition of %s is held, not sent: fix the errors (the scheduler checks a changed edition again) "
            "or run `%s` to send it as it is",
            day,
            exc.override,
        )
        result.held.append(str(exc))
        if not self.ctx.config.preflight.notify:
            log.warning("[preflight] notify lists nobody: no one was mailed about the held edition of %s", day)
        self.notify_staff(day)

    def recheck_held(self, decision: Decision, retry_deferred: bool, result: PassResult, quiet_level: int) -> None:
        """A held edition: check it again if it has changed since, else leave it (and say so quietly).

        Comparing digests costs a render and no network; preflight itself, and the notice,
        come only with a change, so a held edition is not checked and mailed every few minutes.
        """
        day = decision.day
        hold = decision.state.held if decision.state is not None else None
        with self.ctx.store.session() as session:
            edition = edition_for(session, day)
        if hold is None or edition is None:
            return
        try:
            digest = fingerprint_now(self.ctx, edition)
        except NewsletterError as exc:
            log.error("the held edition of %s could not be compared with its articles now: %s", day, exc)
            result.errors.append(str(exc))
            return
        if digest != hold.fingerprint:
            why = f"the edition of {day} has changed since preflight held it: checking it again"
            self.send(day, why, retry_deferred, result, check=True)
            return
        self.notify_staff(day)  # a notice the mail server could not take before
        log.log(quiet_level, "%s", decision.reason)

    def notify_staff(self, day: date) -> None:
        """Mail ``[preflight] notify`` about the held edition of ``day``, once per hold; never raises."""
        if not self.ctx.config.preflight.notify:
            return
        n = self.ctx.config.newsletter
        grace_ends = cutoff(day, n.send_time, n.zone) + lateness_allowed(self.ctx.config)
        try:
            with self.ctx.store.session() as session:
                edition = edition_for(session, day)
                found = (edition.id, edition.subject) if edition is not None else None
            if found is None:
                return
            notice = tell_staff(self.ctx, found[0], found[1], self.notices, grace_ends=grace_ends)
        except NewsletterError as exc:
            log.error("the staff were not told that the edition of %s is held: %s", day, exc)
            return
        line = notice.summary(day)
        if line:
            log.log(logging.INFO if notice.told else logging.ERROR, "%s", line)

    def deliver_signup_mails(self) -> None:
        """Send the confirmation mails still queued (the mail server was down at sign-up)."""
        from newsletter.outbox import deliver_outbox
        from newsletter.publish import transport_factory

        try:
            report = deliver_outbox(self.ctx, transport_factory(self.ctx.config))
        except NewsletterError as exc:
            log.error("sign-up mails were not delivered: %s; %s", exc, self.retry_hint)
            return
        if report.sent or report.deferred or report.given_up:
            log.log(logging.WARNING if report.given_up else logging.INFO, "%s", report.summary())

    def read_mailbox(self) -> None:
        """Act on the bounces, complaints and mailed unsubscribes waiting, before the next send.

        A mailbox that cannot be read is logged and the send goes on: a reader it would
        have bounced gets one more edition, which is better than nobody getting one.
        """
        from newsletter.inbound import configured_inboxes, process

        inboxes = configured_inboxes(self.ctx.config)
        if not inboxes:
            return
        try:
            report = process(self.ctx, inboxes)
        except (NewsletterError, OSError) as exc:  # the folder itself unreadable: say so, and send
            log.error("the bounce mailbox was not read: %s; %s", exc, self.retry_hint)
            return
        if report.total:
            log.info("mailbox: %s", report.summary())
        for line in report.warnings():
            log.warning("mailbox: %s", line)

    def fetch_feeds(self, why: str) -> None:
        """Import the feeds; a feed that fails is logged and the morning goes on without it."""
        if self.fetch is None:
            return
        try:
            summaries = self.fetch()
        except Exception as exc:  # noqa: BLE001 - a broken feed must never stop the edition going out
            log.warning("fetching feeds %s failed: %s", why, exc)
            return
        for summary in summaries:
            log.log(logging.INFO if summary.ok else logging.WARNING, "feed %s: %s", why, summary.describe())


def send_scheduled(
    ctx: Context,
    *,
    fetch: FeedFetcher | None = None,
    stop: threading.Event | None = None,
    tools: Tools | None = None,
    notices: Callable[[], Transport] | None = None,
) -> PassResult:
    """One cron run: read the bounce mailbox, then send the edition if due and not sent,
    resume any left part-sent, else nothing.

    Safe every few minutes: a second run finds the edition sent, or its lock held by the
    first (which is normal while a long send runs, so it is said quietly). Deferred messages
    wait for their retry time. An edition preflight holds is said once, with a non-zero
    exit, and then quietly while it stays held (see ``ScheduledSender.recheck_held``).
    """
    sender = ScheduledSender(ctx, fetch=fetch, stop=stop, lock_level=logging.INFO, tools=tools, notices=notices)
    sender.read_mailbox()  # bounces and complaints count before anyone is sent to
    result = sender.run_pass(retry_deferred=False, others=True, missed_level=logging.INFO)
    if not sender.stop.is_set():
        sender.deliver_signup_mails()
    return result
