"""Sending into a local Maildir, for previews, the demo's outbox and tests: no mail server.

``MaildirTransport`` files one message. ``MaildirPool`` is the bulk send's pool over it:
one "connection" that finishes each message at once. Both file messages through
``MaildirTransport.send``, so the envelope and the local line endings are written in one
place.
"""

from __future__ import annotations

import mailbox
import time
from collections.abc import Callable, Hashable
from pathlib import Path

from newsletter.errors import DeliveryError, SystemicDeliveryError
from newsletter.transports.base import Completion, Outgoing


class MaildirTransport:
    """Writes each message into a Maildir, as a local delivery agent would.

    The envelope goes into Return-Path and Delivered-To, and lines end the local way.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._box = mailbox.Maildir(self.path, create=True)

    def send(
        self,
        mail_from: str,
        recipient: str,
        data: bytes,
        *,
        canonical: bool = False,
    ) -> str:
        envelope = f"Return-Path: <{mail_from}>\nDelivered-To: {recipient}\n".encode()
        try:
            key = self._box.add(envelope + data.replace(b"\r\n", b"\n"))
        except OSError as exc:
            raise SystemicDeliveryError(f"cannot write to Maildir {self.path}: {exc}", stage="data") from exc
        return f"250 stored as {key}"

    def close(self) -> None:
        self._box.close()


class MaildirPool:
    """A pool of one instant "connection" that files messages into a Maildir."""

    def __init__(self, path: str | Path, is_durable: Callable[[Hashable], bool]) -> None:
        self.transport = MaildirTransport(path)
        self.is_durable = is_durable
        self._done: list[Completion] = []
        self._previous: Hashable | None = None

    def idle(self) -> int:
        # The same bound as SMTP: the next message is filed once the last one is recorded
        # (and not before its completion has even been handed over).
        return 0 if self._done or self.waiting_on_log() else 1

    def busy(self) -> int:
        return 1 - self.idle()

    def waiting_on_log(self) -> bool:
        return self._previous is not None and not self.is_durable(self._previous)

    def hurry(self, seconds: float) -> None:
        pass  # filing is instant

    def start(self, message: Outgoing) -> bool:
        data = message.data if isinstance(message.data, bytes) else b"".join(message.data)
        try:
            reply = self.transport.send(message.mail_from, message.recipient, data)
        except DeliveryError as error:
            self._done.append(Completion(message.key, error=error))
            return False
        self._previous = message.key
        self._done.append(Completion(message.key, reply=reply))
        return True

    def poll(self, timeout: float) -> list[Completion]:
        if not self._done and timeout > 0:
            time.sleep(min(timeout, 0.05))
        done, self._done = self._done, []
        return done

    def wake(self) -> None:
        pass

    def close(self) -> None:
        self.transport.close()


__all__ = ["MaildirPool", "MaildirTransport"]
