"""The envelope sender of each message: a signed VERP address naming the edition and the reader.

A bounce goes back to the envelope sender (MAIL FROM), so when each message is sent from
``bounces+CODE@domain`` the address a DSN arrives at says which edition and which reader
it is about, however the reporting server formats the rest (VERP, as Mailman and
listmonk do). The same CODE travels in an ``X-Newsletter-Delivery`` header, for relays
that rewrite the envelope sender but return the original headers.

The code is ``<edition id>-<subscriber id>-<signature>`` in lower-case hex, since some
mail servers fold the local part to lower case. The signature is 56 bits of keyed BLAKE2b
(a MAC by design, and one C call: this runs for every message) under a key derived from
the installation's secret: a forged code, or a real one edited to name another reader, is
refused, so nobody can bounce someone else off the list by mailing the bounce address.
56 bits is ample for a check that cannot be tried offline.
Ids up to 2**31 are 8 hex digits, so a code is at most 32 characters; the configuration
refuses a bounce address whose local part would then pass the 64 characters SMTP allows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from newsletter.config import Config
from newsletter.errors import TokenError

_CODE = re.compile(r"([0-9a-f]{1,8})-([0-9a-f]{1,8})-([0-9a-f]{14})")


@dataclass(frozen=True)
class Attribution:
    """What a valid code names."""

    edition_id: int
    subscriber_id: int


class ReturnPaths:
    """Makes each message's envelope sender, and reads the codes bounces come back with."""

    def __init__(self, secret_key: str, address: str, *, delimiter: str = "+", verp: bool = True) -> None:
        if not secret_key:
            raise TokenError("no secret key configured: return paths cannot be signed")
        self._key = hashlib.sha256(b"newsletter-return-path\x00" + secret_key.encode("utf-8")).digest()
        self._mac = hashlib.blake2b(key=self._key, digest_size=7)
        self.address = address
        self.local, _, self.domain = address.rpartition("@")
        self.delimiter = delimiter
        self.verp = verp

    def _signature(self, ids: str) -> str:
        mac = self._mac.copy()
        mac.update(ids.encode("ascii"))
        return mac.hexdigest()

    def code(self, edition_id: int, subscriber_id: int) -> str:
        ids = f"{edition_id:x}-{subscriber_id:x}"
        return f"{ids}-{self._signature(ids)}"

    def mail_from(self, code: str) -> str:
        """The envelope sender for a message carrying ``code`` (the plain address when VERP is off)."""
        return f"{self.local}{self.delimiter}{code}@{self.domain}" if self.verp else self.address

    def read(self, code: str) -> Attribution:
        """The edition and reader a code names; ``TokenError`` when it is malformed or forged."""
        match = _CODE.fullmatch(code.strip().lower()) if len(code) < 100 else None
        if match is None:
            raise TokenError("not a return-path code")
        edition_id, subscriber_id = int(match[1], 16), int(match[2], 16)
        if not hmac.compare_digest(match[3], self._signature(f"{edition_id:x}-{subscriber_id:x}")):
            raise TokenError("a return-path code with a wrong signature")
        return Attribution(edition_id, subscriber_id)


def return_paths(config: Config) -> ReturnPaths:
    """The signed envelope senders ``[bounces]`` describes."""
    bounces = config.bounces
    return ReturnPaths(
        config.require_secret_key(),
        bounces.return_address(config.sender),
        delimiter=bounces.delimiter,
        verp=bounces.verp,
    )
