"""A fault-injecting SMTP server for delivery tests (aiosmtpd, real sockets).

The handler decides per command, from a seeded random generator and per-stage
probabilities, to accept, answer 421/451/452/550, stall past the client's timeout, or
drop the connection, before or after accepting the message. It records every message
it accepted, per recipient, and which recipients had a message accepted and then the
connection dropped (the only case in which a duplicate is legitimate).

Like a relay, it can also accept a message for a dead mailbox and report the failure
afterwards: a DSN to the message's envelope sender, dropped into a bounce Maildir.
"""

from __future__ import annotations

import asyncio
import mailbox
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult


@dataclass
class Faults:
    """Probabilities of each misbehaviour; all zero is a well-behaved server."""

    rcpt_temporary: float = 0.0  # 451 / 452 / 421 at RCPT
    rcpt_permanent: float = 0.0  # 550 5.1.1 at RCPT (a dead mailbox)
    data_temporary: float = 0.0  # 451 / 452 after the message
    data_permanent: float = 0.0  # 554 5.7.1 after the message (content refused)
    drop_before_data: float = 0.0  # connection closed at RCPT
    drop_after_accept: float = 0.0  # message accepted, then the connection closed before the 250
    slow: float = 0.0  # no answer for ``slow_seconds`` at RCPT
    slow_seconds: float = 0.0
    scan_seconds: float = 0.0  # wait this long before answering the final "." (a content scanner)
    max_sessions: int = 0  # refuse sessions beyond this many at once with 421, as providers do (0: no cap)
    close_421: bool = True  # after a 421 the server closes the session, as RFC 5321 says
    dead_mailboxes: frozenset[str] = frozenset()  # always 550 5.1.1
    bounce_later: frozenset[str] = frozenset()  # accepted, then a DSN 5.1.1 goes to ``bounce_maildir``
    bounce_maildir: str = ""


@dataclass
class FaultyHandler:
    faults: Faults
    seed: int = 0
    pipelining: bool = False  # advertise RFC 2920, so the client pipelines commands and messages
    accepted: Counter[str] = field(default_factory=Counter)
    dropped_after_accept: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: int = 0
    refused_sessions: int = 0

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # ``responses`` already ends with the final "250 HELP"
        with self.lock:
            if self.faults.max_sessions and self.sessions >= self.faults.max_sessions:
                self.refused_sessions += 1
                self._close_later(server)
                return ["421 4.7.0 too many connections from your address"]
            self.sessions += 1
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_QUIT(self, server: SMTP, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        if getattr(session, "host_name", None):
            with self.lock:
                self.sessions = max(0, self.sessions - 1)
        return "221 Bye"

    def _close_later(self, server: SMTP) -> None:
        loop = server.loop
        loop.call_later(0.05, lambda: server.transport.close() if server.transport is not None else None)

    def _roll(self, probability: float) -> bool:
        with self.lock:
            return self.random.random() < probability

    def _close(self, server: SMTP) -> None:
        if server.transport is not None:
            server.transport.close()

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        f = self.faults
        if address in f.dead_mailboxes or self._roll(f.rcpt_permanent):
            return self._reply(f"550 5.1.1 <{address}>: no such user")
        if self._roll(f.slow):
            await asyncio.sleep(f.slow_seconds)
        if self._roll(f.drop_before_data):
            self._close(server)
            return self._reply("421 4.4.2 dropped before data")
        if self._roll(f.rcpt_temporary):
            code = self.random.choice(["451 4.3.0 try again later", "452 4.2.2 mailbox full", "421 4.7.0 too busy"])
            if code.startswith("421") and f.close_421:
                asyncio.get_running_loop().call_soon(self._close, server)
            return self._reply(code)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:  # noqa: N802
        f = self.faults
        if self._roll(f.data_temporary):
            return self._reply("451 4.3.0 queue full, try later")
        if self._roll(f.data_permanent):
            return self._reply("554 5.7.1 message refused")
        if f.scan_seconds:
            await asyncio.sleep(f.scan_seconds)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.accepted[rcpt] += 1
        if self._roll(f.drop_after_accept):
            with self.lock:
                for rcpt in envelope.rcpt_tos:
                    self.dropped_after_accept[rcpt] += 1
            self._close(server)
            return "250 2.0.0 (never seen: the connection is gone)"
        for rcpt in envelope.rcpt_tos:
            if rcpt in f.bounce_later:
                report = dsn(envelope.mail_from, rcpt, envelope.original_content or envelope.content)
                with self.lock:
                    mailbox.Maildir(f.bounce_maildir, create=True).add(report)
        return "250 2.0.0 OK"

    def _reply(self, text: str) -> str:
        with self.lock:
            self.replies[text.split()[0]] += 1
        return text


def dsn(
    to: str,
    recipient: str,
    original: bytes,
    *,
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown in virtual mailbox table",
    action: str = "failed",
    returned: str = "headers",
) -> bytes:
    """A Postfix-style RFC 3464 report, as a relay sends it to the envelope sender ``to``."""
    head = original.split(b"\r\n\r\n", 1)[0]
    kind = "text/rfc822-headers" if returned == "headers" else "message/rfc822"
    body = head if returned == "headers" else original
    return (
        (
            "Return-Path: <>\r\n"
            f"Delivered-To: {to}\r\n"
            "From: MAILER-DAEMON@mx.readers.example (Mail Delivery System)\r\n"
            f"To: {to}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\n"
            "Auto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B0"\r\n'
            "\r\n--B0\r\nContent-Type: text/plain\r\n\r\n"
            "I'm sorry to have to inform you that your message could not be delivered.\r\n"
            "\r\n--B0\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.readers.example\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\n"
            f"Original-Recipient: rfc822;{recipient}\r\n"
            f"Action: {action}\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: {diagnostic.format(r=recipient)}\r\n"
            f"\r\n--B0\r\nContent-Type: {kind}\r\n\r\n"
        ).encode()
        + body
        + b"\r\n\r\n--B0--\r\n"
    )


class RejectingAuthenticator:
    """Refuses every login, as a provider does for a revoked password."""

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)
