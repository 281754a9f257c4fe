"""``newsletter scheduler``: the daemon that sends each edition at its send time, unattended.

APScheduler's ``BlockingScheduler`` with its jobs kept in the same database, so a restart
keeps the schedule and a send missed while the process was down still goes out if it
starts within the grace period. What each job does is decided in ``due.py``, the same
code ``newsletter send --scheduled`` runs from cron.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.exc import SQLAlchemyError

from newsletter.context import Context
from newsletter.due import (
    Action,
    EditionTrigger,
    FeedFetcher,
    PassResult,
    ScheduledSender,
    decide,
    lateness_allowed,
    local_text,
    missed_message,
    scheduled_day,
    span,
    state_reader,
)
from newsletter.errors import NewsletterError, StoreError
from newsletter.inbound import configured_inboxes
from newsletter.preflight.tools import Tools
from newsletter.signals import on_stop_signals
from newsletter.store import Store, worker_identity
from newsletter.store.editions import any_editions
from newsletter.store.jobs import ensure_job_table, job_next_run
from newsletter.store.models import EditionStatus
from newsletter.transports import Transport

log = logging.getLogger(__name__)

EDITION_JOB_ID = "newsletter-edition"
RETRY_JOB_ID = "newsletter-retry"
FETCH_JOB_ID = "newsletter-fetch-feeds"
OUTBOX_JOB_ID = "newsletter-signup-mails"
MAILBOX_JOB_ID = "newsletter-mailbox"
ZONES_JOB_ID = "newsletter-zones"
ZONES_MINUTES = 1  # per-reader time zones: each zone's readers get the edition within a minute of their send time
OUTBOX_MINUTES = 1  # a reader waits for the confirmation mail: try queued ones every minute
JOB_TABLE = "apscheduler_jobs"

# --- the daemon -----------------------------------------------------------------------------


class _JobRunner(BaseExecutor):
    """Runs the daemon's jobs one at a time on one thread, handing each the daemon.

    The job table keeps only a reference to each job's function (``edition_job`` below);
    the live collaborators (a config holding secrets, the store, SMTP) are given at run time
    instead of being pickled into the database. One thread, so a retry and the morning send
    never run side by side: the process never competes with itself for an edition's lock.
    """

    def __init__(self, daemon: EditionScheduler) -> None:
        super().__init__()
        self._daemon = daemon
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="newsletter-job")

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        def done(future: concurrent.futures.Future[list[JobExecutionEvent]]) -> None:
            if future.cancelled():
                self._run_job_success(job.id, [])
            elif (exc := future.exception()) is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        self._pool.submit(self._run, job, run_times).add_done_callback(done)

    def _run(self, job: Job, run_times: list[datetime]) -> list[JobExecutionEvent]:
        self._daemon.busy.set()
        try:
            return self._run_each(job, run_times)
        finally:
            self._daemon.busy.clear()

    def _run_each(self, job: Job, run_times: list[datetime]) -> list[JobExecutionEvent]:
        events = []
        for run_time in run_times:
            late = self._daemon.ctx.clock.now() - run_time
            if job.misfire_grace_time is not None and late > timedelta(seconds=job.misfire_grace_time):
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time))
                continue
            try:
                job.func(daemon=self._daemon)
            except NewsletterError as exc:  # the database or the server is unwell: one line, try again later
                log.error("%s failed: %s", job.name, exc)
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time, exception=exc))
            except Exception as exc:
                log.exception("%s failed", job.name)
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time, exception=exc))
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time))
        return events

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


# The jobs as APScheduler stores them: by function name, with no arguments of their own. The
# runner passes the daemon in; the default only satisfies APScheduler's check at add_job.


def _given(daemon: EditionScheduler | None) -> EditionScheduler:
    if daemon is None:
        raise TypeError("this job is run by `newsletter scheduler`, which passes itself as daemon=")
    return daemon


def edition_job(*, daemon: EditionScheduler | None = None) -> None:
    """The morning's job: send the edition due, or say why not."""
    _given(daemon).on_edition_due()


def retry_job(*, daemon: EditionScheduler | None = None) -> None:
    """Every ``retry_deferred_minutes``: retry deferrals, resume anything left part-sent."""
    _given(daemon).on_retry_tick()


def outbox_job(*, daemon: EditionScheduler | None = None) -> None:
    """Every minute: send sign-up mails the mail server could not take when they were asked for."""
    _given(daemon).sender.deliver_signup_mails()


