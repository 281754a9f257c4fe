"""The blocking SMTP transport against real aiosmtpd servers (plain, STARTTLS, implicit TLS, AUTH), and Maildir."""

from __future__ import annotations

import contextlib
import mailbox
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from newsletter.config import SMTPConfig, parse_config
from newsletter.context import Context
from newsletter.demo.sink import free_port
from newsletter.errors import PermanentDeliveryError, SystemicDeliveryError, TemporaryDeliveryError
from newsletter.transports import ACCEPTED, MaildirPool, MaildirTransport, Outgoing, SMTPTransport, classify_reply

FROM = "breakfast@news.example.com"
PASSWORD = "s3cret-pass-word"


def message(n: int, recipient: str = "ana@example.org") -> bytes:
    return (
        f"From: {FROM}\r\nTo: {recipient}\r\nSubject: Message {n}\r\nMessage-ID: <{n}@news.example.com>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"Body {n}\r\n.a line with a leading dot\r\nZoë\r\n"
    ).encode()


@dataclass
class Got:
    peer: Any
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: Any


class Recorder:
    """Keeps each message with the connection (peer) it came on and whether that was encrypted."""

    def __init__(self) -> None:
        self.got: list[Got] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        with self.lock:
            self.got.append(
                Got(
                    session.peer,
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                    session.ssl is not None,
                    session.auth_data,
                )
            )
        return "250 2.0.0 OK"

    def connections(self) -> int:
        return len({g.peer for g in self.got})


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = auth_data.login == b"news" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


@pytest.fixture
def start() -> Iterator[Any]:
    """Start aiosmtpd servers with any options; all are stopped at the end."""
    controllers: list[Controller] = []

    def run(**options: Any) -> tuple[Controller, Recorder]:
        recorder = Recorder()
        controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        controllers.append(controller)
        return controller, recorder

    yield run
    for controller in controllers:
        controller.stop()


def smtp_config(port: int, **values: Any) -> SMTPConfig:
    smtp = {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5, **values}
    data = {
        "newsletter": {"publication": "The Example Gazette"},
        "sender": {"from_address": FROM},
        "web": {"base_url": "https://news.example.com"},
        "smtp": smtp,
    }
    return parse_config(data, "<memory>", {}).smtp


def server_context(certificates: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates["cert"], certificates["key"])
    return context


# --- what a reply means ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reply", "step", "stage", "kind", "status"),
    [
        (250, b"2.0.0 queued as 1A2B", "commit", "data", None, ""),
        (251, "2.1.5 will forward", "rcpt", "rcpt", None, ""),
        (354, b"go ahead", "data", "data", None, ""),
        (550, b"5.1.1 <ana@example.org>: no such user", "rcpt", "rcpt", PermanentDeliveryError, "5.1.1"),
        (552, "5.3.4 message too big", "commit", "data", PermanentDeliveryError, "5.3.4"),
        (451, b"4.7.1 greylisted, try again", "rcpt", "rcpt", TemporaryDeliveryError, "4.7.1"),
        (554, b"4.2.0 a class the code disagrees with", "mail", "mail", PermanentDeliveryError, ""),
        (550, b"see 5.1.1 later in the text", "rcpt", "rcpt", PermanentDeliveryError, ""),
        (250, b"2.0.0 a stray acceptance of DATA", "data", "data", TemporaryDeliveryError, "2.0.0"),
        (354, b"go ahead, though RCPT was asked", "rcpt", "rcpt", TemporaryDeliveryError, ""),
        (-1, b"garbage", "mail", "mail", TemporaryDeliveryError, ""),
    ],
)
def test_one_classifier_reads_every_reply(
    code: int, reply: bytes | str, step: str, stage: str, kind: type | None, status: str
) -> None:
    """Accepted, temporary or permanent, and the enhanced status, for both ways of sending."""
    error = classify_reply(code, reply, stage, ACCEPTED[step])
    if kind is None:
        assert error is None
        return
    assert type(error) is kind
    assert (error.code, error.stage, error.enhanced_status) == (code, stage, status)
    assert str(error).startswith(f"{stage}: {code} ")


def test_a_reply_known_to_be_a_refusal_is_classified_without_the_accepted_codes() -> None:
    """A 421 ends the session whatever step it answers; a 5.1.x at RCPT is a hard bounce."""
    closing = classify_reply(421, b"4.4.2 closing connection", "commit")
    assert isinstance(closing, TemporaryDeliveryError) and closing.enhanced_status == "4.4.2"
    dead = classify_reply(550, "5.1.1 no such user", "rcpt")
    assert isinstance(dead, PermanentDeliveryError) and dead.is_hard_bounce


