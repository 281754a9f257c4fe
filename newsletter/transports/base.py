"""What the ways of sending promise, the values they exchange, and what a server's reply means.

There are two ways of sending, for two kinds of caller:

- ``Transport``: one message at a time, blocking, the answer returned or raised. Test
  copies, the outbox (sign-up confirmations) and staff notices go this way.
- ``Pool``: many connections driven by the send loop (``newsletter.delivery``) from one
  thread. It takes ``Outgoing`` messages and hands back a ``Completion`` for each one.

Both speak SMTP (``smtp.py`` and ``pool.py``) or file into a Maildir (``maildir.py``), and
both read a server's reply with ``ACCEPTED`` and ``classify_reply``. That way a refusal
means the same thing whichever way the message went.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, overload

from newsletter.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError

ACCEPTED: Final[Mapping[str, tuple[int, ...]]] = {
    "mail": (250,),
    "rcpt": (250, 251),
    "data": (354,),
    "commit": (250,),
}
"""The replies that let a transaction go on, by the step they answer.

"commit" is the answer to the final "." of a message. Any other reply is a refusal, even a
2xx or 3xx the step does not expect. The pool tests this table inline for every message,
as a call per accepted reply would cost more than the test, and hands ``classify_reply``
only what it refuses.
"""

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
    """One message at a time, blocking: what test copies, the outbox and staff notices use."""

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
    """The connections the send loop drives: ``SMTPPool``, or ``MaildirPool`` for local use.

    ``start`` hands a message to an idle connection and ``poll`` returns the messages that
    have finished. A connection writes a message's final "." only once ``is_durable`` (see
    ``PoolFactory``) says the previous message it delivered has been recorded. That is the
    delivery log's duplicate bound.
    """

    def idle(self) -> int: ...
    def busy(self) -> int: ...
    def start(self, message: Outgoing) -> bool: ...
    def waiting_on_log(self) -> bool: ...
    def hurry(self, seconds: float) -> None: ...
    def poll(self, timeout: float) -> list[Completion]: ...
    def wake(self) -> None: ...
    def close(self) -> None: ...


PoolFactory = Callable[[Callable[[Hashable], bool]], Pool]
"""Makes a pool, given the ``is_durable`` question its connections must ask before committing."""


def reply_text(code: int, reply: bytes | str) -> str:
    """A reply as one line, code first and cut to a length a log line and the delivery log can hold."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"[:900]


@overload
def classify_reply(code: int, reply: bytes | str, stage: str) -> DeliveryError: ...
@overload
def classify_reply(code: int, reply: bytes | str, stage: str, accepted: Collection[int]) -> DeliveryError | None: ...
def classify_reply(code: int, reply: bytes | str, stage: str, accepted: Collection[int] = ()) -> DeliveryError | None:
    """What a server's reply means: None when it is one of ``accepted``, otherwise the error to raise.

    ``accepted`` is the ``ACCEPTED`` entry for the step the reply answers. Leave it out for
    a reply already known to be a refusal, such as a 421 or one the pool tested inline.
    ``stage`` is where the error says it happened. A refused final "." is reported at
    "data", because the server refused the message itself.

    Only a 5xx says the message will never pass. A 4xx, or anything a server should not
    have answered (garbage, a stray 2xx or 3xx), is worth another try rather than a reader
    marked failed for good. The enhanced status (RFC 3463, "5.1.1") is read here, once,
    and carried as ``DeliveryError.enhanced_status``. It must lead the text (RFC 2034) and
    its class must agree with the reply code's, or it is not one.
    """
    if code in accepted:
        return None
    raw = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    found = _ENHANCED_STATUS.match(raw.lstrip(" -"))
    status = ".".join(found.groups()) if found is not None and found.group(1) == str(code)[:1] else ""
    message = f"{stage}: {reply_text(code, reply)}"
    if 500 <= code < 600:
        return PermanentDeliveryError(message, code=code, stage=stage, enhanced_status=status)
    return TemporaryDeliveryError(message, code=code, stage=stage, enhanced_status=status)


__all__ = [
    "ACCEPTED",
    "Completion",
    "Outgoing",
    "Pool",
    "PoolFactory",
    "Transport",
    "classify_reply",
    "reply_text",
]
