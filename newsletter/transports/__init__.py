"""The ways of getting a message to a mail server: one at a time, or many at once.

``base`` says what each way promises (``Transport``, ``Pool``), the values they exchange
and what a server's reply means. ``smtp``, ``pool`` and ``maildir`` hold the ways
themselves. Callers import from here.
"""

from newsletter.transports.base import (
    ACCEPTED,
    Completion,
    Outgoing,
    Pool,
    PoolFactory,
    Transport,
    classify_reply,
)
from newsletter.transports.maildir import MaildirPool, MaildirTransport
from newsletter.transports.pool import SMTPPool, check_reachable
from newsletter.transports.smtp import SMTPTransport, open_smtp

__all__ = [
    "ACCEPTED",
    "Completion",
    "MaildirPool",
    "MaildirTransport",
    "Outgoing",
    "Pool",
    "PoolFactory",
    "SMTPPool",
    "SMTPTransport",
    "Transport",
    "check_reachable",
    "classify_reply",
    "open_smtp",
]