# --- plain SMTP ------------------------------------------------------------------------------


def test_sends_a_message(smtp_sink) -> None:
    transport = SMTPTransport(smtp_config(smtp_sink.port))
    try:
        reply = transport.send(FROM, "ana@example.org", message(1))
    finally:
        transport.close()
    assert reply.startswith("250")
    (received,) = smtp_sink.handler.received
    assert received.mail_from == FROM and received.rcpt_tos == ["ana@example.org"]
    parsed = received.message
    assert parsed["Subject"] == "Message 1"
    assert ".a line with a leading dot" in parsed.get_content()  # dot-stuffed on the wire, intact on arrival
    assert "Zoë" in parsed.get_content()


def test_bare_line_feeds_are_sent_as_crlf(smtp_sink) -> None:
    transport = SMTPTransport(smtp_config(smtp_sink.port))
    try:
        transport.send(FROM, "ana@example.org", b"Subject: lf\n\n.one\ntwo\n")
    finally:
        transport.close()
    (received,) = smtp_sink.handler.received
    assert received.data == b"Subject: lf\r\n\r\n.one\r\ntwo\r\n"


def test_one_connection_carries_many_messages(start) -> None:
    controller, recorder = start()
    transport = SMTPTransport(smtp_config(controller.port))
    try:
        for n in range(20):
            transport.send(FROM, f"reader{n}@example.org", message(n))
    finally:
        transport.close()
    assert len(recorder.got) == 20
    assert recorder.connections() == 1 and transport.connections_opened == 1
    assert [g.rcpt_tos for g in recorder.got] == [[f"reader{n}@example.org"] for n in range(20)]


def test_connection_is_recycled_after_max_messages(start) -> None:
    controller, recorder = start()
    transport = SMTPTransport(smtp_config(controller.port, max_messages_per_connection=3))
    try:
        for n in range(7):
            transport.send(FROM, "ana@example.org", message(n))
    finally:
        transport.close()
    assert len(recorder.got) == 7
    assert transport.connections_opened == 3 and recorder.connections() == 3
    peers = [g.peer for g in recorder.got]
    assert peers[0] == peers[2] != peers[3] == peers[5] != peers[6]


def test_reconnects_after_the_server_drops_an_idle_connection(start) -> None:
    controller, recorder = start(timeout=0.5)  # the server closes connections idle this long
    transport = SMTPTransport(smtp_config(controller.port))
    try:
        transport.send(FROM, "ana@example.org", message(1))
        time.sleep(1.2)
        transport.send(FROM, "ana@example.org", message(2))  # no error: a fresh connection, at once
        transport.send(FROM, "ana@example.org", message(3))
    finally:
        transport.close()
    assert [message_from_bytes(g.data)["Subject"] for g in recorder.got] == ["Message 1", "Message 2", "Message 3"]
    assert transport.connections_opened == 2 and recorder.connections() == 2


def test_unreachable_server_is_a_temporary_error_naming_it() -> None:
    port = free_port()
    transport = SMTPTransport(smtp_config(port, timeout=2))
    with pytest.raises(TemporaryDeliveryError, match=f"cannot connect to SMTP server 127.0.0.1:{port}"):
        transport.send(FROM, "ana@example.org", message(1))


# --- TLS -------------------------------------------------------------------------------------


def test_starttls_with_a_trusted_ca_file(start, certificates) -> None:
    controller, recorder = start(tls_context=server_context(certificates), require_starttls=True)
    transport = SMTPTransport(smtp_config(controller.port, security="starttls", ca_file=str(certificates["ca"])))
    try:
        transport.send(FROM, "ana@example.org", message(1))
        transport.send(FROM, "bob@example.org", message(2))
    finally:
        transport.close()
    assert [g.tls for g in recorder.got] == [True, True]
    assert recorder.connections() == 1


def test_implicit_tls_with_a_trusted_ca_file(start, certificates) -> None:
    controller, recorder = start(ssl_context=server_context(certificates))
    transport = SMTPTransport(smtp_config(controller.port, security="ssl", ca_file=str(certificates["ca"])))
    try:
        transport.send(FROM, "ana@example.org", message(1))
    finally:
        transport.close()
    (got,) = recorder.got
    assert message_from_bytes(got.data)["Subject"] == "Message 1"


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_an_untrusted_certificate_stops_the_run(start, certificates, security: str) -> None:
    option = "tls_context" if security == "starttls" else "ssl_context"
    controller, recorder = start(**{option: server_context(certificates)})
    transport = SMTPTransport(smtp_config(controller.port, security=security))  # the system's CAs only
    with pytest.raises(SystemicDeliveryError) as info:
        transport.send(FROM, "ana@example.org", message(1))
    assert f"TLS with SMTP server 127.0.0.1:{controller.port} failed" in str(info.value)
    assert "smtp.ca_file" in str(info.value)
    assert recorder.got == []


