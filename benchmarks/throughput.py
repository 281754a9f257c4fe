"""Sending throughput and memory of the real pipeline, against the protocol floor.

    python benchmarks/throughput.py                      # 100,000 subscribers, SQLite
    python benchmarks/throughput.py -n 1000 -n 100000    # several list sizes in one run
    python benchmarks/throughput.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench

For each list size it builds a fresh database with N active subscribers and a realistic
edition (about 50 KB of HTML after CSS inlining), starts a local SMTP sink (Postfix's
``smtp-sink`` when installed, else the bundled aiosmtpd sink, each in its own process),
and runs in a child process, so its peak RSS is its own:

* pipeline: ``newsletter.publish.send_edition``, the path ``newsletter send`` takes:
  claim, personalise, SMTP, durable delivery log;
* floor: the same number of pre-built messages through the same SMTP connection pool with
  the same number of connections, with no database and no per-message work.

The pipeline runs once per ``--dkim`` mode (by default without DKIM and with an RSA-2048
signature on every copy; also ``ed25519-sha256`` and ``dual``) and ``--tracking`` mode
(click tracking on, the default, or off), each against the same floor.

With ``--zones N`` the readers are spread over N time zones and each mode also runs with
``[newsletter] per_reader_timezone``: the edition is released zone by zone, one send per
zone's morning on a pinned clock (the day compressed, as ``newsletter demo --zones`` does),
and the pipeline's rate is the readers over the sum of those sends' times: what releasing
zone by zone adds to the send.

Each is run ``--rounds`` times, alternating, and the medians are compared: on a shared
machine single runs vary by a quarter or more.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTIONS = ["News", "Politics", "Business", "World", "Culture", "Sport", "Science", "Opinion"]
WORDS = [
    "council",
    "harbour",
    "bridge",
    "budget",
    "school",
    "river",
    "festival",
    "market",
    "station",
    "library",
    "hospital",
    "ferry",
    "election",
    "museum",
    "stadium",
    "theatre",
    "community",
    "weather",
    "report",
    "review",
    "season",
    "quay",
]


DKIM_MODES = ("off", "rsa-sha256", "ed25519-sha256", "dual")
# Thirty zones with thirty different offsets from UTC (half hours and Chatham's +12:45 among them).
ZONES = (
    "",
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Halifax",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Atlantic/South_Georgia",
    "Atlantic/Azores",
    "Africa/Lagos",
    "Africa/Cairo",
    "Europe/Moscow",
    "Asia/Tehran",
    "Asia/Dubai",
    "Asia/Kabul",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Dhaka",
    "Asia/Yangon",
    "Asia/Bangkok",
    "Asia/Singapore",
    "Australia/Eucla",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Pacific/Chatham",
)


def _dkim_text(directory: Path, mode: str) -> str:
    """A [dkim] table signing with fresh keys: RSA-2048, ed25519, or both (dual signing)."""
    if mode == "off":
        return ""
    from newsletter.dkim import generate_key

    lines = ["[dkim]", 'domain = "news.example.com"']
    first = "ed25519-sha256" if mode == "ed25519-sha256" else "rsa-sha256"
    for algorithm, setting in [(first, "key_file")] + (
        [("ed25519-sha256", "ed25519_key_file")] if mode == "dual" else []
    ):
        key_path = directory / f"{algorithm}.pem"
        if not key_path.exists():
            key_path.write_bytes(generate_key(algorithm)[0])
        lines.append(f'{setting} = "{key_path}"')
    lines += [f'selector = "bench-{first[:3]}"', f'algorithm = "{first}"']
    if mode == "dual":
        lines.append('ed25519_selector = "bench-ed"')
    return "\n".join(lines) + "\n"


def _config_text(
    directory: Path,
    port: int,
    database_url: str,
    connections: int,
    dkim: str = "off",
    tracking: str = "on",
    zones: bool = False,
) -> str:
    return (
        _dkim_text(directory, dkim)
        + ("" if tracking == "on" else "[tracking]\nclicks = false\n")
        + f"""
