"""Checking DKIM, never signing: verify a message with dkimpy, and check a whole setup end to end.

``dkim`` signs at the speed the sender sends and needs nothing from here; this module is
the other side, used by ``newsletter dkim check`` and by tests. It imports ``dkim`` (the
check signs a test message with the configured keys) and is never imported by it, so the
send path loads neither dkimpy nor dnspython.

dkimpy is the reference verifier because it shares no code with our signer: a signature
it accepts was not judged by the code that wrote it. ``check`` goes on to compare the key
published in DNS, so a setup is known to work before the morning's send rather than from a
receiver's DMARC report; DNS that cannot be reached is reported as skipped, never as a
failure, and a lookup gives up after ``DNS_TIMEOUT`` seconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from typing import NamedTuple

from newsletter.config import DkimConfig
from newsletter.dkim import MIN_RSA_BITS, load_signer
from newsletter.errors import ConfigError, DkimError

DNS_TIMEOUT = 3.0  # seconds for a DNS lookup in `dkim check`; it must never hang


class Verified(NamedTuple):
    """One signature that verified: who signed and with what."""

    domain: str
    selector: str
    algorithm: str


# --- verifying ----------------------------------------------------------------------------------


def _tags(record: bytes | str) -> dict[str, str]:
    text = record.decode("ascii", "replace") if isinstance(record, bytes) else record
    tags = {}
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if sep:
            tags[name.strip()] = re.sub(r"\s+", "", value)
    return tags


def verify(message: bytes, dns_txt: Mapping[str, bytes | str]) -> list[Verified]:
    """Verify every DKIM-Signature of ``message`` with dkimpy, the keys coming from ``dns_txt``.

    ``dns_txt`` maps ``selector._domainkey.domain`` to its TXT value, so no DNS is asked.
    Raises ``DkimError`` (reason "verify") for the first signature that fails, or when there
    is none.
    """
    import dkim  # dkimpy: imported here, as only checks need it

    records = {name.lower().rstrip("."): value for name, value in dns_txt.items()}

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        value = records.get(name.decode("ascii", "replace").lower().rstrip("."))
        return value.encode("ascii") if isinstance(value, str) else value

    try:
        checker = dkim.DKIM(message, logger=_quiet_dkimpy_logger(), minkey=MIN_RSA_BITS)
    except dkim.DKIMException as exc:
        raise DkimError(f"the message cannot be parsed: {exc}", "verify") from None
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    if not count:
        raise DkimError("the message has no DKIM-Signature", "verify")
    verified = []
    for idx in range(count):
        checker.signature_fields = {}
        try:
            ok, why = bool(checker.verify(idx=idx, dnsfunc=lookup)), "the signature does not match"
        except dkim.DKIMException as exc:
            ok, why = False, str(exc)
        sig = checker.signature_fields
        who = f"{sig.get(b's', b'?').decode()}._domainkey.{sig.get(b'd', b'?').decode()}"
        if not ok:
            if who.lower() not in records:
                why = f"no key for {who} given"
            raise DkimError(f"DKIM signature {idx + 1} of {count} ({who}) does not verify: {why}", "verify")
        verified.append(Verified(sig[b"d"].decode(), sig[b"s"].decode(), sig[b"a"].decode()))
    return verified


def _quiet_dkimpy_logger() -> logging.Logger:
    """dkimpy logs a failed verification as an error; ours are reported as DkimError instead.

    The logger keeps its name from before verification had a module of its own, under
    ``newsletter.dkim``, so a logging setup for DKIM still covers it.
    """
    logger = logging.getLogger("newsletter.dkim.dkimpy")
    logger.setLevel(logging.CRITICAL)
    return logger


# --- checking a setup ---------------------------------------------------------------------------

Resolver = Callable[[str], bytes | None]
"""Looks up a TXT record: its value (strings joined), None when there is none, and raises
OSError (TimeoutError included) when DNS cannot be reached."""


def resolve_txt(name: str, timeout: float = DNS_TIMEOUT) -> bytes | None:
    """The DKIM TXT record at ``name`` through dnspython, giving up after ``timeout`` seconds.

    No search domains: ``sel._domainkey.example.com`` must not become a lookup under the
    machine's own domain.
    """
    try:
        import dns.exception
        import dns.resolver
    except ImportError:
        raise OSError("dnspython is not installed") from None
    try:
        answer = dns.resolver.resolve(
            name.rstrip(".") + ".", "TXT", lifetime=timeout, search=False, raise_on_no_answer=False
        )
    except dns.resolver.NXDOMAIN:
        return None
    except dns.exception.Timeout:
        raise TimeoutError(f"no answer within {timeout:g} s") from None
    except dns.exception.DNSException as exc:
        raise OSError(str(exc) or type(exc).__name__) from None
    values = [b"".join(item.strings) for item in answer.rrset or ()]
    dkim_values = [v for v in values if v.lstrip().startswith(b"v=DKIM1")] or values
    return dkim_values[0] if dkim_values else None


@dataclass(frozen=True)
class DkimCheck:
    """What ``check`` verified, a line each, and the first problem it found (None when all is well)."""

    lines: tuple[str, ...]
    problem: DkimError | None = None
    dns_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None


def sample_parts(from_address: str, now: datetime) -> list[bytes]:
    """A small message of the shape ``MessageTemplate`` makes: personal lines (an encoded To,
    a folded List-Unsubscribe), the shared head, then a quoted-printable multipart body."""
    domain = from_address.rsplit("@", 1)[1]
    to = Header("Zoë Ångström-Nuñez", "utf-8", header_name="To").encode(linesep="\r\n")
    stamp = now.astimezone(UTC)
    personal = (
        f"Date: {stamp:%a, %d %b %Y %H:%M:%S} +0000\r\n"
        f"Message-ID: <dkim-check.{int(stamp.timestamp())}@{domain}>\r\n"
        f"To: {to}\r\n <zoe@example.org>\r\n"
        f"List-Unsubscribe: <https://{domain}/unsubscribe/dkim-check-token>,\r\n"
        f" <mailto:{from_address}?subject=unsubscribe%20dkim-check>\r\n"
    ).encode("ascii")
    head = (
        f"List-Id: DKIM check <check.{domain}>\r\n"
        f"Subject: DKIM check: {stamp:%A %d %B %Y}\r\n"
        f"From: DKIM check <{from_address}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "Precedence: bulk\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative;\r\n boundary="==check=="\r\n'
    ).encode("ascii")
    body = (
        b'\r\n--==check==\r\nContent-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Good morning, Zo=C3=AB=\r\n=2E This message tests the DKIM signature.\r\n"
        b'\r\n--==check==\r\nContent-Type: text/html; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<p>Good morning, Zo=C3=AB.</p>\r\n\r\n--==check==--\r\n"
    )
    return [personal, head, body]


def check(
    cfg: DkimConfig,
    now: datetime | None = None,
    resolver: Resolver | None = None,
    *,
    dns: bool = True,
    from_address: str = "",
) -> DkimCheck:
    """Sign a test message with the configured key(s), verify it with dkimpy against each key's
    own public half, then (unless ``dns`` is false) against the records published in DNS.

    Key problems raise ``DkimError`` at once (nothing can be checked without the key); a
    signature or DNS problem is returned as ``problem`` after the lines that did pass.
    DNS that cannot be reached is not a problem: the check says it was skipped. ``resolver``
    defaults to ``resolve_txt`` (dnspython, ``DNS_TIMEOUT`` seconds); tests pass their own.
    """
    if not cfg.enabled:
        raise ConfigError("[dkim]", "dkim.domain", "missing; DKIM signing is off until [dkim] domain is set")
    now = now or datetime.now(UTC)
    signer = load_signer(cfg)
    assert signer is not None
    sources = [
        cfg.key_file if not cfg.key else "dkim.key",
        cfg.ed25519_key_file if not cfg.ed25519_key else "dkim.ed25519_key",
    ]
    lines = [f"key: {key.describe()}, from {source}" for key, source in zip(signer.keys, sources, strict=False)]
    parts = sample_parts(from_address or f"newsletter@{cfg.domain}", now)
    message = signer.sign(parts, now) + b"".join(parts)
    own = signer.records()
    try:
        verified = verify(message, own)
    except DkimError as exc:
        return DkimCheck(tuple(lines), exc)
    for item in verified:
        lines.append(f"signed a test message: {item.algorithm} d={item.domain} s={item.selector} verifies (dkimpy)")
    if not dns:
        return DkimCheck((*lines, "DNS check skipped: not asked for"))
    lookup = resolver or resolve_txt
    published: dict[str, bytes] = {}
    for name, expected in own.items():
        try:
            value = lookup(name)
        except OSError as exc:
            return DkimCheck((*lines, f"DNS check skipped: {name} could not be looked up ({exc})"))
        if value is None:
            problem = DkimError(f"{name} has no TXT record; publish: {expected}", "dns")
            return DkimCheck(tuple(lines), problem, dns_checked=True)
        tags, wanted = _tags(value), _tags(expected)
        if not tags.get("p"):
            problem = DkimError(f"{name} publishes an empty p=, which revokes the key; publish: {expected}", "dns")
            return DkimCheck(tuple(lines), problem, dns_checked=True)
        if tags.get("p") != wanted["p"] or tags.get("k", "rsa") != wanted["k"]:
            problem = DkimError(f"{name} publishes a different key than the configured one; publish: {expected}", "dns")
            return DkimCheck(tuple(lines), problem, dns_checked=True)
        published[name] = value
        note = " (t=y: receivers treat it as a test)" if "y" in tags.get("t", "").split(":") else ""
        lines.append(f"DNS: {name} publishes this key{note}")
    try:
        verify(message, published)
    except DkimError as exc:
        problem = DkimError(f"the published record does not verify the test message: {exc}", "dns")
        return DkimCheck(tuple(lines), problem, dns_checked=True)
    lines.append("the test message verifies against the published records (dkimpy)")
    return DkimCheck(tuple(lines), dns_checked=True)