def test_starttls_required_but_not_offered(smtp_sink) -> None:
    transport = SMTPTransport(smtp_config(smtp_sink.port, security="starttls"))
    with pytest.raises(SystemicDeliveryError, match="does not offer STARTTLS"):
        transport.send(FROM, "ana@example.org", message(1))
    assert smtp_sink.handler.received == []


# --- AUTH ------------------------------------------------------------------------------------


def test_auth_success(start) -> None:
    controller, recorder = start(authenticator=authenticator, auth_require_tls=False, auth_required=False)
    transport = SMTPTransport(smtp_config(controller.port, username="news", password=PASSWORD))
    try:
        transport.send(FROM, "ana@example.org", message(1))
    finally:
        transport.close()
    (got,) = recorder.got
    assert got.login == b"news"


def test_auth_over_starttls(start, certificates) -> None:
    controller, recorder = start(
        tls_context=server_context(certificates), authenticator=authenticator, auth_require_tls=True
    )
    config = smtp_config(
        controller.port, security="starttls", ca_file=str(certificates["ca"]), username="news", password=PASSWORD
    )
    transport = SMTPTransport(config)
    try:
        transport.send(FROM, "ana@example.org", message(1))
    finally:
        transport.close()
    assert [(g.tls, g.login) for g in recorder.got] == [(True, b"news")]


def test_auth_failure_is_systemic_with_a_clear_message(start) -> None:
    controller, recorder = start(authenticator=authenticator, auth_require_tls=False)
    transport = SMTPTransport(smtp_config(controller.port, username="news", password="wrong-password"))
    with pytest.raises(SystemicDeliveryError) as info:
        transport.send(FROM, "ana@example.org", message(1))
    text = str(info.value)
    assert f"SMTP server 127.0.0.1:{controller.port} refused the login for 'news'" in text
    assert "535" in text and "check smtp.username and the password" in text
    assert "wrong-password" not in text
    assert info.value.stage == "auth" and info.value.code == 535
    assert recorder.got == []


def test_auth_not_offered_is_systemic(smtp_sink) -> None:
    transport = SMTPTransport(smtp_config(smtp_sink.port, username="news", password=PASSWORD))
    with pytest.raises(SystemicDeliveryError, match=f"SMTP server 127.0.0.1:{smtp_sink.port}"):
        transport.send(FROM, "ana@example.org", message(1))


# --- timeouts --------------------------------------------------------------------------------


def test_a_server_that_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never speaks
        port = listener.getsockname()[1]
        transport = SMTPTransport(smtp_config(port, timeout=1))
        started = time.monotonic()
        with pytest.raises(TemporaryDeliveryError, match="cannot connect"):
            transport.send(FROM, "ana@example.org", message(1))
        assert time.monotonic() - started < 4


# --- Maildir ---------------------------------------------------------------------------------


def test_maildir_transport_writes_a_readable_message(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "outbox")
    try:
        reply = transport.send(FROM, "ana@example.org", message(1))
        transport.send(FROM, "bob@example.org", message(2, "bob@example.org"))
    finally:
        transport.close()
    assert reply.startswith("250 stored as ")
    files = list((tmp_path / "outbox" / "new").iterdir())
    assert len(files) == 2
    parsed = {}
    for path in files:
        data = path.read_bytes()
        assert b"\r\n" not in data  # a Maildir file has local line endings
        item = message_from_bytes(data, policy=policy.default)
        parsed[item["Subject"]] = item
    first = parsed["Message 1"]
    assert set(parsed) == {"Message 1", "Message 2"}
    assert first["Return-Path"] == f"<{FROM}>" and first["Delivered-To"] == "ana@example.org"
    assert "Zoë" in first.get_content() and ".a line with a leading dot" in first.get_content()
    assert len(mailbox.Maildir(tmp_path / "outbox", create=False)) == 2