[newsletter]
per_reader_timezone = {"true" if zones else "false"}
publication = "The Example Gazette"
address = "1 Quay Street, Portside PS1 2AB"
[store]
url = "{database_url or "sqlite:///" + str(directory / "bench.db")}"
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
connections = {connections}
[sender]
from_address = "breakfast@news.example.com"
[web]
base_url = "https://news.example.com/newsletter"
secret_key = "benchmark-secret-key-benchmark-secret-key"
"""
    )


def _seed(config_path: Path, subscribers: int, articles: int, zones: int = 0) -> None:
    from sqlalchemy import delete

    from newsletter.articles import ArticleInput, upsert_article
    from newsletter.clock import SystemClock
    from newsletter.config import load_config
    from newsletter.editions import cutoff
    from newsletter.preparation import resolve_day
    from newsletter.store import Store
    from newsletter.store.models import Article, Delivery, Edition, Subscriber
    from newsletter.store.readers import add_active_subscribers

    config = load_config(config_path, environ={})
    store = Store(config.store.url)
    store.upgrade()
    with store.engine.begin() as conn:  # a fresh database each time, also on PostgreSQL
        for table in (Delivery, Article, Edition, Subscriber):
            conn.execute(delete(table))
    clock = SystemClock()
    day = resolve_day(config, clock, None)
    end = min(cutoff(day, config.newsletter.send_time, config.newsletter.zone), clock.now())
    with store.session() as session:
        for i in range(articles):
            words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(30)]
            upsert_article(
                session,
                ArticleInput(
                    guid=f"bench-{i}",
                    url=f"https://news.example.com/2026/story-{i}",
                    title=" ".join(words[:9]).capitalize() + f" — part {i}",
                    standfirst=" ".join(words).capitalize() + ".",
                    section=SECTIONS[i % len(SECTIONS)],
                    author="Zoë O’Brien",
                    image_url="https://news.example.com/images/lead.jpg" if i == 0 else "",
                    image_caption="The harbour at dawn." if i == 0 else "",
                    published_at=end - timedelta(minutes=10 + i * 20),
                ),
                clock,
            )
    spread = ZONES[: max(1, zones)]
    people = ((f"reader{i}@example.org", f"Reader {i}", spread[i % len(spread)]) for i in range(subscribers))
    add_active_subscribers(store.engine, people, "bench", clock.now())
    store.dispose()


def _child_pipeline(config_path: str) -> dict[str, float]:
    from newsletter.clock import SystemClock
    from newsletter.config import load_config
    from newsletter.context import Context
    from newsletter.preparation import prepare_edition, resolve_day
    from newsletter.publish import send_edition
    from newsletter.store import Store
    from newsletter.tokens import Tokens

    config = load_config(config_path, environ={})
    store = Store(config.store.url)
    clock = SystemClock()
    ctx = Context(config, store, clock, Tokens(config.web.secret_key, clock))
    day = resolve_day(config, clock, None)
    edition = prepare_edition(ctx, day)  # render: not timed
    if config.newsletter.per_reader_timezone:
        return _zoned_pipeline(config, store, day, len(edition.html.encode()))
    started = time.perf_counter()
    report = send_edition(ctx)
    elapsed = time.perf_counter() - started
    assert report.stats is not None and report.outcome == "sent", report.message
    return {"sent": report.stats.sent, "seconds": elapsed, "html_bytes": len(edition.html.encode())}


def _zoned_pipeline(config: Any, store: Any, day: Any, html_bytes: int) -> dict[str, float]:
    """One send per zone's morning, on a clock pinned to it; the time is the sum of the sends."""
    from newsletter import release
    from newsletter.clock import FixedClock
    from newsletter.context import Context
    from newsletter.publish import send_edition
    from newsletter.store.readers import active_zone_counts
    from newsletter.tokens import Tokens

    n = config.newsletter
    with store.reading() as session:
        counts = active_zone_counts(session)
    moments = sorted({r.at for r in release.plan(day, n.send_time, n.zone, counts)})
    clock = FixedClock(moments[0])
    ctx = Context(config, store, clock, Tokens(config.web.secret_key, clock))
    sent, elapsed = 0, 0.0
    for moment in moments:
        clock.set(moment)
        started = time.perf_counter()
        report = send_edition(ctx, day=day)
        elapsed += time.perf_counter() - started
        assert report.stats is not None, report.message
        sent += report.stats.sent
    assert report.outcome == "sent", report.message
    return {"sent": sent, "seconds": elapsed, "html_bytes": html_bytes, "sends": len(moments)}


