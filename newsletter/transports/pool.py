"""Several SMTP connections driven by one thread: the bulk send's ``Pool``.

Python threads make a poor SMTP client pool. Every reply read and every write is a
blocking call that gives up and retakes the interpreter lock, and with a few connections
the hand-offs cost more CPU than the protocol. Here one thread, the send loop's, runs every
connection as a small state machine over non-blocking sockets. The cost per message is
then the protocol itself: a pipelined MAIL/RCPT/DATA (RFC 2920) when the server offers it,
the message bytes, and the final reply.

Sessions are opened with ``smtp.open_smtp`` (blocking, via smtplib: TLS, AUTH and EHLO are
not worth re-implementing), then their socket is taken over. Before writing the final "."
of a message, a connection asks ``is_durable`` whether the previous message it delivered
has been recorded. If not, it waits with the whole message already sent. That is the
delivery log's duplicate bound: one unrecorded accepted message per connection.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import smtplib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence

from newsletter.config import SMTPConfig
from newsletter.errors import DeliveryError, SystemicDeliveryError, TemporaryDeliveryError
from newsletter.transports.base import ACCEPTED, Completion, Outgoing, classify_reply
from newsletter.transports.smtp import mail_command, open_smtp

log = logging.getLogger(__name__)

_READ_CHUNK = 65536
_IOV_MAX = 512  # buffers per sendmsg; Linux allows 1024
OPEN_FAILURES_IN_A_ROW = 3
FINAL_REPLY_SECONDS = 600.0
# Replies whose words are never read: those that accept some step (see ``_Connection._parse``).
_ACCEPTANCES = frozenset(code for codes in ACCEPTED.values() for code in codes)


class _Connection:
    """One SMTP session's state machine."""

    def __init__(self, pool: SMTPPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.smtp: smtplib.SMTP | None = None
        self.sock: socket.socket | None = None
        self.pipelining = False
        self.offers_size = False
        self.state = "closed"  # closed | idle | envelope | body | gate | final | reset
        self.current: Outgoing | None = None
        self.expect: list[str] = []  # stages whose replies are awaited, in order
        self.replies: list[tuple[str, int, str]] = []
        self.out: deque[memoryview] = deque()  # what is still to be written, in order
        self.inbuf = bytearray()
        self.deadline = 0.0
        self.previous: Hashable | None = None  # last message this connection delivered
        self.delivered = 0
        self.events = 0
        self.reopen_at = 0.0  # after a failed open, not before this (monotonic) time

    # --- life ----------------------------------------------------------------------------

    def open(self) -> None:
        self.smtp = open_smtp(self.pool.config)  # raises DeliveryError
        sock = self.smtp.sock
        assert sock is not None
        sock.setblocking(False)
        self.sock = sock
        self.pipelining = bool(self.smtp.does_esmtp and self.smtp.has_extn("pipelining"))
        self.offers_size = bool(self.smtp.does_esmtp and self.smtp.has_extn("size"))
        self.state = "idle"
        self.delivered = 0
        self.inbuf.clear()
        self.out.clear()
        self.events = selectors.EVENT_READ
        self.pool.selector.register(sock, self.events, self)
        self.pool.opened += 1

    def close(self, polite: bool = False) -> None:
        if self.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.pool.selector.unregister(self.sock)
            if polite:
                with contextlib.suppress(OSError):
                    self.sock.send(b"QUIT\r\n")
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self.smtp = None
        self.state = "closed"
        self.expect.clear()
        self.out.clear()
        self.inbuf.clear()

    # --- sending a message -----------------------------------------------------------------

    def start(self, message: Outgoing) -> None:
        self.current = message
        self.replies.clear()
        self.state = "envelope"
        data = message.data
        size = len(data) if isinstance(data, bytes | bytearray | memoryview) else sum(len(part) for part in data)
        mail = mail_command(message.mail_from, size, self.offers_size) + "\r\n"
        rcpt = f"RCPT TO:<{message.recipient}>\r\n"
        if self.pipelining:
            self.write(f"{mail}{rcpt}DATA\r\n".encode())
            self.expect = ["mail", "rcpt", "data"]
        else:
            self.write(mail.encode())
            self.expect = ["mail"]

    def on_reply(self, code: int, text: str) -> None:
        stage = self.expect.pop(0) if self.expect else "unexpected"
        if self.state == "reset":
            if not self.expect:
                self.state = "idle"
            return
        message = self.current
        assert message is not None
        if code == 421:  # the server is closing the session
            self.fail(classify_reply(code, text, stage), close=True)
            return
        if self.state == "envelope":
            self.replies.append((stage, code, text))
            if self.expect:
                return
            if not self.pipelining and stage in ("mail", "rcpt") and code in ACCEPTED[stage]:
                nxt = {"mail": ("rcpt", f"RCPT TO:<{message.recipient}>\r\n"), "rcpt": ("data", "DATA\r\n")}[stage]
                self.expect = [nxt[0]]
                self.write(nxt[1].encode())
                return
            failed = next(((s, c, t) for s, c, t in self.replies if c not in ACCEPTED[s]), None)
            if failed is None:
                self.send_body()
                return
            data_open = any(s == "data" and c in ACCEPTED["data"] for s, c, _ in self.replies)
            self.fail(classify_reply(failed[1], failed[2], failed[0]), recover_data=data_open)
        elif self.state == "final":
            if code in ACCEPTED["commit"]:
                self.finish()
            else:
                self.fail(classify_reply(code, text, "data"))

    def send_body(self) -> None:
        assert self.current is not None
        self.write(self.current.data)
        if self.gate_open():
            self.commit()
        else:
            self.state = "body"  # the message goes out now; its "." waits for the log

    def gate_open(self) -> bool:
        return self.previous is None or self.pool.is_durable(self.previous)

    def commit(self) -> None:
        self.write(b".\r\n")
        # RFC 5321 4.5.3.2.6: a server may scan the message before it answers the ".", and
        # giving up early would send it again; so wait as long as the RFC suggests.
        self.deadline = time.monotonic() + max(self.pool.config.timeout, FINAL_REPLY_SECONDS)
        self.expect = ["commit"]
        self.state = "final"

    def finish(self) -> None:
        message = self.current
        assert message is not None
        self.current = None
        self.previous = message.key
        self.delivered += 1
        self.pool.open_failures = 0  # the server takes mail: failed opens are a cap, not an outage
        self.pool.done.append(Completion(message.key, reply="250"))
        if self.delivered >= self.pool.config.max_messages_per_connection:
            self.close(polite=True)
        else:
            self.state = "idle"

    def fail(self, error: DeliveryError, *, close: bool = False, recover_data: bool = False) -> None:
        """End the current message with ``error``; keep the session usable unless told not to."""
        message = self.current
        self.current = None
        if message is not None:
            self.pool.done.append(Completion(message.key, error=error))
        if close or self.sock is None:
            self.close()
            return
        # Back to a clean state: end a DATA the server opened anyway (no recipient was
        # accepted, so nothing is delivered), then RSET. Their replies are not needed.
        self.state = "reset"
        self.expect = ["reset"] * (2 if recover_data else 1)
        self.write(b".\r\nRSET\r\n" if recover_data else b"RSET\r\n")

    def broken(self, why: str) -> None:
        """The connection failed under us: the message in hand may or may not have arrived."""
        stage = {"final": "commit", "body": "data"}.get(self.state) or (self.expect[0] if self.expect else "mail")
        maybe = " (the server may have accepted it)" if stage == "commit" else ""
        if self.current is not None:
            self.fail(TemporaryDeliveryError(f"{stage}: connection lost{maybe}: {why}", stage=stage), close=True)
        else:
            self.close()

    # --- bytes ---------------------------------------------------------------------------------

    def write(self, data: bytes | Sequence[bytes]) -> None:
        """Queue bytes (or a message's parts, written without joining them) and send what fits."""
        if isinstance(data, bytes | bytearray):
            self.out.append(memoryview(data))
        else:
            self.out.extend(memoryview(part) for part in data if part)
        self.deadline = time.monotonic() + self.pool.config.timeout
        self.flush()

    def flush(self) -> None:
        sock = self.sock
        gather = not isinstance(sock, ssl.SSLSocket)  # TLS sockets have no sendmsg
        while self.out and sock is not None:
            try:
                sent = sock.sendmsg(list(itertools.islice(self.out, _IOV_MAX))) if gather else sock.send(self.out[0])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError, InterruptedError):
                break
            except OSError as exc:
                self.broken(str(exc))
                return
            while sent:
                head = self.out[0]
                if sent >= len(head):
                    sent -= len(head)
                    self.out.popleft()
                else:
                    self.out[0] = head[sent:]
                    sent = 0
        self._want(write=bool(self.out))

    def _want(self, write: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        if self.sock is not None and events != self.events:
            self.events = events
            self.pool.selector.modify(self.sock, events, self)

    def readable(self) -> None:
        sock = self.sock
        while sock is not None:
            try:
                chunk = sock.recv(_READ_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError, InterruptedError):
                break
            except OSError as exc:
                self.broken(str(exc))
                return
            if not chunk:
                self.broken("the server closed the connection")
                return
            self.inbuf += chunk
            self.deadline = max(self.deadline, time.monotonic() + self.pool.config.timeout)
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
        self._parse()

    def _parse(self) -> None:
        while self.sock is not None:
            end = self.inbuf.find(b"\n")
            if end < 0:
                if len(self.inbuf) > 64 * 1024:
                    self.broken("reply line too long")
                return
            # A reply may span lines ("250-..."); it ends at a line with a space after the code.
            start = 0
            lines: list[bytes] = []
            complete = False
            while end >= 0:
                line = bytes(self.inbuf[start:end]).rstrip(b"\r")
                lines.append(line)
                start = end + 1
                if len(line) < 4 or line[3:4] != b"-":
                    complete = True
                    break
                end = self.inbuf.find(b"\n", start)
            if not complete:
                return
            del self.inbuf[:start]
            code_text = lines[-1][:3]
            code = int(code_text) if code_text.isdigit() else -1
            # The words of a reply matter only when it is a refusal: skip decoding the rest.
            text = "" if code in _ACCEPTANCES else " ".join(line[4:].decode("utf-8", "replace") for line in lines)
            if not self.expect and self.state in ("idle", "closed"):
                if code == 421:
                    self.close()  # the server timed the idle session out
                continue
            self.on_reply(code, text)


class SMTPPool:
    """Up to ``size`` SMTP sessions in one thread; ``start`` a message, ``poll`` for results."""

    def __init__(self, config: SMTPConfig, size: int, is_durable: Callable[[Hashable], bool]) -> None:
        self.config = config
        self.is_durable = is_durable
        self.selector = selectors.DefaultSelector()
        self.connections = [_Connection(self, i) for i in range(size)]
        self.done: list[Completion] = []
        self.opened = 0
        self.open_failures = 0  # in a row, across the pool
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    def _ready(self, conn: _Connection, now: float) -> bool:
        return conn.state == "idle" or (conn.state == "closed" and conn.reopen_at <= now)

    def idle(self) -> int:
        # Called for every message started: no clock read unless a connection is backing off.
        count = 0
        for conn in self.connections:
            if conn.state == "idle":
                count += 1
            elif conn.state == "closed":
                count += not conn.reopen_at or conn.reopen_at <= time.monotonic()
        return count

    def busy(self) -> int:
        return len(self.connections) - self.idle()

    def start(self, message: Outgoing) -> bool:
        """Hand a message to an idle connection, opening one if needed (blocking, on the spot).

        False when the connection could not be opened: the message is done with that error,
        and the caller should poll before starting more, since every open waits up to the
        timeout. A connection that failed to open is not retried for a while (1, 2, 4 ... s),
        and OPEN_FAILURES_IN_A_ROW failed opens with no other connection left (and no message
        delivered meanwhile) make the error systemic: the server is unreachable, and the run
        stops instead of spending the timeout on every reader. A server that caps
        connections per client only leaves the extra ones backing off.
        """
        now = time.monotonic()
        conn = next((c for c in self.connections if c.state == "idle"), None)
        conn = conn or next((c for c in self.connections if self._ready(c, now)), None)
        if conn is None:
            raise RuntimeError("start() needs an idle connection")
        if conn.state == "closed":
            try:
                conn.open()
            except DeliveryError as exc:
                self.open_failures += 1
                conn.reopen_at = time.monotonic() + min(2.0 ** (self.open_failures - 1), 30.0)
                error = exc
                alone = all(c.state == "closed" for c in self.connections)  # none left delivering
                if (
                    self.open_failures >= OPEN_FAILURES_IN_A_ROW
                    and alone
                    and not isinstance(exc, SystemicDeliveryError)
                ):
                    error = SystemicDeliveryError(
                        f"{exc} ({self.open_failures} attempts in a row to open a connection failed)", stage="connect"
                    )
                self.done.append(Completion(message.key, error=error))
                return False
            self.open_failures = 0
            conn.reopen_at = 0.0
        conn.start(message)
        return True

    def wake(self) -> None:
        """Make a ``poll`` in progress return early; safe from any thread."""
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def poll(self, timeout: float) -> list[Completion]:
        """Move every connection along; returns the messages that finished meanwhile."""
        self._release_gates()  # the log may have caught up since the last poll
        if not self.done:
            for key, mask in self.selector.select(timeout):
                conn = key.data
                if conn is None:
                    with contextlib.suppress(BlockingIOError, OSError):
                        self._wake_r.recv(4096)
                    continue
                if mask & selectors.EVENT_WRITE:
                    conn.flush()
                if mask & selectors.EVENT_READ and conn.sock is not None:
                    conn.readable()
            self._release_gates()
        now = time.monotonic()
        for conn in self.connections:
            if (conn.state in ("envelope", "final", "reset") or conn.out) and now > conn.deadline:
                conn.broken(f"no answer within {self.config.timeout:g} s")
        done, self.done = self.done, []
        return done

    def _release_gates(self) -> None:
        for conn in self.connections:
            if conn.state == "body" and conn.gate_open():
                conn.commit()

    def hurry(self, seconds: float) -> None:
        """Stopping: wait at most ``seconds`` more for any answer (the final "." allows ten minutes)."""
        limit = time.monotonic() + seconds
        for conn in self.connections:
            conn.deadline = min(conn.deadline, limit)

    def waiting_on_log(self) -> bool:
        """Whether some connection holds a transmitted message until the log catches up."""
        return any(c.state == "body" and not c.out for c in self.connections)

    def close(self) -> None:
        for conn in self.connections:
            # QUIT wherever the server is still talking: idle, or resetting after a refusal.
            if conn.state in ("idle", "reset"):
                conn.close(polite=True)
            else:
                conn.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


def check_reachable(config: SMTPConfig) -> None:
    """Open and close one session: bad credentials or an unreachable server, said up front."""
    smtp = open_smtp(config)
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.quit()


__all__ = ["SMTPPool", "check_reachable"]
