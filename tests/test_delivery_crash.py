"""Crashes and stops of a real ``newsletter send`` process, against a real SMTP server.

The send runs as a subprocess, as cron runs it. It is killed with SIGKILL at random
(seeded) moments and started again until it finishes: every subscriber must end with the
edition, and the copies beyond one must not exceed, per kill, the number of SMTP
connections (the messages that can be accepted but not yet recorded at any instant).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter.clock import SystemClock
from newsletter.config import load_config
from newsletter.demo.sink import start_controller
from newsletter.editions import cutoff
from newsletter.preparation import resolve_day
from newsletter.store import Store
from newsletter.store.models import Delivery, DeliveryStatus
from tests.conftest import SECRET, add_article, add_subscribers

CONNECTIONS = 4


@dataclass
class CountingHandler:
    """Records accepted copies per recipient; a little slow, so a kill lands mid-send."""

    delay: float = 0.004
    copies: Counter[str] = field(default_factory=Counter)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        await asyncio.sleep(self.delay)
        for rcpt in envelope.rcpt_tos:
            self.copies[rcpt] += 1
        return "250 2.0.0 OK"


def write_config(tmp_path: Path, db_url: str, port: int) -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(
        f"""
[newsletter]
publication = "The Example Gazette"
[store]
url = "{db_url}"
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
connections = {CONNECTIONS}
[sender]
from_address = "breakfast@news.example.com"
[web]
base_url = "https://news.example.com/newsletter"
secret_key = "{SECRET}"
[delivery]
batch_size = 50
lease_seconds = 600
"""
    )
    return path


def seed(config_path: Path, readers: int) -> list[str]:
    config = load_config(config_path, environ={})
    store = Store(config.store.url)
    clock = SystemClock()
    day = resolve_day(config, clock, None)
    end = min(cutoff(day, config.newsletter.send_time, config.newsletter.zone), clock.now())
    for i in range(3):
        add_article(store, clock, f"crash-{i}", end - timedelta(hours=1 + i))  # type: ignore[arg-type]
    emails = add_subscribers(store, clock, readers)  # type: ignore[arg-type]
    store.dispose()
    return emails


def newsletter(config_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(config_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def delivery_counts(db_url: str) -> Counter[DeliveryStatus]:
    store = Store(db_url)
    with store.session() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
    store.dispose()
    return Counter({status: n for status, n in rows})


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nobody_and_duplicates_at_most_one_per_connection(db_url, tmp_path):
    rng = random.Random(20261124)
    handler = CountingHandler()
    server = start_controller(handler)
    try:
        config_path = write_config(tmp_path, db_url, server.port)
        emails = seed(config_path, 600)
        kills = 0
        for _ in range(12):
            process = newsletter(config_path, "send")
            # Kill after a random number of further messages has been accepted, so every
            # kill lands mid-send (at a random point of the claim/send/record cycle).
            target = sum(handler.copies.values()) + rng.randint(20, 250)
            while process.poll() is None and sum(handler.copies.values()) < target:
                time.sleep(0.002)
            if process.poll() is None:
                process.kill()  # SIGKILL: no handler runs, nothing is cleaned up
                process.communicate()
                kills += 1
                continue
            out, err = process.communicate()
            assert process.returncode == 0, err
            assert "sent" in out
            break
        else:
            raise AssertionError("the send never finished")
    finally:
        server.stop()
    assert kills >= 2, "the test must actually kill the send mid-way"
    missing = [e for e in emails if handler.copies[e] == 0]
    assert missing == []
    duplicates = sum(n - 1 for n in handler.copies.values() if n > 1)
    print(f"\nkills={kills} duplicates={duplicates} bound={kills * CONNECTIONS}")
    assert duplicates <= kills * CONNECTIONS
    assert delivery_counts(db_url) == Counter({DeliveryStatus.SENT: len(emails)})


@pytest.mark.slow
def test_sigterm_finishes_what_is_in_flight_and_the_next_run_resumes(db_url, tmp_path):
    handler = CountingHandler(delay=0.01)
    server = start_controller(handler)
    try:
        config_path = write_config(tmp_path, db_url, server.port)
        emails = seed(config_path, 400)
        process = newsletter(config_path, "send")
        deadline = time.monotonic() + 30
        while sum(handler.copies.values()) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 130, (out, err)
        assert "run send again to resume" in out
        counts = delivery_counts(db_url)
        assert counts[DeliveryStatus.SENDING] == 0, "nothing is left claimed by a process that has gone"
        assert 0 < counts[DeliveryStatus.SENT] < len(emails)
        assert counts[DeliveryStatus.SENT] == sum(handler.copies.values()), "every accepted copy is recorded"

        again = newsletter(config_path, "send")
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
    finally:
        server.stop()
    assert all(handler.copies[e] == 1 for e in emails), "a graceful stop never duplicates"