def test_the_bulk_send_files_through_the_transport_so_the_envelope_is_the_same(tmp_path: Path) -> None:
    """MaildirPool files each message with MaildirTransport: one envelope, parts joined."""
    transport = MaildirTransport(tmp_path / "single")
    pool = MaildirPool(tmp_path / "bulk", lambda _key: True)
    data = message(1)
    try:
        transport.send(FROM, "ana@example.org", data)
        assert pool.start(Outgoing(1, FROM, "ana@example.org", [data[:40], data[40:]]))
        [completion] = pool.poll(0)
    finally:
        transport.close()
        pool.close()
    assert completion.key == 1 and completion.error is None and completion.reply.startswith("250 ")
    [single] = (tmp_path / "single" / "new").iterdir()
    [bulk] = (tmp_path / "bulk" / "new").iterdir()
    assert bulk.read_bytes() == single.read_bytes()


def test_a_maildir_that_cannot_be_written_is_the_same_systemic_error_either_way(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "outbox")
    pool = MaildirPool(tmp_path / "outbox", lambda _key: True)
    (tmp_path / "outbox" / "tmp").rmdir()
    (tmp_path / "outbox" / "tmp").write_text("")  # where each message is written first
    try:
        with pytest.raises(SystemicDeliveryError, match="cannot write to Maildir") as caught:
            transport.send(FROM, "ana@example.org", message(1))
        assert not pool.start(Outgoing(1, FROM, "ana@example.org", message(1)))
        [completion] = pool.poll(0)
    finally:
        transport.close()
        pool.close()
    assert isinstance(completion.error, SystemicDeliveryError) and completion.error.stage == "data"
    said = f"cannot write to Maildir {tmp_path / 'outbox'}: [Errno "
    assert str(caught.value).startswith(said) and str(completion.error).startswith(said)