def mailbox_job(*, daemon: EditionScheduler | None = None) -> None:
    """Every ``[bounces] process_minutes``: act on bounces, complaints and mailed unsubscribes."""
    _given(daemon).sender.read_mailbox()


def zones_job(*, daemon: EditionScheduler | None = None) -> None:
    """Every minute, with per-reader time zones: release the edition to the zones whose morning has come."""
    _given(daemon).on_zones_tick()


def fetch_job(*, daemon: EditionScheduler | None = None) -> None:
    """Every ``fetch_interval_minutes``: import the feeds."""
    _given(daemon).on_fetch_tick()


class EditionScheduler:
    """``newsletter scheduler``: resume what a crash left, then send each edition at its send time."""

    def __init__(
        self,
        ctx: Context,
        *,
        fetch: FeedFetcher | None = None,
        stop: threading.Event | None = None,
        tools: Tools | None = None,
        notices: Callable[[], Transport] | None = None,
    ) -> None:
        """``tools`` and ``notices``: preflight's tools and the staff notice's transport (see ``ScheduledSender``)."""
        self.ctx = ctx
        self.stop = stop or threading.Event()
        retry = max(1, ctx.config.delivery.retry_deferred_minutes)
        hint = f"the scheduler tries again in {retry} minutes"
        self.sender = ScheduledSender(ctx, fetch=fetch, stop=self.stop, retry_hint=hint, tools=tools, notices=notices)
        self.trigger = EditionTrigger.for_config(ctx.config)
        self.results: list[PassResult] = []
        self._missed: set[date] = set()
        self._signal: str = ""
        self._next_logged: datetime | None = None
        self.busy = threading.Event()  # a job is running: what a stop has to wait for

    # --- what the jobs do ---------------------------------------------------------------------

    def on_edition_due(self) -> None:
        result = self.sender.run_pass(retry_deferred=False, others=False, missed_level=logging.DEBUG)
        self._record(result, report_missed=True)
        self._log_next()

    def on_retry_tick(self) -> None:
        quiet = logging.DEBUG  # every few minutes: only what it does is news
        result = self.sender.run_pass(retry_deferred=True, others=True, missed_level=quiet, quiet_level=quiet)
        # An edition prepared but never started (the server was down) that ran out of grace.
        self._record(result, report_missed=result.decision is not None and result.decision.state is not None)

    def on_zones_tick(self) -> None:
        result = PassResult()
        self.sender.release_zones_due(result)
        if result.reports or result.errors:
            self.results.append(result)

    def on_fetch_tick(self) -> None:
        self.sender.fetch_feeds(f"every {self.ctx.config.scheduler.fetch_interval_minutes} minutes")

    def _on_missed(self, event: JobExecutionEvent) -> None:
        if event.job_id != EDITION_JOB_ID:
            return
        day = scheduled_day(event.scheduled_run_time, self.ctx.config)
        state = self.sender.state_of(day)
        if state is None or state.status == EditionStatus.READY:
            self._report_missed(
                day, missed_message(day, event.scheduled_run_time, self.ctx.clock.now(), self.ctx.config)
            )
        else:
            log.info("the send time of the edition of %s passed while stopped; it is %s", day, state.status)
        self._log_next()

    def _record(self, result: PassResult, report_missed: bool) -> None:
        self.results.append(result)
        decision = result.decision
        if report_missed and decision is not None and decision.action == Action.MISSED:
            self._report_missed(decision.day, decision.reason)

    def _report_missed(self, day: date, line: str) -> None:
        """Once per edition, however many jobs notice it."""
        if day not in self._missed:
            self._missed.add(day)
            log.warning("%s", line)

    def _log_next(self) -> None:
        """Say when the next send is, once per send time (start-up and a caught-up job both ask)."""
        fire = self.trigger.get_next_fire_time(None, self.ctx.clock.now())
        if fire is not None and fire != self._next_logged:
            self._next_logged = fire
            day = scheduled_day(fire, self.ctx.config)
            log.info("next send: %s (the edition of %s)", local_text(fire, self.ctx.config.newsletter.zone), day)

    # --- running ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or ``stop``); 0, or 130 when a send had to be interrupted."""
        s = self.ctx.config.scheduler
        days = "every day" if len(s.days) == 7 else ", ".join(s.days)
        log.info(
            "scheduler started (%s): editions at %s %s, %s; grace period %d minutes",
            worker_identity(),
            f"{self.ctx.config.newsletter.send_time:%H:%M:%S}".removesuffix(":00"),
            self.ctx.config.newsletter.timezone,
            days,
            s.grace_minutes,
        )
        with _stop_on_signals(self):
            startup = PassResult()
            self.results.append(startup)
            self.busy.set()
            try:
                self.sender.resume_unfinished(retry_deferred=False, result=startup)
            finally:
                self.busy.clear()
            if self.stop.is_set():
                self._announce_stop()
            else:
                self._schedule()
        return self._exit_code()

    def _schedule(self) -> None:
        job_store = SQLAlchemyJobStore(
            engine=Store(self.ctx.config.store.url, application_name="newsletter scheduler jobs").engine,
            tablename=JOB_TABLE,
        )
        try:
            ensure_job_table(job_store.engine, job_store.jobs_t)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot create the scheduler's table {JOB_TABLE} in {self.ctx.store.safe_url}: {exc}"
            ) from exc
        runner = _JobRunner(self)
        scheduler = BlockingScheduler(
            jobstores={"default": job_store, "memory": MemoryJobStore()},
            executors={"default": runner},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=self.ctx.config.newsletter.zone,
        )
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self._add_jobs(scheduler)
        finished = threading.Event()
        stopper = threading.Thread(target=self._shutdown_on_stop, args=(scheduler, finished), daemon=True)
        stopper.start()
        try:
            self._log_next()
            scheduler.start()  # blocks until the stopper shuts it down
        except SQLAlchemyError as exc:  # the job table, at start-up; later errors are retried by APScheduler
            raise StoreError(
                f"cannot use the scheduler's table {JOB_TABLE} in {self.ctx.store.safe_url}: {exc}"
            ) from exc
        finally:
            finished.set()
            self.stop.set()
            runner.shutdown(wait=True)  # the send in flight winds down to a resumable state
            # BlockingScheduler's loop looks for due jobs once more after shutdown, reopening
            # the job store's engine that shutdown had closed.
            job_store.engine.dispose()

    def _add_jobs(self, scheduler: BlockingScheduler) -> None:
        # A send time passed while this process was down: run the job for it at once. The
        # runner then sends (within the grace period) or reports it missed, exactly as if
        # the process had been up but late. APScheduler would otherwise compute the next
        # run from now and forget it.
        decision = decide(self.ctx.clock.now(), self.ctx.config, self.sender.state_of)
        missed_run = {"next_run_time": decision.cutoff} if decision.action in (Action.SEND, Action.MISSED) else {}
        if decision.action == Action.MISSED and not self._was_scheduled(decision.cutoff):
            # A new install, or a send time moved earlier: nobody expected that edition.
            log.info(
                "the send time of the edition of %s passed before this schedule covered it; "
                "the first edition it sends is the next one (`newsletter send --date %s` sends that one anyway)",
                decision.day,
                decision.day,
            )
            missed_run = {}
        scheduler.add_job(
            edition_job,
            trigger=self.trigger,
            id=EDITION_JOB_ID,
            name="the morning's edition",
            replace_existing=True,
            misfire_grace_time=int(lateness_allowed(self.ctx.config).total_seconds()),
            **missed_run,
        )
        scheduler.add_job(
            retry_job,
            "interval",
            minutes=max(1, self.ctx.config.delivery.retry_deferred_minutes),
            id=RETRY_JOB_ID,
            name="retrying deferred messages",
            jobstore="memory",
            misfire_grace_time=None,
        )
        scheduler.add_job(
            outbox_job,
            "interval",
            minutes=OUTBOX_MINUTES,
            id=OUTBOX_JOB_ID,
            name="sending queued sign-up mails",
            jobstore="memory",
            misfire_grace_time=None,
        )
        if self.ctx.config.bounces.process_minutes and configured_inboxes(self.ctx.config):
            scheduler.add_job(
                mailbox_job,
                "interval",
                minutes=self.ctx.config.bounces.process_minutes,
                id=MAILBOX_JOB_ID,
                name="reading the bounce mailbox",
                jobstore="memory",
                misfire_grace_time=None,
            )
        if self.ctx.config.newsletter.per_reader_timezone:
            scheduler.add_job(
                zones_job,
                "interval",
                minutes=ZONES_MINUTES,
                id=ZONES_JOB_ID,
                name="releasing the edition zone by zone",
                jobstore="memory",
                misfire_grace_time=None,
            )
        if self.sender.fetch is not None and self.ctx.config.scheduler.fetch_interval_minutes:
            scheduler.add_job(
                fetch_job,
                "interval",
                minutes=self.ctx.config.scheduler.fetch_interval_minutes,
                id=FETCH_JOB_ID,
                name="fetching feeds",
                jobstore="memory",
                misfire_grace_time=None,
            )

    def _was_scheduled(self, due_at: datetime) -> bool:
        """Whether the schedule in force before this start expected a send at ``due_at``.

        The job table remembers the previous daemon's next run: at or before ``due_at``, that
        send was expected and is really missed. With no job table yet, it was expected only
        if editions have gone out before (by cron or by hand); a fresh install expected none.
        """
        stored = stored_next_run(self.ctx.store)
        if stored is None:
            return _has_editions(self.ctx.store)
        return stored <= due_at

    def _shutdown_on_stop(self, scheduler: BlockingScheduler, finished: threading.Event) -> None:
        self.stop.wait()
        if finished.is_set():
            return
        self._announce_stop()
        while True:  # a stop can come just before the scheduler has started
            try:
                scheduler.shutdown(wait=False)
                return
            except SchedulerNotRunningError:
                if finished.wait(0.05):
                    return

    def _announce_stop(self) -> None:
        because = f"{self._signal}: " if self._signal else ""
        if self.busy.is_set():
            log.info("%sstopping: no new sends; messages in flight finish and are recorded", because)
        else:
            log.info("%sstopping (nothing was being sent)", because)

    def _exit_code(self) -> int:
        interrupted = sorted({r.day for p in self.results for r in p.reports if r.outcome == "interrupted"})
        for day in interrupted:
            log.warning("the edition of %s was interrupted: starting the scheduler again resumes it", day)
        log.info("scheduler stopped")
        return 130 if interrupted else 0


