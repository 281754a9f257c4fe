"""Short signed codes that name an edition and a reader: the return path, and each tracked link.

A code is ``<edition id>-<subscriber id>-<signature>`` in lower-case hex: short enough for
an email local part or a URL path, and safe where mail servers fold local parts to lower
case. The signature is 56 bits of keyed BLAKE2b (a MAC by design, and one C call, because
a code is made for every message) under a key derived from the installation's secret and
the code's purpose, so a return-path code is no click code and the other way round. A
forged code, or a real one edited to name another reader, is refused; 56 bits is ample
for a check that cannot be tried offline. Ids up to 2**31 are 8 hex digits, so a code
is at most 32 characters.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from newsletter.errors import TokenError

RETURN_PATH = "return-path"
CLICK = "click"
_CODE = re.compile(r"([0-9a-f]{1,8})-([0-9a-f]{1,8})-([0-9a-f]{14})")


@dataclass(frozen=True)
class Attribution:
    """What a valid code names."""

    edition_id: int
    subscriber_id: int


class ReaderCodes:
    """Makes and reads the signed codes of one purpose."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        if not secret_key:
            raise TokenError(f"no secret key configured: {purpose} codes cannot be signed")
        key = hashlib.sha256(f"newsletter-{purpose}\x00{secret_key}".encode()).digest()
        self._mac = hashlib.blake2b(key=key, digest_size=7)
        self.purpose = purpose

    def _signature(self, ids: str) -> str:
        mac = self._mac.copy()
        mac.update(ids.encode("ascii"))
        return mac.hexdigest()

    def code(self, edition_id: int, subscriber_id: int) -> str:
        ids = f"{edition_id:x}-{subscriber_id:x}"
        return f"{ids}-{self._signature(ids)}"

    def read(self, code: str) -> Attribution:
        """The edition and reader a code names; ``TokenError`` when it is malformed or forged."""
        match = _CODE.fullmatch(code.strip().lower()) if len(code) < 100 else None
        if match is None:
            raise TokenError(f"not a {self.purpose} code")
        edition_id, subscriber_id = int(match[1], 16), int(match[2], 16)
        if not hmac.compare_digest(match[3], self._signature(f"{edition_id:x}-{subscriber_id:x}")):
            raise TokenError(f"a {self.purpose} code with a wrong signature")
        return Attribution(edition_id, subscriber_id)