def _child_floor(config_path: str, count: int) -> dict[str, float]:
    from newsletter.clock import SystemClock
    from newsletter.config import load_config
    from newsletter.preparation import resolve_day
    from newsletter.publish import compile_template, personaliser
    from newsletter.store import Store
    from newsletter.store.deliveries import Work
    from newsletter.store.editions import edition_for
    from newsletter.tokens import Tokens
    from newsletter.transports import Outgoing, SMTPPool

    config = load_config(config_path, environ={})
    store = Store(config.store.url)
    clock = SystemClock()
    with store.session() as session:
        edition = edition_for(session, resolve_day(config, clock, None))
    template = compile_template(config, edition)
    personalise = personaliser(config, edition, template, Tokens(config.web.secret_key, clock))
    personal = personalise(Work(1, 1, "reader1@example.org", "Reader 1", 0), clock.now())
    message = personal.data if isinstance(personal.data, bytes) else b"".join(personal.data)
    store.dispose()
    pool = SMTPPool(config.smtp, config.smtp.connections, lambda _key: True)
    started = time.perf_counter()
    queued, finished = 0, 0
    while finished < count:
        while queued < count and pool.idle():
            pool.start(Outgoing(queued, personal.mail_from, f"reader{queued}@example.org", message))
            queued += 1
        for completion in pool.poll(0.2):
            if completion.error is not None:
                raise SystemExit(f"floor: {completion.error}")
            finished += 1
    elapsed = time.perf_counter() - started
    pool.close()
    return {"sent": count, "seconds": elapsed, "message_bytes": len(message)}


def _peak_rss_mb() -> float:
    """VmHWM, this process's own peak (ru_maxrss can carry the parent's over fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_sends(config_path: Path) -> None:
    """Forget an earlier run's deliveries so the next pipeline run sends the whole list again."""
    from sqlalchemy import delete, update

    from newsletter.config import load_config
    from newsletter.store import Store
    from newsletter.store.models import Delivery, Edition, EditionStatus

    store = Store(load_config(config_path, environ={}).store.url)
    with store.engine.begin() as conn:
        conn.execute(delete(Delivery))
        conn.execute(
            update(Edition).values(status=EditionStatus.READY, enqueued_at=None, finished_at=None, released_until=None)
        )
    store.dispose()


