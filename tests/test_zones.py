"""Each reader's own morning: the edition released zone by zone, on a pinned clock.

The newsroom is in London and sends at 06:00. Readers in London, New York, Los Angeles,
Kolkata (+05:30), Kathmandu (+05:45), Sydney, Auckland and Chatham (+12:45) each get the
edition at 06:00 on their own clock: the first such moment from the newsroom's cutoff on.
The release times are checked for every day of a year (both DST changes in London, Sydney
and Los Angeles among them); then one edition is walked through a whole day of releases
against a real SMTP server, and a sender is killed with SIGKILL in the middle of a zone's
release and started again.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time as timer
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from newsletter import release
from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config, load_config
from newsletter.context import Context
from newsletter.demo.sink import start_controller
from newsletter.due import Action, PassResult, ScheduledSender, decide
from newsletter.editions import cutoff
from newsletter.store import Store
from newsletter.store.models import Edition, EditionStatus, Subscriber
from newsletter.tokens import Tokens
from tests.conftest import add_article, add_subscribers
from tests.test_scheduler import write_toml

LONDON = ZoneInfo("Europe/London")
SIX = time(6, 0)
ZONES = (
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Chatham",
)
SECRET = "zones-test-secret-key-zones-test-secret-key"


# --- when: pure ---------------------------------------------------------------------------------


def test_each_zone_gets_the_edition_at_six_on_its_own_clock() -> None:
    day = date(2026, 12, 1)  # London on GMT, Sydney on AEDT, Chatham on +13:45
    expected = {
        "Europe/London": datetime(2026, 12, 1, 6, 0, tzinfo=UTC),
        "America/New_York": datetime(2026, 12, 1, 11, 0, tzinfo=UTC),
        "America/Los_Angeles": datetime(2026, 12, 1, 14, 0, tzinfo=UTC),
        # Their 06:00 on the 1st came before London's: the next one, on the 2nd.
        "Asia/Kolkata": datetime(2026, 12, 2, 0, 30, tzinfo=UTC),
        "Asia/Kathmandu": datetime(2026, 12, 2, 0, 15, tzinfo=UTC),
        "Australia/Sydney": datetime(2026, 12, 1, 19, 0, tzinfo=UTC),
        "Pacific/Auckland": datetime(2026, 12, 1, 17, 0, tzinfo=UTC),
        "Pacific/Chatham": datetime(2026, 12, 1, 16, 15, tzinfo=UTC),
    }
    for name, at in expected.items():
        assert release.release_time(day, SIX, LONDON, ZoneInfo(name)) == at, name
    counts = {name: 1 for name in ZONES[1:]} | {"": 3}
    planned = release.plan(day, SIX, LONDON, counts)
    assert [r.zone for r in planned] == [
        "",
        "America/New_York",
        "America/Los_Angeles",
        "Pacific/Chatham",
        "Pacific/Auckland",
        "Australia/Sydney",
        "Asia/Kathmandu",
        "Asia/Kolkata",
    ]
    assert planned[0].at == cutoff(day, SIX, LONDON) and planned[0].readers == 3


@pytest.mark.parametrize("newsroom", ["Europe/London", "Australia/Sydney", "America/Los_Angeles"])
def test_every_day_of_a_year_every_zone_gets_one_edition_a_morning_at_six(newsroom: str) -> None:
    """Through every DST change of the newsroom and of the readers: 06:00 local, never before
    the edition is made, within 25 hours of it, and one morning never gets two editions."""
    home = ZoneInfo(newsroom)
    for name in ZONES:
        zone = ZoneInfo(name)
        previous: datetime | None = None
        for n in range(366):
            day = date(2026, 1, 1) + timedelta(days=n)
            made = cutoff(day, SIX, home)
            at = release.release_time(day, SIX, home, zone)
            local = at.astimezone(zone)
            assert local.time() == SIX, (newsroom, name, day, local)
            assert made <= at < made + timedelta(hours=25), (newsroom, name, day)
            if previous is not None:
                assert local.date() == previous.astimezone(zone).date() + timedelta(days=1), (newsroom, name, day)
            previous = at


def test_the_dst_days_in_london_and_sydney() -> None:
    cases = [
        # London springs forward on 29 March: cutoff 06:00 BST = 05:00 UTC.
        (date(2026, 3, 29), "Europe/London", datetime(2026, 3, 29, 5, 0, tzinfo=UTC)),
        (date(2026, 3, 29), "America/New_York", datetime(2026, 3, 29, 10, 0, tzinfo=UTC)),  # EDT since 8 March
        # London falls back on 25 October: 06:00 GMT.
        (date(2026, 10, 25), "Europe/London", datetime(2026, 10, 25, 6, 0, tzinfo=UTC)),
        (date(2026, 10, 25), "America/New_York", datetime(2026, 10, 25, 10, 0, tzinfo=UTC)),  # still EDT
        # Sydney leaves DST on 5 April (06:00 AEST the 6th = 20:00 UTC the 5th) ...
        (date(2026, 4, 5), "Australia/Sydney", datetime(2026, 4, 5, 20, 0, tzinfo=UTC)),
        # ... and enters it on 4 October (06:00 AEDT the 5th = 19:00 UTC the 4th).
        (date(2026, 10, 4), "Australia/Sydney", datetime(2026, 10, 4, 19, 0, tzinfo=UTC)),
        # Los Angeles on its own change days.
        (date(2026, 3, 8), "America/Los_Angeles", datetime(2026, 3, 8, 13, 0, tzinfo=UTC)),
        (date(2026, 11, 1), "America/Los_Angeles", datetime(2026, 11, 1, 14, 0, tzinfo=UTC)),
    ]
    for day, name, at in cases:
        assert release.release_time(day, SIX, LONDON, ZoneInfo(name)) == at, (day, name)


def test_a_send_time_in_a_readers_dst_gap_lands_past_the_gap() -> None:
    # 02:30 does not exist in New York on 8 March 2026: read as 03:30 EDT, as the newsroom's own would be.
    at = release.release_time(date(2026, 3, 8), time(2, 30), ZoneInfo("UTC"), ZoneInfo("America/New_York"))
    assert at == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


def test_a_zone_gone_from_tzdata_goes_by_the_newsrooms_with_a_warning() -> None:
    (gone,) = release.plan(date(2026, 12, 1), SIX, LONDON, {"Mars/Olympus_Mons": 4})
    assert gone.at == cutoff(date(2026, 12, 1), SIX, LONDON) and gone.readers == 4
    assert gone.warning and "Mars/Olympus_Mons" in gone.warning


def test_due_takes_each_zone_once() -> None:
    planned = release.plan(date(2026, 12, 1), SIX, LONDON, {"": 1, "America/New_York": 1, "Asia/Kolkata": 1})
    at = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    assert [r.zone for r in release.due(planned, None, at)] == [""]
    assert release.due(planned, at, at + timedelta(hours=4)) == []
    later = at + timedelta(hours=5)
    assert [r.zone for r in release.due(planned, at, later)] == ["America/New_York"]
    assert [r.zone for r in release.still_to_come(planned, later)] == ["Asia/Kolkata"]
    # Sent by hand before the send time: the newsroom's readers get it then.
    assert [r.zone for r in release.due(planned, None, at - timedelta(hours=2))] == [""]


# --- a day of releases, through the scheduler's pass, against a real SMTP server ---------------------


@dataclass
class Recorder:
    """Who got what, and at what pinned time."""

    clock: FixedClock
    delay: float = 0.0
    got: list[tuple[str, datetime]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        if self.delay:
            await asyncio.sleep(self.delay)
        self.got.extend((rcpt, self.clock.now()) for rcpt in envelope.rcpt_tos)
        return "250 2.0.0 OK"

    def copies(self) -> Counter[str]:
        return Counter(rcpt for rcpt, _ in self.got)


def zoned_site(tmp_path: Path, port: int, connections: int = 2) -> Path:
    return write_toml(
        tmp_path / "newsletter.toml",
        {
            "newsletter": {
                "publication": "The Example Gazette",
                "timezone": "Europe/London",
                "send_time": "06:00",
                "per_reader_timezone": True,
            },
            "store": {"url": f"sqlite:///{tmp_path / 'news.db'}"},
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5, "connections": connections},
            "sender": {"from_address": "breakfast@news.example.com"},
            "web": {"base_url": "https://news.example.com/newsletter", "secret_key": SECRET},
            "scheduler": {"fetch_feeds": False},
        },
    )


@dataclass
class Newsroom:
    """A zoned site on a SQLite file, its SMTP sink and a pinned clock, with one story to send."""

    path: Path
    config: Config
    store: Store
    clock: FixedClock
    sink: Recorder

    @property
    def ctx(self) -> Context:
        return Context(self.config, self.store, self.clock, Tokens(SECRET, self.clock))


@contextmanager
def newsroom(tmp_path: Path, at: datetime, delay: float = 0.0, connections: int = 2) -> Iterator[Newsroom]:
    clock = FixedClock(at)
    sink = Recorder(clock, delay=delay)
    controller = start_controller(sink)
    try:
        path = zoned_site(tmp_path, controller.port, connections=connections)
        config = load_config(path, environ={})
        store = Store(config.store.url)
        store.upgrade()
        add_article(store, clock, "harbour", datetime(2026, 11, 30, 20, 0, tzinfo=UTC))
        try:
            yield Newsroom(path, config, store, clock, sink)
        finally:
            store.dispose()
    finally:
        controller.stop()


def seed_zones(store: Store, clock: FixedClock, per_zone: int) -> dict[str, list[str]]:
    """``per_zone`` readers in each zone ("" for London's own readers, who gave none)."""
    readers: dict[str, list[str]] = {}
    for i, name in enumerate(("", *ZONES[1:])):
        emails = add_subscribers(store, clock, per_zone, prefix=f"z{i}-")
        with store.session() as session:
            session.execute(update(Subscriber).where(Subscriber.email.in_(emails)).values(timezone=name))
        readers[name] = emails
    return readers


def test_one_edition_goes_out_zone_by_zone_through_a_day(tmp_path: Path) -> None:
    with newsroom(tmp_path, datetime(2026, 12, 1, 5, 0, tzinfo=UTC)) as site:
        config, store, clock, sink = site.config, site.store, site.clock, site.sink
        readers = seed_zones(store, clock, per_zone=3)
        sender = ScheduledSender(site.ctx)

        def run(at: datetime) -> PassResult:
            clock.set(at)
            result = sender.run_pass(retry_deferred=False, others=True)
            sender.release_zones_due(result)
            return result

        release_at = {
            "": datetime(2026, 12, 1, 6, 0, tzinfo=UTC),
            **{z: release.release_time(date(2026, 12, 1), SIX, LONDON, ZoneInfo(z)) for z in ZONES[1:]},
        }
        first = run(datetime(2026, 12, 1, 6, 0, tzinfo=UTC))
        assert first.decision is not None and first.decision.action == Action.SEND
        assert sorted(sink.copies()) == sorted(readers[""])
        # Every later release, one zone at a time, a minute after its morning comes.
        for name, at in sorted(release_at.items(), key=lambda item: item[1])[1:]:
            before = set(sink.copies())
            still = decide(at - timedelta(minutes=1), config, sender.state_of)
            assert still.action == Action.NOT_DUE and name in still.reason, still.reason
            run(at + timedelta(minutes=1))
            assert set(sink.copies()) - before == set(readers[name]), name
            with store.session() as session:
                status = session.scalars(select(Edition.status)).one()
            last = at == max(release_at.values())
            assert status == (EditionStatus.SENT if last else EditionStatus.SENDING), name
        assert set(sink.copies().values()) == {1}
        for name, emails in readers.items():
            for email in emails:
                (when,) = [t for r, t in sink.got if r == email]
                local = when.astimezone(ZoneInfo(name or "Europe/London"))
                assert (local.hour, local.minute) == (6, 1 if name else 0), (name, local)
        assert decide(clock.now(), config, sender.state_of).action == Action.DONE


def test_status_names_the_zones_still_to_come(tmp_path: Path, runner: Any) -> None:
    with newsroom(tmp_path, datetime(2026, 12, 1, 6, 0, tzinfo=UTC)) as site:
        path, store, clock = site.path, site.store, site.clock
        seed_zones(store, clock, per_zone=1)
        ScheduledSender(site.ctx).run_pass(retry_deferred=False, others=True)
        store.dispose()
        result = runner.invoke(cli, ["--config", str(path), "status", "--date", "2026-12-01"])
        assert result.exit_code == 0, result.output
        assert "zone by zone: 7 zones still to come" in result.stdout
        assert "America/New_York at 2026-12-01 11:00 GMT (1 reader)" in result.stdout
        assert "Asia/Kolkata at 2026-12-02 00:30 GMT (1 reader)" in result.stdout


# --- SIGKILL in the middle of a zone's release -------------------------------------------------------

RUN_AT = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from newsletter.clock import FixedClock
    from newsletter.config import Config, load_config
    from newsletter.context import Context
    from newsletter.due import PassResult, ScheduledSender
    from newsletter.store import Store
    from newsletter.tokens import Tokens

    config = load_config(sys.argv[1], environ={})
    clock = FixedClock(datetime.fromisoformat(sys.argv[2]))
    sender = ScheduledSender(Context(config, Store(config.store.url), clock, Tokens(config.web.secret_key, clock)))
    result = sender.run_pass(retry_deferred=False, others=True)
    sender.release_zones_due(result)
    print("reports:", [r.message for r in result.reports], "errors:", result.errors)
    """
)


def test_a_sender_killed_during_a_zones_release_resumes_without_losing_or_doubling(tmp_path: Path) -> None:
    connections = 2
    with newsroom(tmp_path, datetime(2026, 12, 1, 6, 0, tzinfo=UTC), delay=0.01, connections=connections) as site:
        path, store, clock, sink = site.path, site.store, site.clock, site.sink
        london = add_subscribers(store, clock, 20, prefix="london")
        new_york = add_subscribers(store, clock, 150, prefix="ny")
        with store.session() as session:
            session.execute(
                update(Subscriber).where(Subscriber.email.in_(new_york)).values(timezone="America/New_York")
            )

        def sender_at(at: str) -> subprocess.Popen[bytes]:
            with (tmp_path / "senders.log").open("ab") as out:
                return subprocess.Popen([sys.executable, "-c", RUN_AT, str(path), at], stdout=out, stderr=out)

        assert sender_at("2026-12-01T06:00:00+00:00").wait(timeout=60) == 0
        assert sorted(sink.copies()) == sorted(london)
        killed = sender_at("2026-12-01T11:00:30+00:00")
        deadline = timer.monotonic() + 30
        while sum(1 for r, _ in sink.got if r.startswith("ny")) < 40:
            assert timer.monotonic() < deadline and killed.poll() is None, "the New York release never got going"
            timer.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(timeout=10) == -signal.SIGKILL
        with store.session() as session:
            assert session.scalars(select(Edition.status)).one() == EditionStatus.SENDING
        # Started again a few minutes later (cron's next turn): it resumes the zone's send.
        again = sender_at("2026-12-01T11:05:00+00:00")
        assert again.wait(timeout=60) == 0
        copies = sink.copies()
        assert sorted(copies) == sorted(london + new_york), (tmp_path / "senders.log").read_text()
        extra = sum(n - 1 for n in copies.values())
        assert extra <= connections, f"{extra} duplicates for one kill with {connections} connections"
        with store.session() as session:
            assert session.scalars(select(Edition.status)).one() == EditionStatus.SENT


def test_the_daemon_releases_zones_every_minute(tmp_path: Path) -> None:
    from apscheduler.schedulers.blocking import BlockingScheduler

    from newsletter.scheduler import ZONES_JOB_ID, EditionScheduler, zones_job

    with newsroom(tmp_path, datetime(2026, 12, 1, 6, 0, tzinfo=UTC)) as site:
        config, store, clock, sink = site.config, site.store, site.clock, site.sink
        readers = seed_zones(store, clock, per_zone=1)
        daemon = EditionScheduler(site.ctx)
        scheduler = BlockingScheduler(timezone=UTC)
        scheduler.add_jobstore("memory", alias="memory")
        daemon._add_jobs(scheduler)
        job = scheduler.get_job(ZONES_JOB_ID)
        assert job is not None and job.trigger.interval == timedelta(minutes=1)
        daemon.on_edition_due()  # the morning's job: the newsroom's readers
        assert set(sink.copies()) == set(readers[""])
        clock.set(datetime(2026, 12, 1, 11, 0, 30, tzinfo=UTC))
        zones_job(daemon=daemon)  # New York's morning
        assert set(sink.copies()) == set(readers[""] + readers["America/New_York"])
        zones_job(daemon=daemon)  # nothing new: nothing sent, nothing doubled
        assert len(sink.got) == 2
        everyone = replace(config, newsletter=replace(config.newsletter, per_reader_timezone=False))
        plain = EditionScheduler(replace(site.ctx, config=everyone))
        scheduler = BlockingScheduler(timezone=UTC)
        scheduler.add_jobstore("memory", alias="memory")
        plain._add_jobs(scheduler)
        assert scheduler.get_job(ZONES_JOB_ID) is None
