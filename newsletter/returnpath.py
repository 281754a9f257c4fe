"""The envelope sender of each message: a signed VERP address naming the edition and the reader.

A bounce goes back to the envelope sender (MAIL FROM), so when each message is sent from
``bounces+CODE@domain`` the address a DSN arrives at says which edition and which reader
it is about, however the reporting server formats the rest (VERP, as Mailman and
listmonk do). The same CODE travels in an ``X-Newsletter-Delivery`` header, for relays
that rewrite the envelope sender but return the original headers.

The code (``newsletter.codes``) is signed: a forged code, or a real one edited to name
another reader, is refused, so nobody can bounce someone else off the list by mailing
the bounce address. The configuration refuses a bounce address whose local part would
not leave room for a code within the 64 characters SMTP allows.
"""

from __future__ import annotations

from newsletter.codes import RETURN_PATH, Attribution, ReaderCodes
from newsletter.config import Config

__all__ = ["Attribution", "ReturnPaths", "return_paths"]


class ReturnPaths:
    """Makes each message's envelope sender, and reads the codes bounces come back with."""

    def __init__(self, secret_key: str, address: str, *, delimiter: str = "+", verp: bool = True) -> None:
        self._codes = ReaderCodes(secret_key, RETURN_PATH)
        self.address = address
        self.local, _, self.domain = address.rpartition("@")
        self.delimiter = delimiter
        self.verp = verp

    def code(self, edition_id: int, subscriber_id: int) -> str:
        return self._codes.code(edition_id, subscriber_id)

    def mail_from(self, code: str) -> str:
        """The envelope sender for a message carrying ``code`` (the plain address when VERP is off)."""
        return f"{self.local}{self.delimiter}{code}@{self.domain}" if self.verp else self.address

    def read(self, code: str) -> Attribution:
        """The edition and reader a code names; ``TokenError`` when it is malformed or forged."""
        return self._codes.read(code)


def return_paths(config: Config) -> ReturnPaths:
    """The signed envelope senders ``[bounces]`` describes."""
    bounces = config.bounces
    return ReturnPaths(
        config.require_secret_key(),
        bounces.return_address(config.sender),
        delimiter=bounces.delimiter,
        verp=bounces.verp,
    )