def _run_child(mode: str, *args: str) -> tuple[dict[str, float], float]:
    """Run one measurement in a fresh interpreter; returns its result and its peak RSS in MB."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result, result.pop("peak_rss_mb")


def _start_sink(port: int, prefer_postfix: bool) -> tuple[subprocess.Popen[bytes], str]:
    smtp_sink = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else "")
    if prefer_postfix and smtp_sink:
        cmd = [smtp_sink]
        if os.geteuid() == 0:
            cmd += ["-u", "postfix"]
        sink = subprocess.Popen([*cmd, f"127.0.0.1:{port}", "1024"], stderr=subprocess.PIPE)
        name = "Postfix smtp-sink"
    else:
        sink = subprocess.Popen(
            [sys.executable, "-m", "newsletter.demo.sink", "--port", str(port)], stdout=subprocess.PIPE, cwd=ROOT
        )
        assert sink.stdout is not None
        sink.stdout.readline()
        name = "aiosmtpd sink (newsletter.demo.sink)"
    import socket

    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return sink, name
        time.sleep(0.05)
    sink.kill()
    raise SystemExit("the SMTP sink did not start")


def _measure(config_path: Path, n: int, mode: str, rounds: int) -> None:
    """Pipeline and floor, alternating, ``rounds`` times; prints the medians."""
    rates, floors, rss, floor_rss = [], [], 0.0, 0.0
    for _ in range(rounds):
        _reset_sends(config_path)
        pipeline, peak = _run_child("pipeline", str(config_path))
        rates.append(pipeline["sent"] / pipeline["seconds"])
        rss = max(rss, peak)
        floor, peak = _run_child("floor", str(config_path), str(n))
        floors.append(floor["sent"] / floor["seconds"])
        floor_rss = max(floor_rss, peak)
    rate, floor_rate = statistics.median(rates), statistics.median(floors)
    print(
        f"{n:>11,}  {mode}  {rate:>14,.0f}  {floor_rate:>11,.0f}  {rate / floor_rate:>6.0%}  "
        f"{rss:>14.1f} MB  {floor_rss:>11.1f} MB  {pipeline['html_bytes'] / 1024:>7.1f}  "
        f"{floor['message_bytes'] / 1024:>10.1f}",
        flush=True,
    )
    if rounds > 1:
        print(
            f"{'':>11}  {'':>22}  rounds: pipeline {', '.join(f'{r:,.0f}' for r in rates)}; "
            f"floor {', '.join(f'{r:,.0f}' for r in floors)}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--subscribers", type=int, action="append", help="list size (repeatable)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--articles", type=int, default=36, help="stories in the edition (36: about 50 KB HTML)")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline and floor runs per size (median shown)")
    parser.add_argument("--aiosmtpd", action="store_true", help="use the bundled sink even if smtp-sink exists")
    parser.add_argument(
        "--dkim",
        action="append",
        choices=DKIM_MODES,
        help="signing for the pipeline (repeatable; default: off, rsa-sha256)",
    )
    parser.add_argument(
        "--tracking",
        action="append",
        choices=("on", "off"),
        help="click tracking for the pipeline (repeatable, each with every --dkim; default: on)",
    )
    parser.add_argument(
        "--zones",
        type=int,
        default=0,
        choices=range(0, len(ZONES) + 1),
        metavar=f"0-{len(ZONES)}",
        help="spread the readers over this many time zones and run each mode also zone by zone",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        mode, *rest = args.child
        result = _child_pipeline(rest[0]) if mode == "pipeline" else _child_floor(rest[0], int(rest[1]))
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return

    from newsletter.demo.sink import free_port

    sizes = args.subscribers or [100_000]
    port = free_port()
    sink, sink_name = _start_sink(port, prefer_postfix=not args.aiosmtpd)
    print(
        f"sink: {sink_name} on 127.0.0.1:{port}; {args.connections} connections; "
        f"database: {args.database_url or 'SQLite (fresh file)'}"
    )
    modes = [
        (dkim, tracking, zoned)
        for dkim in args.dkim or ["off", "rsa-sha256"]
        for tracking in args.tracking or ["on"]
        for zoned in ([False, True] if args.zones else [False])
    ]
    print(
        f"{'subscribers':>11}  {'DKIM':>14}  {'clicks':>6}  {'zones':>5}  "
        f"{'pipeline msg/s':>14}  {'floor msg/s':>11}  {'ratio':>6}  "
        f"{'peak RSS pipeline':>17}  {'peak RSS floor':>14}  {'HTML KB':>7}  {'message KB':>10}"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="newsletter-bench-") as tmp:
            directory = Path(tmp)
            config_path = directory / "newsletter.toml"
            config_path.write_text(_config_text(directory, port, args.database_url, args.connections))
            for n in sizes:
                (directory / "bench.db").unlink(missing_ok=True)
                _seed(config_path, n, args.articles, args.zones)
                for dkim, tracking, zoned in modes:
                    mode_path = directory / f"newsletter-{dkim}-{tracking}-{zoned}.toml"
                    text = _config_text(directory, port, args.database_url, args.connections, dkim, tracking, zoned)
                    mode_path.write_text(text)
                    label = f"{dkim:>14}  {tracking:>6}  {args.zones if zoned else '-':>5}"
                    _measure(mode_path, n, label, args.rounds)
    finally:
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.kill()


if __name__ == "__main__":
    main()
