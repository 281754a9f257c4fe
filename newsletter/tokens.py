"""Signed, expiring tokens for the links in emails: confirm a subscription, or leave.

A token names a subscriber by id plus a short digest of their address, and is signed with
the secret key under a salt per purpose, so a confirm token cannot unsubscribe anyone and
a token stops working if the row is reused for another address. Verification is
itsdangerous's constant-time HMAC check; the clock is injectable so expiry can be tested.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from itsdangerous.signer import HMACAlgorithm

from newsletter.clock import Clock, SystemClock
from newsletter.errors import TokenError, TokenExpiredError

CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"
PURPOSES = (CONFIRM, UNSUBSCRIBE)


def email_digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:10]


@dataclass(frozen=True)
class TokenClaim:
    """What a valid token says: which subscriber, and the digest of the address it was made for."""

    subscriber_id: int
    digest: str
    issued_at: datetime | None = None  # when the link was signed (UTC, to the second)
    edition_id: int | None = None  # the edition an unsubscribe link came in, when it says

    def matches(self, email: str) -> bool:
        return self.digest == email_digest(email)


class _OneShotHMAC(HMACAlgorithm):
    """itsdangerous's HMAC-SHA1, computed by one C call instead of an hmac object per token."""

    def __init__(self) -> None:
        super().__init__(hashlib.sha1)

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha1")


class Tokens:
    """Makes and checks the signed tokens of one installation.

    The payload is just "id-digest", signed with a timestamp: no JSON, no compression,
    because an unsubscribe token is made for every message of every edition.
    """

    def __init__(self, secret_key: str | Callable[[], str], clock: Clock | None = None) -> None:
        """``secret_key`` may be a function that gives it, asked when a token is first made or read:
        the CLI's commands that sign nothing (``preview``, ``status``) run without a key."""
        if not secret_key:
            raise TokenError("no secret key configured: tokens cannot be signed")
        self._secret_key = secret_key
        self._clock = clock or SystemClock()
        self._signers: dict[str, TimestampSigner] = {}
        if isinstance(secret_key, str):
            self._signers = self._make_signers(secret_key)

    def _make_signers(self, secret_key: str) -> dict[str, TimestampSigner]:
        if not secret_key:
            raise TokenError("no secret key configured: tokens cannot be signed")
        the_clock = self._clock

        class _ClockSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(the_clock.now().timestamp())

            @functools.cache  # noqa: B019 - one signer per purpose, living as long as Tokens
            def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
                return super().derive_key(secret_key)  # the same for every token: derive it once

        return {
            purpose: _ClockSigner(secret_key, salt=f"newsletter-{purpose}", algorithm=_OneShotHMAC())
            for purpose in PURPOSES
        }

    def _signer(self, purpose: str) -> TimestampSigner:
        signer = self._signers.get(purpose)
        if signer is None:
            if not self._signers and callable(self._secret_key):  # the key, asked for on first use
                self._signers = self._make_signers(self._secret_key())
                return self._signer(purpose)
            raise TokenError(f"unknown token purpose {purpose!r}; expected one of: {', '.join(PURPOSES)}")
        return signer

    def make(self, purpose: str, subscriber_id: int, email: str, edition_id: int | None = None) -> str:
        """A token for a reader; an unsubscribe link also names the edition it went out in,
        so the report can say which edition readers left from."""
        payload = f"{subscriber_id}-{email_digest(email)}" + (f"-{edition_id}" if edition_id else "")
        return self._signer(purpose).sign(payload).decode("ascii")

    def read(self, purpose: str, token: str, max_age_days: int) -> TokenClaim:
        """The claim in a token, or ``TokenError`` saying whether it was forged or just old."""
        signer = self._signer(purpose)
        if not token or len(token) > 256 or not token.isascii():
            raise TokenError("this link is not valid")
        try:
            raw, stamp = signer.unsign(token, max_age=max_age_days * 86_400, return_timestamp=True)
            value = raw.decode("ascii")
        except SignatureExpired as exc:
            raise TokenExpiredError("this link has expired") from exc
        except BadSignature as exc:
            raise TokenError("this link is not valid") from exc
        parts = value.split("-")
        if len(parts) == 2:  # links made before they named the edition
            parts.append("")
        if len(parts) != 3:
            raise TokenError("this link is not valid")
        sid, digest, edition = parts
        if not sid.isdigit() or len(digest) != 10 or not (edition == "" or (edition.isdigit() and len(edition) < 10)):
            raise TokenError("this link is not valid")
        return TokenClaim(
            subscriber_id=int(sid),
            digest=digest,
            issued_at=stamp.astimezone(UTC),
            edition_id=int(edition) if edition else None,
        )