def test_reconnects_after_a_421_timeout_on_an_idle_connection() -> None:
    """Postfix says "421 ... timeout exceeded" to an idle session, then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def session(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        conn.sendall(b"220 test ESMTP\r\n")
        conn.settimeout(0.3)
        try:
            while line := reader.readline():
                verb = line[:4].upper()
                if verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    while reader.readline() != b".\r\n":
                        pass
                    accepted.append(1)
                    conn.sendall(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except TimeoutError:
            conn.sendall(b"421 4.4.2 test Error: timeout exceeded\r\n")
        finally:
            conn.close()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=session, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    transport = SMTPTransport(smtp_config(port=listener.getsockname()[1]))
    try:
        transport.send("a@example.org", "b@example.org", b"Subject: one\r\n\r\nfirst\r\n")
        time.sleep(0.8)  # the server times the idle session out
        transport.send("a@example.org", "b@example.org", b"Subject: two\r\n\r\nsecond\r\n")
    finally:
        transport.close()
        listener.close()
    assert len(accepted) == 2 and transport.connections_opened == 2


def test_a_server_that_stalls_after_auth_is_said_to_time_out_during_login() -> None:
    """Not "cannot connect": the connection worked, the login is what hung."""
    import socket
    import threading

    from newsletter.config import SMTPConfig
    from newsletter.errors import TemporaryDeliveryError
    from newsletter.transports import open_smtp

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 stalls.example ESMTP\r\n")
            conn.recv(1024)  # EHLO
            conn.sendall(b"250-stalls.example\r\n250 AUTH PLAIN LOGIN\r\n")
            conn.recv(1024)  # AUTH ...: never answered
            stop.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        config = SMTPConfig(host="127.0.0.1", port=port, security="none", username="u", password="p", timeout=1)
        with pytest.raises(TemporaryDeliveryError) as caught:
            open_smtp(config)
    finally:
        stop.set()
        listener.close()
    assert "stopped answering during login (AUTH)" in str(caught.value)
    assert caught.value.stage == "auth"


class LineServer:
    """A plain-socket SMTP server that keeps every line a client sends until it hangs up.

    aiosmtpd cancels its handler when the client closes, so a QUIT followed at once by a
    close may never reach a hook; here every byte that arrived is read and kept.
    """

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.lines: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(0.2)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # a client that hangs up mid-reply
            self._converse(conn)

    def _converse(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"220 lines.example ESMTP\r\n")
            in_data = False
            for raw in reader:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if in_data:
                    if line == ".":
                        in_data = False
                        conn.sendall(b"250 2.0.0 queued\r\n")
                    continue
                self.lines.append(line)
                verb = line[:4].upper()
                if verb == "EHLO":
                    conn.sendall(b"250-lines.example\r\n250-SIZE 10000000\r\n250 8BITMIME\r\n")
                elif verb == "RCPT":
                    refused = any(address in line for address in self.refuse)
                    conn.sendall(b"550 5.1.1 no such user\r\n" if refused else b"250 2.1.5 OK\r\n")
                elif verb == "DATA":
                    in_data = True
                    conn.sendall(b"354 go ahead\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                else:
                    conn.sendall(b"250 2.0.0 OK\r\n")

    def close(self) -> None:
        self.stop.set()
        self.acceptor.join(2)
        for thread in self.threads:
            thread.join(2)
        self.listener.close()

    def said(self, verb: str) -> list[str]:
        return [line for line in self.lines if line.upper().startswith(verb)]


def test_smtp_manners_size_declared_quit_after_a_refusal_and_a_proper_ehlo_name(db_url, store, clock, tokens):
    """What a real Postfix logged against us: no SIZE=, "lost connection after RSET", EHLO [127.0.0.1]."""
    from newsletter.publish import send_edition
    from tests.conftest import add_subscribers, make_config, morning_articles

    morning_articles(store, clock)
    emails = add_subscribers(store, clock, 3)
    server = LineServer(refuse=frozenset({emails[-1]}))  # the last message of the run is refused
    try:
        config = make_config(db_url, None, smtp={"port": server.port, "connections": 1})
        report = send_edition(Context(config, store, clock, tokens))
    finally:
        server.close()
    assert report.stats.sent == 2 and report.stats.failed == 1
    mails = server.said("MAIL FROM")
    assert len(mails) == 3 and all(re.fullmatch(r"(?i)MAIL FROM:<[^>]+> SIZE=\d{4,}", m) for m in mails), mails
    assert len(server.said("QUIT")) == 2  # the check before sending, and the session whose last message was refused
    assert [line.lower() for line in server.said("EHLO")] == [f"ehlo {config.smtp.helo_name}"] * 2
    assert not config.smtp.helo_name.startswith("[")


def test_a_refused_login_is_ended_with_quit() -> None:
    from newsletter.transports import open_smtp

    server = LoginRefusingServer()
    try:
        config = SMTPConfig(host="127.0.0.1", port=server.port, security="none", username="u", password="p", timeout=5)
        with pytest.raises(SystemicDeliveryError, match="refused the login"):
            open_smtp(config)
    finally:
        server.close()
    assert [line.upper() for line in server.said("QUIT")] == ["QUIT"]


class LoginRefusingServer(LineServer):
    """Offers AUTH and refuses every login with 535."""

    def _converse(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"220 lines.example ESMTP\r\n")
            for raw in reader:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.lines.append(line)
                if line.upper().startswith("EHLO"):
                    conn.sendall(b"250-lines.example\r\n250 AUTH PLAIN LOGIN\r\n")
                elif line.upper().startswith("AUTH"):
                    conn.sendall(b"535 5.7.8 authentication failed\r\n")
                elif line.upper().startswith("QUIT"):
                    conn.sendall(b"221 bye\r\n")
                else:
                    conn.sendall(b"500 what\r\n")


@pytest.mark.parametrize(
    ("hostname", "domain", "expected"),
    [
        ("mail.gazette.co.uk", "gazette.co.uk", "mail.gazette.co.uk"),
        ("vm", "gazette.co.uk", "gazette.co.uk"),
        ("localhost", "gazette.co.uk", "gazette.co.uk"),
        ("192.0.2.7", "gazette.co.uk", "gazette.co.uk"),
        ("MAIL.Gazette.co.uk.", "gazette.co.uk", "mail.gazette.co.uk"),
    ],
)
def test_the_default_ehlo_name_is_never_a_bare_address(hostname: str, domain: str, expected: str) -> None:
    from newsletter.config import default_helo_name

    assert default_helo_name(hostname, domain) == expected


def test_helo_name_is_checked_and_the_old_key_still_read() -> None:
    from newsletter.errors import ConfigError

    base = {
        "newsletter": {"publication": "P"},
        "sender": {"from_address": "news@gazette.co.uk"},
        "web": {"base_url": "https://gazette.co.uk"},
    }
    assert (
        parse_config({**base, "smtp": {"helo": "mx.gazette.co.uk"}}, "<memory>", {}).smtp.helo_name
        == "mx.gazette.co.uk"
    )
    assert parse_config({**base, "smtp": {"helo_name": "[192.0.2.1]"}}, "<memory>", {}).smtp.helo_name == "[192.0.2.1]"
    for bad in ("mx gazette", "mx.gazette.co.uk\r\nMAIL FROM:<x>", "-bad-.example", "[999]"):
        with pytest.raises(ConfigError, match=r"smtp\.helo_name"):
            parse_config({**base, "smtp": {"helo_name": bad}}, "<memory>", {})
