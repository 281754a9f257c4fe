"""Unsubscribe requests read over IMAP, from a real Dovecot started for these tests.

Dovecot runs from a throw-away config on free 127.0.0.1 ports: plain IMAP (with
STARTTLS) on one, implicit TLS on another, with a certificate from a throw-away CA. Any
user name logs in with the password ``secret``, so each test gets a mailbox of its own.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.config import Config
from newsletter.context import Context
from newsletter.demo.sink import free_port
from newsletter.errors import ConfigError, MailboxError
from newsletter.inbound import MailboxReport, process
from newsletter.inboxes import ImapInbox
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.tokens import UNSUBSCRIBE
from tests.conftest import PG_ENV, add_subscribers, make_config
from tests.test_subscribers import config_file
from tests.test_unsubscribes import mail, statuses

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "secret"


@dataclass(frozen=True)
class Dovecot:
    port: int
    tls_port: int
    ca: Path

    def settings(self, user: str, **overrides: Any) -> dict[str, Any]:
        values = {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "username": user,
            "password": PASSWORD,
            "timeout": 5,
        }
        return values | overrides

    @contextlib.contextmanager
    def session(self, user: str) -> Iterator[imaplib.IMAP4]:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=5)
        client.login(user, PASSWORD)
        try:
            yield client
        finally:
            client.logout()

    def deliver(self, user: str, *messages: bytes, flags: str | None = None) -> None:
        with self.session(user) as client:
            for raw in messages:
                assert client.append("INBOX", flags, None, raw)[0] == "OK"

    def folder(self, user: str, name: str) -> list[tuple[bytes, bytes]]:
        """(flags, message) of every message in a folder."""
        with self.session(user) as client:
            if client.select(name)[0] != "OK":
                return []
            _, found = client.uid("SEARCH", "ALL")
            result = []
            for uid in found[0].split():
                _, data = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
                result.append((data[0][0], data[0][1]))
            return result


def _config_text(folder: Path, port: int, tls_port: int, certificates: dict[str, Path]) -> str:
    if os.geteuid() == 0:  # Dovecot will not run its login or mail processes as root
        internal, login, owner = "dovecot", "dovenull", pwd.getpwnam("dovecot")
    else:
        owner = pwd.getpwuid(os.getuid())
        internal = login = owner.pw_name
    mail = folder / "mail"
    mail.mkdir()
    os.chown(mail, owner.pw_uid, owner.pw_gid)
    return f"""
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{certificates["cert"]}
ssl_key = <{certificates["key"]}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{mail}/%u
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={mail}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture(scope="module")
def dovecot(certificates: dict[str, Path]) -> Iterator[Dovecot]:
    if not Path(DOVECOT).exists():
        if os.environ.get(PG_ENV):  # CI: the IMAP tests must run, not quietly skip
            pytest.fail("dovecot is missing; install Debian's dovecot-imapd package")
        pytest.skip("dovecot is not installed (Debian package dovecot-imapd)")
    # Not under pytest's private temporary folder: Dovecot's unprivileged processes must reach it.
    folder = Path(tempfile.mkdtemp(prefix="newsletter-imap-"))
    folder.chmod(0o755)
    port, tls_port = free_port(), free_port()
    conf = folder / "dovecot.conf"
    conf.write_text(_config_text(folder, port, tls_port, certificates), encoding="utf-8")
    output = folder / "output.txt"
    with output.open("wb") as out:
        process = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                logs = [p.read_text() for p in (output, folder / "dovecot.log") if p.exists()]
                pytest.fail("dovecot did not start: " + "".join(logs))
            time.sleep(0.1)
        yield Dovecot(port, tls_port, certificates["ca"])
    finally:
        process.terminate()
        process.wait(timeout=15)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def user() -> str:
    """A mailbox of this test's own (any name logs in)."""
    return f"reader-desk-{secrets.token_hex(4)}"


def imap_config(db_url: str, **imap: Any) -> Config:
    return make_config(db_url, imap=imap)


def process_imap(ctx: Context) -> MailboxReport:
    return process(ctx, [lambda: ImapInbox(ctx.config.imap)])


