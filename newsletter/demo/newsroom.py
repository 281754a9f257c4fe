"""``newsletter demo``: a realistic morning, end to end, without leaving this machine.

It writes a config, seeds a SQLite database with a morning's articles and N subscribers,
starts the bundled SMTP sink in its own process (storing into ``DIR/outbox``, a Maildir),
and sends the edition through the same path production uses: real SMTP, real delivery log.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from newsletter import release
from newsletter.articles import ArticleInput, upsert_article
from newsletter.clock import Clock, FixedClock
from newsletter.config import load_config
from newsletter.context import Context
from newsletter.delivery import RunStats
from newsletter.demo.sink import free_port
from newsletter.editions import cutoff
from newsletter.errors import NewsletterError, UsageError
from newsletter.preparation import preview_edition, resolve_day
from newsletter.publish import SendReport, send_edition
from newsletter.release import ZoneRelease
from newsletter.render import fill_markers
from newsletter.store import Store
from newsletter.store.readers import active_zone_counts, add_active_subscribers
from newsletter.tokens import Tokens

MARKER_FILE = ".newsletter-demo"
DEMO_FILES = ("newsletter.toml", "demo.db", "demo.db-wal", "demo.db-shm", "preview.html", "sink.log")

FIRST_NAMES = [
    "Ana",
    "Zoë",
    "Siobhán",
    "Mohammed",
    "Chloé",
    "Łukasz",
    "Priya",
    "Kwame",
    "Mei",
    "Jürgen",
    "Aoife",
    "José",
    "Nguyễn",
    "Olamide",
    "Ingrid",
    "Rhys",
    "Fatima",
    "Tomás",
    "Yuki",
    "Eilidh",
    "Dmitri",
    "Amara",
    "Björn",
    "",
]
SURNAMES = [
    "Smith",
    "O’Brien",
    "Kowalski",
    "Okafor",
    "Müller",
    "Nakamura",
    "García",
    "Patel",
    "Ní Bhriain",
    "Jones",
    "Haddad",
    "Sørensen",
    "Brennan",
    "Adeyemi",
    "Dubois",
    "MacLeod",
    "Novák",
    "Chen",
    "Evans",
    "Rossi",
]
DOMAINS = ["example.org", "example.net", "example.com"]
# ``--zones``: readers spread over these, "" being those who gave none (the newsroom's).
NEWSROOM_ZONE = "Europe/London"
DEMO_ZONES = (
    "",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Africa/Lagos",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Chatham",
)


@dataclass(frozen=True)
class ZoneStep:
    """One moment of the simulated day: the zones whose morning came, and what was sent then."""

    at: datetime  # UTC
    zones: tuple[ZoneRelease, ...]
    sent: int


@dataclass(frozen=True)
class DemoResult:
    report: SendReport
    delivered: int
    outbox: Path
    preview: Path
    config_path: Path
    zone_steps: tuple[ZoneStep, ...] = ()


def _ascii(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return "".join(c for c in plain if c.isalnum()) or "reader"


def _prepare_directory(directory: Path) -> None:
    """Only ever deletes what an earlier demo made there."""
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER_FILE).exists():
        raise UsageError(f"{directory} exists and was not made by `newsletter demo`; choose another --dir")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER_FILE).write_text("made by `newsletter demo`; safe to delete\n")
    for name in DEMO_FILES:
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / "outbox", ignore_errors=True)


def _write_config(directory: Path, port: int, zones: bool = False) -> Path:
    path = directory / "newsletter.toml"
    path.write_text(
        f"""# Written by `newsletter demo`; rewritten on every run.
[newsletter]
name = "Breakfast in red"
publication = "The Example Gazette"
timezone = "{NEWSROOM_ZONE}"
send_time = "06:00"
per_reader_timezone = {"true" if zones else "false"}
address = "The Example Gazette, 1 Quay Street, Portside PS1 2AB"

[store]
url = "sqlite:///demo.db"

