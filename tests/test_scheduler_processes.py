"""Real ``newsletter scheduler`` processes against one database and one SMTP server.

Two schedulers started together send each edition once; a scheduler killed with SIGKILL in
the middle of a send is started again and completes, with no more extra copies than SMTP
connections; SIGTERM in the middle of a send leaves a state that ``send --scheduled``
resumes without a single duplicate. The send time is set a little before now (time zone
UTC), so the run is due at start-up within the grace period; the SMTP server answers a
little slowly, so there is a middle of the send to land in.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from newsletter.clock import FixedClock
from newsletter.demo.sink import start_controller
from newsletter.scheduler import JOB_TABLE
from newsletter.store import Store
from newsletter.store.models import Delivery, DeliveryStatus, Edition, EditionStatus
from tests.conftest import add_article, add_subscribers
from tests.test_scheduler import site_config

pytestmark = pytest.mark.slow
CONNECTIONS = 2


@dataclass
class SlowSink:
    """Counts the copies each recipient got, taking ``delay`` seconds over each message."""

    delay: float
    copies: Counter[str] = field(default_factory=Counter)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        await asyncio.sleep(self.delay)
        for rcpt in envelope.rcpt_tos:
            self.copies[rcpt] += 1
        return "250 2.0.0 OK"


@dataclass
class Site:
    config: Path
    store: Store
    sink: SlowSink
    readers: list[str]
    tmp_path: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = (self.tmp_path / log).open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "--config", str(self.config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.processes.append(process)
        return process

    def scheduler(self, log: str) -> subprocess.Popen[bytes]:
        return self.command("scheduler", log=log)

    def log(self, name: str) -> str:
        return (self.tmp_path / name).read_text(encoding="utf-8")

    def sent(self) -> int:
        with self.store.session() as session:
            return session.scalar(select(func.count()).where(Delivery.status == DeliveryStatus.SENT)) or 0

    def edition(self) -> Edition | None:
        with self.store.session() as session:
            return session.scalars(select(Edition)).one_or_none()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> int:
    process.send_signal(sig)
    return process.wait(timeout=timeout)


def drop_job_table(store: Store) -> None:
    if inspect(store.engine).has_table(JOB_TABLE):
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {JOB_TABLE}")


def make_site(tmp_path: Path, db_url: str, readers: int, delay: float) -> Iterator[Site]:
    sink = SlowSink(delay)
    controller = start_controller(sink)
    now = datetime.now(UTC)
    path = site_config(
        tmp_path,
        db_url,
        controller.port,
        f"{now:%H:%M:%S}",
        smtp={"connections": CONNECTIONS},
        delivery={"batch_size": 50},
    )
    store = Store(db_url)
    drop_job_table(store)
    clock = FixedClock(now)
    add_article(store, clock, "story", now - timedelta(minutes=10))
    site = Site(path, store, sink, add_subscribers(store, clock, readers), tmp_path)
    try:
        yield site
    finally:
        for process in site.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        controller.stop()
        drop_job_table(store)
        store.dispose()


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    yield from make_site(tmp_path, db_url, readers=100, delay=0.01)


@pytest.fixture
def slow_site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    """Long enough a send (about two seconds) to stop it in the middle."""
    yield from make_site(tmp_path, db_url, readers=150, delay=0.012)


def test_two_schedulers_started_together_send_the_edition_once(site: Site) -> None:
    first, second = site.scheduler("first.log"), site.scheduler("second.log")
    wait_for(lambda: (e := site.edition()) is not None and e.status == EditionStatus.SENT, what="the edition sent")
    # Both past start-up (each says when its next send is). The one that did not send may
    # have found the edition being sent or already sent, or, when both started at the same
    # moment, found the shared job already run by the other and said nothing more: all fine.
    wait_for(lambda: all("next send:" in site.log(n) for n in ("first.log", "second.log")), what="both started")
    assert stop(first) == 0 and stop(second) == 0
    assert sorted(site.sink.copies) == sorted(site.readers)
    assert set(site.sink.copies.values()) == {1}
    logs = [site.log("first.log"), site.log("second.log")]
    senders = [text for text in logs if ": sent 100, deferred 0, failed 0" in text]
    assert len(senders) == 1, logs
    (other,) = [text for text in logs if text is not senders[0]]
    assert ": sent " not in other, logs
    assert "Traceback" not in "".join(logs)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_scheduler_killed_mid_send_resumes_at_restart_and_completes(slow_site: Site) -> None:
    site = slow_site
    first = site.scheduler("first.log")
    wait_for(lambda: site.sent() >= 40, what="the send under way")
    assert stop(first, signal.SIGKILL) == -signal.SIGKILL
    edition = site.edition()
    assert edition is not None and edition.status == EditionStatus.SENDING
    assert site.sent() < len(site.readers)

    second = site.scheduler("second.log")
    wait_for(lambda: (e := site.edition()) is not None and e.status == EditionStatus.SENT, what="the edition sent")
    assert stop(second) == 0
    assert "was left part-sent: resuming it" in site.log("second.log")
    assert sorted(site.sink.copies) == sorted(site.readers)
    extra = sum(n - 1 for n in site.sink.copies.values())
    assert extra <= CONNECTIONS, f"{extra} duplicates for one kill with {CONNECTIONS} connections"
    assert site.sent() == len(site.readers)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_sigterm_mid_send_leaves_a_state_that_send_scheduled_resumes_without_duplicates(slow_site: Site) -> None:
    site = slow_site
    daemon = site.scheduler("daemon.log")
    wait_for(lambda: site.sent() >= 40, what="the send under way")
    assert stop(daemon) == 130
    log = site.log("daemon.log")
    assert "SIGTERM: stopping: no new sends; messages in flight finish and are recorded" in log
    assert "was interrupted: starting the scheduler again resumes it" in log
    with site.store.session() as session:
        in_flight = session.scalar(select(func.count()).where(Delivery.status == DeliveryStatus.SENDING))
    edition = site.edition()
    assert edition is not None and edition.status == EditionStatus.SENDING and in_flight == 0
    assert 0 < site.sent() < len(site.readers)

    cron = site.command("send", "--scheduled", log="cron.log")
    assert cron.wait(timeout=30) == 0, site.log("cron.log")
    assert ": sent " in site.log("cron.log")
    edition = site.edition()
    assert edition is not None and edition.status == EditionStatus.SENT
    assert sorted(site.sink.copies) == sorted(site.readers)
    assert set(site.sink.copies.values()) == {1}
