"""What the ways of sending promise, the values they exchange, and what a server's reply means.

There are two ways of sending, for two kinds of caller:

- ``Transport``: one message at a time, blocking, the answer returned or raised. Test
  copies, the outbox (sign-up confirmations) and staff notices go this way.
- ``Pool``: many connections driven by the send loop (``newsletter.delivery``) from one
  thread. It takes ``Outgoing`` messages and hands back a ``Completion`` for each one.

Both speak SMTP (``smtp.py`` and ``pool.py``) or file into a Maildir (``maildir.py``), and
both read a refused reply with ``reply_error``. That way a refusal means the same thing
whichever way the message went.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from newsletter.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError

_ENHANCED_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


@dataclass(frozen=True)
class Outgoing:
    """One message for a ``Pool`` to deliver.

    ``data`` is canonical wire bytes (CRLF, no leading dots). It comes whole or in parts,
    and the parts are sent one after the other without being joined.
    """

    key: Hashable
    mail_from: str
    recipient: str
    data: bytes | Sequence[bytes]


@dataclass(frozen=True)
class Completion:
    """The end of one message's attempt: ``error`` is None when the server accepted it."""

    key: Hashable
    reply: str = ""
    error: DeliveryError | None = None


class Transport(Protocol):
    """What the delivery loop needs from a way of sending."""

    def send(
        self,
        mail_from: str,
        recipient: str,
        data: bytes,
        *,
        canonical: bool = False,
    ) -> str:
        """Deliver one message; return the server's acceptance text or raise ``DeliveryError``.

        ``canonical`` promises wire-ready bytes: CRLF line endings, no line-leading dots,
        a final CRLF.
        """
        ...

    def close(self) -> None: ...


class Pool(Protocol):
    """Connections that carry messages: ``SMTPPool``, or ``MaildirPool`` for local use."""

    def idle(self) -> int: ...
    def busy(self) -> int: ...
    def start(self, message: Outgoing) -> bool: ...
    def waiting_on_log(self) -> bool: ...
    def hurry(self, seconds: float) -> None: ...
    def poll(self, timeout: float) -> list[Completion]: ...
    def wake(self) -> None: ...
    def close(self) -> None: ...


PoolFactory = Callable[[Callable[[Hashable], bool]], Pool]
"""Makes a pool given the ``is_durable`` question its connections must ask before committing."""


def reply_text(code: int, reply: bytes | str) -> str:
    """A reply as one line, code first and cut to a length a log line and the delivery log can hold."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"[:900]


def enhanced_status(code: int, text: str) -> str:
    """The RFC 3463 status a reply carries ("5.1.1"), or "": it leads the text (RFC 2034),
    and its class must agree with the reply code's, or it is not one."""
    found = _ENHANCED_STATUS.match(text.lstrip(" -"))
    if found is None or found.group(1) != str(code)[:1]:
        return ""
    return ".".join(found.groups())


def reply_error(code: int, reply: bytes | str, stage: str) -> DeliveryError:
    """Classify an SMTP reply: only a 5xx says the message will never pass.

    4xx, and anything a server should not have answered (garbage, a stray 2xx or 3xx), is
    worth another try rather than a reader marked failed for good. The enhanced status is
    read from the reply here, once, and carried as an attribute.
    """
    text = reply_text(code, reply)
    raw = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    status = enhanced_status(code, raw)
    if 500 <= code < 600:
        return PermanentDeliveryError(f"{stage}: {text}", code=code, stage=stage, enhanced_status=status)
    return TemporaryDeliveryError(f"{stage}: {text}", code=code, stage=stage, enhanced_status=status)


__all__ = [
    "Completion",
    "Outgoing",
    "Pool",
    "PoolFactory",
    "Transport",
    "enhanced_status",
    "reply_error",
    "reply_text",
]