[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
connections = 4

[sender]
from_address = "breakfast@news.example.com"
from_name = "Breakfast in red"
reply_to = "newsdesk@news.example.com"

[web]
base_url = "https://news.example.com/newsletter"
secret_key = "{secrets.token_urlsafe(32)}"
""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


def _start_sink(directory: Path, port: int) -> subprocess.Popen[str]:
    with (directory / "sink.log").open("w") as log:  # the child keeps its own copy of the descriptor
        sink = subprocess.Popen(
            [sys.executable, "-m", "newsletter.demo.sink", "--port", str(port), "--maildir", str(directory / "outbox")],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert sink.stdout is not None
    line = sink.stdout.readline()
    if not line.startswith("ready"):
        _stop_sink(sink)
        raise NewsletterError(f"the demo SMTP server did not start; see {directory / 'sink.log'}")
    return sink


def _stop_sink(sink: subprocess.Popen[str]) -> None:
    sink.terminate()
    try:
        sink.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        sink.kill()
        sink.communicate()


def seed(ctx: Context, subscribers: int, zones: Sequence[str] = ("",)) -> None:
    """A morning's articles ending just before the edition's cutoff, and N readers, spread over ``zones``."""
    config, store, clock = ctx.config, ctx.store, ctx.clock
    day = resolve_day(config, clock, None)
    end = min(cutoff(day, config.newsletter.send_time, config.newsletter.zone), clock.now())
    items = json.loads(resources.files("newsletter.demo").joinpath("articles.json").read_text(encoding="utf-8"))
    with store.session() as session:
        for item in items:
            hours = item.pop("hours_before_cutoff")
            guid = item.pop("guid")
            upsert_article(
                session,
                ArticleInput(
                    guid=f"https://news.example.com/{guid}",
                    url=f"https://news.example.com/{guid}",
                    published_at=end - timedelta(hours=hours),
                    **item,
                ),
                clock,
            )

    def readers() -> Iterator[tuple[str, str, str]]:
        for i in range(subscribers):
            first, last = FIRST_NAMES[i % len(FIRST_NAMES)], SURNAMES[(i // len(FIRST_NAMES)) % len(SURNAMES)]
            email = f"{_ascii(first)}.{_ascii(last)}.{i + 1}@{DOMAINS[i % len(DOMAINS)]}"
            yield email, f"{first} {last}".strip(), zones[i % len(zones)]

    add_active_subscribers(store.engine, readers(), "demo", clock.now(), chunk=5000)


def run_demo(
    directory: Path,
    subscribers: int,
    clock: Clock,
    on_progress: Callable[[RunStats], None] | None = None,
    *,
    zones: bool = False,
) -> DemoResult:
    """The demo; with ``zones``, readers spread over time zones and a day simulated on a pinned
    clock, from the newsroom's send time to the last zone's, releasing each zone as its morning comes."""
    if subscribers < 0:
        raise UsageError("--subscribers must be 0 or more")
    directory = directory.resolve()
    _prepare_directory(directory)
    port = free_port()
    sink = _start_sink(directory, port)
    steps: tuple[ZoneStep, ...] = ()
    try:
        config_path = _write_config(directory, port, zones)
        config = load_config(config_path, environ={})
        store = Store(config.store.url)
        try:
            store.upgrade()
            n = config.newsletter
            if zones:
                day_clock = FixedClock(cutoff(resolve_day(config, clock, None), n.send_time, n.zone))
                ctx = Context(config, store, day_clock, Tokens(config.web.secret_key, day_clock))
                seed(ctx, subscribers, DEMO_ZONES)
                report, steps = _simulate_day(ctx, on_progress)
            else:
                ctx = Context(config, store, clock, Tokens(config.web.secret_key, clock))
                seed(ctx, subscribers)
                report = send_edition(ctx, on_progress=on_progress)
            shown = preview_edition(ctx, report.day)
        finally:
            store.dispose()
    finally:
        _stop_sink(sink)
    preview = directory / "preview.html"
    if shown.html:
        sample = fill_markers(shown.html, shown.markers, greeting="Good morning, Ana", unsubscribe_url="#unsubscribe")
        preview.write_text(sample, encoding="utf-8")
    outbox = directory / "outbox"
    delivered = len(os.listdir(outbox / "new")) if (outbox / "new").is_dir() else 0
    return DemoResult(
        report=report,
        delivered=delivered,
        outbox=outbox,
        preview=preview,
        config_path=config_path,
        zone_steps=steps,
    )


def _simulate_day(
    ctx: Context, on_progress: Callable[[RunStats], None] | None
) -> tuple[SendReport, tuple[ZoneStep, ...]]:
    """Send at the newsroom's cutoff, then move the clock to each zone's morning and send again.

    Each send is the one cron or the scheduler would make at that minute: it releases the
    zones whose morning has come and sends to their readers, through the real pipeline.
    """
    config, clock = ctx.config, ctx.clock
    assert isinstance(clock, FixedClock)  # the day is simulated on a pinned clock, moved to each zone's morning
    day = resolve_day(config, clock, None)
    with ctx.store.reading() as session:
        counts = active_zone_counts(session)
    n = config.newsletter
    planned = release.plan(day, n.send_time, n.zone, counts)
    moments = sorted({max(r.at, clock.now()) for r in planned})
    steps = []
    report: SendReport | None = None
    for moment in moments:
        clock.set(moment)
        report = send_edition(ctx, day=day, on_progress=on_progress)
        sent = report.stats.sent if report.stats is not None else 0
        steps.append(ZoneStep(moment, tuple(r for r in planned if max(r.at, moments[0]) == moment), sent))
    assert report is not None
    return report, tuple(steps)