def _stop_on_signals(daemon: EditionScheduler) -> AbstractContextManager[None]:
    """First SIGTERM/SIGINT: stop gracefully. A second: exit at once (as safe as a crash)."""

    def react(name: str) -> None:
        if daemon.stop.is_set():
            if daemon.busy.is_set():
                os.write(2, b"second signal: exiting at once; starting again resumes the edition\n")
                os._exit(130)
            os._exit(0)  # nothing in flight: an ordinary stop, only sooner
        daemon._signal = name
        daemon.stop.set()

    return on_stop_signals(react)


# --- for ``newsletter status`` --------------------------------------------------------------


def stored_next_run(store: Store) -> datetime | None:
    """The next run time the daemon's job table holds, if a daemon has ever run on this database."""
    return job_next_run(store.engine, JOB_TABLE, EDITION_JOB_ID)


def _has_editions(store: Store) -> bool:
    with store.session() as session:
        return any_editions(session)


def schedule_summary(ctx: Context) -> list[str]:
    """Lines for ``status``: the next scheduled send, what the daemon's job says, and a missed edition."""
    config, store = ctx.config, ctx.store
    zone = config.newsletter.zone
    now = ctx.clock.now()
    trigger = EditionTrigger.for_config(config)
    fire = trigger.get_next_fire_time(None, now)
    lines = []
    if fire is not None:
        lines.append(
            f"next scheduled send: the edition of {scheduled_day(fire, config)} at {local_text(fire, zone)} "
            f"(in {span(fire - now)})"
        )
    stored = stored_next_run(store)
    if stored is not None:
        same = fire is not None and stored == fire.astimezone(UTC)
        note = "" if same else " (differs from the configuration: restart `newsletter scheduler` to apply it)"
        lines.append(f"scheduler job in the database: next run at {local_text(stored, zone)}{note}")
    decision = decide(now, config, state_reader(store))
    if decision.action == Action.MISSED and _has_editions(store):  # a fresh install has missed nothing
        lines.append(decision.reason)
    elif decision.action == Action.SEND:
        lines.append(f"{decision.reason} and not sent yet: the scheduler or `newsletter send` sends it")
    elif decision.action == Action.HELD:
        lines.append(decision.reason)
    return lines


__all__ = ["EditionScheduler", "schedule_summary", "stored_next_run"]
