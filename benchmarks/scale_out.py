"""Scale-out on PostgreSQL: 1, 2 and 4 ``newsletter worker`` processes on one edition.

    python benchmarks/scale_out.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/scale_out.py --database-url ... -n 100000 --workers 1 2 4 --enqueue 1000000

It creates a database of its own next to the one named (and drops it afterwards), seeds
an edition and N subscribers, starts a local SMTP sink (Postfix's ``smtp-sink`` when
installed, else the bundled aiosmtpd sink), and for each worker count enqueues the
edition (``send --enqueue-only``) and times that many ``newsletter worker --until-idle``
processes, each with ``--connections`` SMTP connections, until everything is sent. Then it
times enqueuing ``--enqueue`` subscribers (bounded transactions, nothing loaded in
memory). On a 2-core machine the point is the shape, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, delete, text, update
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import throughput  # noqa: E402 - the sibling benchmark's seeding and sink helpers


def _add_subscribers(url: str, start: int, count: int) -> None:
    from newsletter.clock import SystemClock
    from newsletter.store import Store
    from newsletter.store.readers import add_active_subscribers

    store = Store(url)
    people = ((f"reader{i}@example.org", f"Reader {i}") for i in range(start, start + count))
    add_active_subscribers(store.engine, people, "bench", SystemClock().now(), chunk=20_000)
    store.dispose()


def _reset(url: str) -> None:
    from newsletter.store import Store
    from newsletter.store.models import Delivery, Edition, EditionStatus, Worker

    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(delete(Delivery))
        conn.execute(delete(Worker))
        conn.execute(update(Edition).values(status=EditionStatus.READY, enqueued_at=None, finished_at=None))
    store.dispose()


def _enqueue(config_path: Path) -> float:
    from newsletter.clock import SystemClock
    from newsletter.config import load_config
    from newsletter.context import Context
    from newsletter.publish import send_edition
    from newsletter.store import Store
    from newsletter.tokens import Tokens

    config = load_config(config_path, environ={})
    store = Store(config.store.url)
    clock = SystemClock()
    ctx = Context(config, store, clock, Tokens(config.web.secret_key, clock))
    started = time.perf_counter()
    report = send_edition(ctx, enqueue_only=True)
    elapsed = time.perf_counter() - started
    store.dispose()
    assert report.outcome == "enqueued", report.message
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL URL allowed to CREATE DATABASE")
    parser.add_argument("-n", "--subscribers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--connections", type=int, default=4, help="SMTP connections per worker")
    parser.add_argument("--enqueue", type=int, default=1_000_000, help="list size for the enqueue timing (0: skip)")
    parser.add_argument("--aiosmtpd", action="store_true", help="use the bundled sink even if smtp-sink exists")
    args = parser.parse_args()

    admin_url = make_url(args.database_url)
    if not admin_url.drivername.startswith("postgresql"):
        raise SystemExit("scale-out needs PostgreSQL: pass --database-url postgresql+psycopg://...")
    name = f"newsletter_bench_{os.getpid()}_{secrets.token_hex(2)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    from newsletter.demo.sink import free_port

    port = free_port()
    sink, sink_name = throughput._start_sink(port, prefer_postfix=not args.aiosmtpd)
    try:
        with tempfile.TemporaryDirectory(prefix="newsletter-scale-") as tmp:
            config_path = Path(tmp) / "newsletter.toml"
            config_path.write_text(throughput._config_text(Path(tmp), port, url, args.connections))
            throughput._seed(config_path, 0, 36)
            _add_subscribers(url, 0, args.subscribers)
            print(
                f"sink: {sink_name}; {args.subscribers:,} subscribers; {args.connections} SMTP connections per "
                f"worker; {os.cpu_count()} cores"
            )
            print(f"{'workers':>7}  {'msg/s':>8}  {'seconds':>8}  {'enqueue s':>9}")
            env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
            for count in args.workers:
                _reset(url)
                enqueue_seconds = _enqueue(config_path)
                started = time.perf_counter()
                processes = [
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "newsletter",
                            "--config",
                            str(config_path),
                            "worker",
                            "--until-idle",
                            "--poll",
                            "0.2",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env=env,
                        cwd=ROOT,
                    )
                    for _ in range(count)
                ]
                for process in processes:
                    _, err = process.communicate()
                    if process.returncode != 0:
                        raise SystemExit(f"a worker failed:\n{err[-2000:]}")
                seconds = time.perf_counter() - started
                print(
                    f"{count:>7}  {args.subscribers / seconds:>8,.0f}  {seconds:>8.1f}  {enqueue_seconds:>9.1f}",
                    flush=True,
                )
            if args.enqueue:
                _reset(url)
                _add_subscribers(url, args.subscribers, max(0, args.enqueue - args.subscribers))
                seconds = _enqueue(config_path)
                print(
                    f"enqueue of {args.enqueue:,} deliveries: {seconds:.1f} s "
                    f"({args.enqueue / seconds:,.0f} rows/s, in transactions of 5,000)"
                )
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
