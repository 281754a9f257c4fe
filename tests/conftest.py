"""Shared fixtures: real SMTP servers, real databases (SQLite file and PostgreSQL), a pinned clock.

PostgreSQL: the URL comes from $NEWSLETTER_TEST_DATABASE_URL. Tests needing it are
skipped when the variable is unset, and fail (not skip) when it is set but the server
cannot be reached, so CI cannot silently lose half the suite. Each test session gets a
database of its own, created from that URL and dropped afterwards.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from newsletter.articles import ArticleInput, upsert_article
from newsletter.clock import FixedClock
from newsletter.config import Config, parse_config
from newsletter.context import Context
from newsletter.demo.sink import free_port, start_controller
from newsletter.store import Store
from newsletter.store.models import Base, Subscriber, SubscriberStatus
from newsletter.tokens import Tokens

PG_ENV = "NEWSLETTER_TEST_DATABASE_URL"
SECRET = "test-secret-key-0123456789-abcdefghijklmnop"


# --- environment ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own newsletter settings."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_") and name != PG_ENV:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A CLI run sets up the "newsletter" logger (its own handler, no propagation); undo that,
    so later tests' ``caplog`` still sees the package's records."""
    logger = logging.getLogger("newsletter")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def clock() -> FixedClock:
    """Tuesday 24 November 2026, 06:30 in London (GMT): just after the morning send."""
    return FixedClock(datetime(2026, 11, 24, 6, 30, tzinfo=UTC))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# --- SMTP -----------------------------------------------------------------------------


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class RecordingHandler:
    """An aiosmtpd handler that keeps every envelope it accepts."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 OK: queued"

    def by_recipient(self) -> dict[str, list[Received]]:
        found: dict[str, list[Received]] = {}
        for item in self.received:
            for rcpt in item.rcpt_tos:
                found.setdefault(rcpt, []).append(item)
        return found


@dataclass
class SMTPServer:
    host: str
    port: int
    handler: Any


@pytest.fixture
def smtp_sink() -> Iterator[SMTPServer]:
    """A real aiosmtpd server on a free 127.0.0.1 port that records what it receives."""
    handler = RecordingHandler()
    controller = start_controller(handler, "127.0.0.1", free_port())
    try:
        yield SMTPServer(controller.hostname, controller.port, handler)
    finally:
        controller.stop()


# --- databases ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test session, or None when none is configured."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        yield None
        return
    url = make_url(admin_url)
    name = f"newsletter_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure here must fail the run, not skip it
        admin.dispose()
        pytest.fail(
            f"${PG_ENV} is set but PostgreSQL at {url.render_as_string(hide_password=True)} cannot be used: {exc}"
        )
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def _migrated_postgres(postgres_url: str | None) -> str | None:
    if postgres_url is not None:
        store = Store(postgres_url)
        store.upgrade()
        store.dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a SQLite file, then the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'newsletter.db'}"
        store = Store(url)
        store.upgrade()
        store.dispose()
        return url
    return fresh_postgres(request)


def fresh_postgres(request: pytest.FixtureRequest) -> str:
    """The session's PostgreSQL database, emptied; skips when none is configured."""
    pg = request.getfixturevalue("_migrated_postgres")
    if pg is None:
        pytest.skip(f"PostgreSQL tests need ${PG_ENV}")
    engine = create_engine(pg)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("SELECT pg_advisory_unlock_all()"))
    engine.dispose()
    return pg


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A Store on ``db_url``; the test fails if it leaves a connection checked out."""
    store = Store(db_url)
    yield store
    checked_out = store.engine.pool.checkedout()  # type: ignore[attr-defined]
    store.dispose()
    assert checked_out == 0, f"{checked_out} database connections were not returned"


# --- configuration and data -------------------------------------------------------------


def make_config(db_url: str, server: SMTPServer | None = None, **sections: dict[str, Any]) -> Config:
    """A valid configuration for tests; ``sections`` override or add keys per section."""
    data: dict[str, dict[str, Any]] = {
        "newsletter": {"publication": "The Example Gazette", "address": "1 Quay Street, Portside"},
        "store": {"url": db_url},
        "smtp": {"host": "127.0.0.1", "port": server.port if server else 2525, "security": "none", "timeout": 5},
        "sender": {"from_address": "breakfast@news.example.com", "reply_to": "desk@news.example.com"},
        "web": {"base_url": "https://news.example.com/newsletter", "secret_key": SECRET},
        "delivery": {"backoff_seconds": 0.01, "backoff_max_seconds": 0.05},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, "<memory>", {})


@pytest.fixture
def config(db_url: str, smtp_sink: SMTPServer) -> Config:
    return make_config(db_url, smtp_sink)


@pytest.fixture
def tokens(clock: FixedClock) -> Tokens:
    return Tokens(SECRET, clock)


@pytest.fixture
def ctx(config: Config, store: Store, clock: FixedClock, tokens: Tokens) -> Context:
    """The four fixtures above as the one ``Context`` the library's operations take."""
    return Context(config, store, clock, tokens)


def add_article(store: Store, clock: FixedClock, guid: str, published: datetime, **fields: Any) -> None:
    values = {"title": f"Story {guid}", "url": f"https://news.example.com/{guid}", "standfirst": f"About {guid}."}
    values.update(fields)
    with store.session() as session:
        upsert_article(session, ArticleInput(guid=guid, published_at=published, **values), clock)


def add_subscribers(
    store: Store,
    clock: FixedClock,
    count: int,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    prefix: str = "reader",
) -> list[str]:
    now = clock.now()
    emails = [f"{prefix}{i}@example.org" for i in range(count)]
    with store.session() as session:
        session.add_all(
            Subscriber(
                email=e,
                name=f"Reader {i}",
                status=status,
                source="test",
                created_at=now,
                updated_at=now,
                confirmed_at=now,
            )
            for i, e in enumerate(emails)
        )
    return emails


def morning_articles(store: Store, clock: FixedClock, count: int = 3) -> None:
    """``count`` articles in the 24 hours before the 06:00 cutoff of 24 November 2026."""
    cutoff = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    for i in range(count):
        add_article(store, clock, f"story-{i}", cutoff - timedelta(hours=1 + i), section=["News", "Sport"][i % 2])


# --- a browser and a web server -------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; a browser is never downloaded


def require_chromium() -> None:
    """Skip on a laptop without Chromium; fail in CI, where the browser tests must run."""
    if CHROMIUM.exists():
        return
    if os.environ.get(PG_ENV):
        pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is not installed")


def open_chromium(playwright: Any, profile: Path, **options: Any) -> Any:
    """Debian's Chromium, headless, with a fresh profile and nothing that reaches out to the network."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
        **options,
    )


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A real threaded WSGI server on a free 127.0.0.1 port; the app is plugged in once its URL is known."""
    from werkzeug.serving import BaseWSGIServer, make_server

    slot: dict[str, Any] = {}

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        return slot["app"](environ, start_response)

    httpd: BaseWSGIServer = make_server("127.0.0.1", 0, dispatch, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="wsgi", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", slot
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost it signed."""
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=30)

    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=Newsletter test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
    )  # fmt: skip
    return {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}


__all__ = ["Received", "SMTPServer", "add_article", "add_subscribers", "make_config", "morning_articles", "replace"]