def test_requests_are_read_filed_away_and_never_handled_twice(dovecot, user, db_url, store, clock, tokens):
    add_subscribers(store, clock, 4)
    with store.session() as session:
        reader0 = session.scalars(select(Subscriber).where(Subscriber.email == "reader0@example.org")).one()
        token = tokens.make(UNSUBSCRIBE, reader0.id, reader0.email)
    dovecot.deliver(
        user,
        mail("Someone Else <other@example.net>", f"unsubscribe {token}"),  # forwarded: the token decides
        mail("Reader One <reader1@example.org>", "Unsubscribe"),
        mail("reader2@example.org", "Re: Breakfast in red", "Loved the bridge story!"),
        mail("reader3@example.org", "Auto: unsubscribe", Auto_Submitted="auto-replied"),
        mail("stranger@example.net", "unsubscribe"),
    )
    # Someone at the desk already opened this one in a mail client: it still counts.
    dovecot.deliver(user, mail("reader3@example.org", "Unsubscribe me, please"), flags=r"(\Seen)")
    config = imap_config(db_url, **dovecot.settings(user))
    ctx = Context(config, store, clock, tokens)

    report = process_imap(ctx)

    assert report.summary() == (
        "6 messages: 4 unsubscribe, 1 autoreply, 1 unknown; 1 left in the mailbox for a person to read"
    )
    assert statuses(store) == {
        "reader0@example.org": "unsubscribed",
        "reader1@example.org": "unsubscribed",
        "reader2@example.org": "active",
        "reader3@example.org": "unsubscribed",
    }
    with store.session() as session:
        assert {e.source for e in session.scalars(select(SubscriberEvent))} == {"mailto"}
    # The reader's note waits, unread, for a person; everything handled was filed away, seen.
    ((flags, raw),) = dovecot.folder(user, "INBOX")
    assert b"Loved the bridge story!" in raw and rb"\Seen" not in flags
    processed = dovecot.folder(user, "Processed")
    assert len(processed) == 5 and all(rb"\Seen" in flags for flags, _ in processed)
    again = process_imap(ctx)
    assert again.summary() == "1 message: 1 unknown; 1 left in the mailbox for a person to read"


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_over_tls_verified_against_the_ca_file(dovecot, user, db_url, store, clock, tokens, security):
    add_subscribers(store, clock, 1)
    dovecot.deliver(user, mail("reader0@example.org", "unsubscribe"))
    port = dovecot.tls_port if security == "ssl" else dovecot.port
    settings = dovecot.settings(user, security=security, port=port, ca_file=str(dovecot.ca), processed_mailbox="Done")
    report = process_imap(Context(imap_config(db_url, **settings), store, clock, tokens))
    assert report.summary() == "1 message: 1 unsubscribe"
    assert len(dovecot.folder(user, "Done")) == 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"password": "wrong"}, "refused the login for 'bad-login'"),
        ({"security": "ssl", "port": "tls"}, "TLS with IMAP server 127.0.0.1"),  # an untrusted certificate
        ({"port": "closed"}, "cannot reach IMAP server 127.0.0.1"),
        ({"mailbox": "Unsubscribe requests"}, "SELECT Unsubscribe requests failed"),
    ],
    ids=["wrong-password", "untrusted-certificate", "nothing-listening", "missing-folder"],
)
def test_mailbox_problems_are_one_clear_error(dovecot, db_url, store, clock, tokens, overrides, expected):
    ports = {"tls": dovecot.tls_port, "closed": free_port()}
    if "port" in overrides:
        overrides = overrides | {"port": ports[overrides["port"]]}
    config = imap_config(db_url, **dovecot.settings("bad-login", **overrides))
    with pytest.raises(MailboxError) as info:
        process_imap(Context(config, store, clock, tokens))
    assert expected in str(info.value)
    assert PASSWORD not in str(info.value) and "wrong" not in str(info.value)


def test_cli_reads_the_imap_mailbox_of_the_config(dovecot, user, runner, tmp_path, db_url, store, clock):
    add_subscribers(store, clock, 1)
    dovecot.deliver(user, mail("reader0@example.org", "unsubscribe"))
    cfg = config_file(tmp_path, db_url)
    no_mailbox = runner.invoke(cli, ["--config", cfg, "unsubscribes", "process"])
    assert no_mailbox.exit_code == 2 and "or set [bounces] maildir or [imap] host" in no_mailbox.output
    settings = dovecot.settings(user)
    password = settings.pop("password")
    with open(cfg, "a", encoding="utf-8") as file:
        file.write("[imap]\n" + "".join(f"{key} = {value!r}\n" for key, value in settings.items()).replace("'", '"'))
    env = {"NEWSLETTER_IMAP_PASSWORD": password}
    result = runner.invoke(cli, ["--config", cfg, "unsubscribes", "process"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["message", "class", "status", "recipients", "action"]
    assert lines[1].split()[1:4] == ["unsubscribe", "-", "reader0@example.org"] and "unsubscribed" in lines[1]
    assert lines[2] == "1 message: 1 unsubscribe"
    wrong = runner.invoke(cli, ["--config", cfg, "unsubscribes", "process"], env={"NEWSLETTER_IMAP_PASSWORD": "no"})
    assert wrong.exit_code == 1 and wrong.output.startswith("error: IMAP server 127.0.0.1")
    assert len(wrong.output.strip().splitlines()) == 1
    assert statuses(store) == {"reader0@example.org": SubscriberStatus.UNSUBSCRIBED.value}


@pytest.mark.parametrize(
    ("imap", "key"),
    [
        ({"host": "mail.example.com"}, "imap.username"),
        ({"host": "mail.example.com", "username": "u", "security": "none"}, "imap.security"),
        ({"mailbox": "Désinscriptions"}, "imap.mailbox"),
        ({"security": "tls"}, "imap.security"),
        ({"ca_file": "/nonexistent/ca.pem"}, "imap.ca_file"),
        ({"processed_mailbox": "INBOX"}, "imap.processed_mailbox"),  # would handle every request again
    ],
)
def test_bad_imap_config_names_the_key(imap, key):
    with pytest.raises(ConfigError) as info:
        make_config("sqlite:///x.db", imap=imap)
    assert info.value.key == key
