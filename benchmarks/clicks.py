"""Clicks against the real web app under a real WSGI server, and what a flood of them does to a send.

    python benchmarks/clicks.py                          # SQLite: flood and paced clicks, 10 s each
    python benchmarks/clicks.py --with-send -n 10000     # also: the send rate alone and under clicks
    python benchmarks/clicks.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench --with-send

The app (``newsletter.web.load_app``, as a WSGI server runs it) is served by Werkzeug's
threaded WSGI server in its own process: neither waitress nor gunicorn is in the project's
dependencies, and Werkzeug's server is the one the test suite uses. Clicks come from
``--threads`` client threads in this process over keep-alive connections, each on a real
signed code of a seeded reader and a link of an edition that has gone out; 5 % of them
carry a link scanner's user agent (outside the scanner window, so they are written too).

It measures, each printed as requests/second and p50/p99 latency:

* flood: every thread clicking as fast as the server answers (the capacity);
* paced: ``--rate`` clicks a minute in all (default 10,000, the figure to stand up to);
* with ``--with-send``: the send rate of ``newsletter.publish.send_edition`` to ``-n``
  readers (the path ``newsletter send`` takes, to a local SMTP sink, as in
  ``benchmarks/throughput.py``) alone, under the paced clicks and under the flood,
  alternating for ``--rounds`` rounds; medians are compared. Each load runs twice: against
  the app recording clicks, and against a second server of the same app with
  ``[tracking] clicks = false`` (it redirects and writes nothing), so that what the
  machine's CPU costs the send is told apart from what the database writes cost it.

At the end the server's click recorder is closed and its counts printed, and the clicks
table is counted: every click answered with a redirect must be in it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15"
)
SCANNER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b"
LINKS = 40  # links in the clicked edition
READERS = 5_000  # readers whose codes are clicked


# --- the database -------------------------------------------------------------------------------


def _seed(config_path: Path, subscribers: int) -> None:
    """Readers and today's stories (as throughput.py seeds them), and yesterday's edition, sent, with links."""
    import throughput
    from sqlalchemy import delete, select

    from newsletter.clock import SystemClock
    from newsletter.config import load_config
    from newsletter.preparation import resolve_day
    from newsletter.store import Store
    from newsletter.store.clicks import save_edition_links
    from newsletter.store.models import Click, Delivery, DeliveryStatus, Edition, EditionStatus, Subscriber

    throughput._seed(config_path, max(subscribers, READERS), 36)
    config = load_config(config_path, environ={})
    store = Store(config.store.url)
    clock = SystemClock()
    now = clock.now()
    with store.engine.begin() as conn:
        conn.execute(delete(Click))
    with store.session() as session:
        clicked = Edition(
            date=resolve_day(config, clock, None) - timedelta(days=1),
            window_start=now - timedelta(days=3),
            window_end=now - timedelta(days=2),
            subject="Yesterday",
            status=EditionStatus.READY,
            nonce="0" * 32,
            created_at=now,
        )
        session.add(clicked)
        session.flush()
        save_edition_links(session, clicked.id, [f"https://news.example.com/2026/story-{i}" for i in range(LINKS)])
        clicked.status, clicked.enqueued_at = EditionStatus.SENT, now - timedelta(hours=1)
        readers = session.scalars(select(Subscriber.id).order_by(Subscriber.id).limit(READERS)).all()
        session.add_all(
            Delivery(
                edition_id=clicked.id, subscriber_id=s, status=DeliveryStatus.SENT, sent_at=now - timedelta(hours=1)
            )
            for s in readers
        )
    store.dispose()


def _codes(config_path: Path) -> list[str]:
    """The path of every link of the clicked edition for every clicking reader."""
    from sqlalchemy import select

    from newsletter.codes import CLICK, ReaderCodes
    from newsletter.config import load_config
    from newsletter.store import Store
    from newsletter.store.models import Delivery, Edition

    config = load_config(config_path, environ={})
    store = Store(config.store.url)
    codes = ReaderCodes(config.require_secret_key(), CLICK)
    with store.session() as session:
        edition_id = session.scalar(select(Edition.id).where(Edition.subject == "Yesterday"))
        readers = session.scalars(select(Delivery.subscriber_id).where(Delivery.edition_id == edition_id)).all()
    store.dispose()
    assert edition_id is not None
    return [f"/newsletter/c/{codes.code(edition_id, s)}" for s in readers if s is not None]


def _count_clicks(config_path: Path) -> int:
    from sqlalchemy import func, select

    from newsletter.config import load_config
    from newsletter.store import Store
    from newsletter.store.models import Click

    store = Store(load_config(config_path, environ={}).store.url)
    with store.session() as session:
        count = session.scalar(select(func.count()).select_from(Click)) or 0
    store.dispose()
    return count


def _reset_send(config_path: Path) -> None:
    """Forget the last run's send of today's edition (only that one: yesterday's stays sent, with its links)."""
    from sqlalchemy import delete, select, update

    from newsletter.config import load_config
    from newsletter.store import Store
    from newsletter.store.models import Delivery, Edition, EditionStatus

    store = Store(load_config(config_path, environ={}).store.url)
    with store.engine.begin() as conn:
        today = select(Edition.id).where(Edition.subject != "Yesterday").scalar_subquery()
        conn.execute(delete(Delivery).where(Delivery.edition_id == today))
        conn.execute(
            update(Edition)
            .where(Edition.subject != "Yesterday")
            .values(status=EditionStatus.READY, enqueued_at=None, finished_at=None)
        )
    store.dispose()


# --- the two child processes ---------------------------------------------------------------------


def _child_serve(config_path: str, port: int) -> None:
    """The app under Werkzeug's threaded server until SIGTERM; then the recorder's counts, as JSON."""
    from werkzeug.serving import make_server

    from newsletter.web import load_app
    from newsletter.web.clicks import recorder_of

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    app = load_app(config_path)
    server = make_server("127.0.0.1", port, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("ready", flush=True)
    server.serve_forever()
    recorder = recorder_of(app)
    recorder.close()
    print(json.dumps(asdict(recorder.stats())), flush=True)


def _child_send(config_path: str) -> None:
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
    prepare_edition(ctx, resolve_day(config, clock, None))  # rendering: not timed
    started = time.perf_counter()
    report = send_edition(ctx)
    elapsed = time.perf_counter() - started
    assert report.stats is not None and report.outcome == "sent", report.message
    print(json.dumps({"sent": report.stats.sent, "seconds": elapsed}), flush=True)


def _send(config_path: Path) -> float:
    """Send today's edition in a fresh process; messages per second."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", "send", str(config_path)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"the send failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["sent"] / result["seconds"])


# --- clicking -------------------------------------------------------------------------------------


@dataclass
class Flood:
    """Client threads clicking until stopped; per-request latencies in seconds."""

    port: int
    paths: list[str]
    threads: int
    per_minute: int  # 0: as fast as the server answers
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._click, args=(i,), daemon=True) for i in range(self.threads)]

    def start(self) -> Flood:
        self.started = time.perf_counter()
        for worker in self._workers:
            worker.start()
        return self

    def finish(self) -> tuple[float, float, float, int]:
        """Stop; returns (requests/second, p50 ms, p99 ms, requests)."""
        self.stop.set()
        for worker in self._workers:
            worker.join(30)
        elapsed = time.perf_counter() - self.started
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0, 0.0, 0.0, 0
        p50 = ordered[len(ordered) // 2] * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return len(ordered) / elapsed, p50, p99, len(ordered)

    def _click(self, index: int) -> None:
        rng = random.Random(index)
        gap = self.threads * 60 / self.per_minute if self.per_minute else 0.0
        due = time.perf_counter() + rng.random() * gap
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        mine: list[float] = []
        while not self.stop.is_set():
            if gap:
                wait = due - time.perf_counter()
                if wait > 0 and self.stop.wait(wait):
                    break
                due += gap
            path = f"{rng.choice(self.paths)}-{rng.randint(1, LINKS):x}"
            agent = SCANNER if rng.random() < 0.05 else BROWSER
            began = time.perf_counter()
            try:
                connection.request("GET", path, headers={"User-Agent": agent})
                response = connection.getresponse()
                response.read()
                ok = response.status == 302
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                ok = False
            if ok:
                mine.append(time.perf_counter() - began)
            else:
                with self._lock:
                    self.errors += 1
        connection.close()
        with self._lock:
            self.latencies.extend(mine)


def _line(label: str, figures: tuple[float, float, float, int], errors: int) -> str:
    rate, p50, p99, n = figures
    return (
        f"{label:<34} {rate:>9,.0f} req/s   p50 {p50:>7.2f} ms   p99 {p99:>7.2f} ms   ({n:,} clicks, {errors} errors)"
    )


def _start_server(config_path: Path) -> tuple[subprocess.Popen[str], int]:
    from newsletter.demo.sink import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", "serve", str(config_path), str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise SystemExit("the web server did not start")
    return process, port


def _compare_sends(config_path: Path, paths: list[str], port: int, control_port: int, args: argparse.Namespace) -> None:
    """The send alone, and under clicks recorded and clicks only answered, alternating; medians compared.

    The clicks that are only answered (``clicks = false``) cost the machine the same HTTP
    work without a database write: the difference between the two is what writing costs.
    """
    paced = f"{args.rate:,} clicks/min"
    conditions = [
        ("alone", None, 0),
        (f"under {paced}, recorded", port, args.rate),
        (f"under {paced}, not recorded", control_port, args.rate),
        ("under the flood, recorded", port, 0),
        ("under the flood, not recorded", control_port, 0),
    ]
    rates: dict[str, list[float]] = {label: [] for label, _, _ in conditions}
    for _ in range(args.rounds):
        for label, target, per_minute in conditions:
            _reset_send(config_path)
            flood = Flood(target, paths, args.threads, per_minute).start() if target else None
            rates[label].append(_send(config_path))
            if flood is not None:
                print(_line(f"clicks during send {label.removeprefix('under ')}", flood.finish(), flood.errors))
    base = statistics.median(rates["alone"])
    print(f"send to {args.subscribers:,} readers, median of {args.rounds} (each run):")
    for label, runs in rates.items():
        rate = statistics.median(runs)
        change = "" if label == "alone" else f"{rate / base - 1:+.0%}"
        print(f"  {label:<38} {rate:>7,.0f} msg/s  {change:>5}  ({', '.join(f'{r:,.0f}' for r in runs)})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--threads", type=int, default=32, help="client threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each click-only measurement")
    parser.add_argument("--rate", type=int, default=10_000, help="clicks a minute for the paced runs")
    parser.add_argument("--with-send", action="store_true", help="also measure a send alone and under clicks")
    parser.add_argument("-n", "--subscribers", type=int, default=10_000, help="readers the send goes to")
    parser.add_argument("--rounds", type=int, default=3, help="send runs per condition (median shown)")
    parser.add_argument("--aiosmtpd", action="store_true", help="use the bundled sink even if smtp-sink exists")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        _child_serve(rest[0], int(rest[1])) if mode == "serve" else _child_send(rest[0])
        return

    import throughput

    from newsletter.demo.sink import free_port

    smtp_port = free_port()
    sink, sink_name = throughput._start_sink(smtp_port, prefer_postfix=not args.aiosmtpd)
    servers: dict[str, tuple[subprocess.Popen[str], int]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="newsletter-clicks-") as tmp:
            config_path = Path(tmp) / "newsletter.toml"
            config_text = throughput._config_text(Path(tmp), smtp_port, args.database_url, 4)
            config_path.write_text(config_text)
            control_path = Path(tmp) / "control.toml"  # the same app, redirecting but recording nothing
            control_path.write_text(config_text + "[tracking]\nclicks = false\n")
            _seed(config_path, args.subscribers if args.with_send else READERS)
            paths = _codes(config_path)
            for name, path in [("recording", config_path), ("control", control_path)]:
                servers[name] = _start_server(path)
            port, control_port = servers["recording"][1], servers["control"][1]
            print(
                f"server: Werkzeug's threaded WSGI server, one process; "
                f"database: {args.database_url or 'SQLite (file)'}; {args.threads} client threads; "
                f"{len(paths):,} readers x {LINKS} links; sink: {sink_name}"
            )
            for warm in (port, control_port):  # connections, the link cache
                warm_up = Flood(warm, paths, 4, 0).start()
                time.sleep(1)
                warm_up.finish()
            for label, per_minute in [("flood (as fast as answered)", 0), (f"paced ({args.rate:,}/min)", args.rate)]:
                flood = Flood(port, paths, args.threads, per_minute).start()
                time.sleep(args.seconds)
                print(_line(label, flood.finish(), flood.errors), flush=True)
            if args.with_send:
                _compare_sends(config_path, paths, port, control_port, args)
            process, _ = servers.pop("recording")
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=120)
            stats = json.loads(out.strip().splitlines()[-1])
            per_batch = stats["writing_seconds"] / max(1, stats["batches"]) * 1000
            print(
                f"recorder at exit: {stats['written']:,} written in {stats['batches']:,} transactions "
                f"({per_batch:.1f} ms each on average), {stats['queued']} queued, {stats['dropped']} dropped, "
                f"{stats['failures']} failures; rows in clicks: {_count_clicks(config_path):,}"
            )
    finally:
        for process, _ in servers.values():
            process.kill()
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.kill()


if __name__ == "__main__":
    main()
