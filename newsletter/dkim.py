"""DKIM signing of every copy, at the speed the sender sends: byte-level, one pass, no parsing library.

A signature is computed per recipient, thousands a second, so everything that is the same
for the whole edition is done once, when the signer is loaded: the key is parsed, and the
fixed part of the ``DKIM-Signature`` field (algorithm, domain, selector, signed header list)
is written and canonicalized. Per message what remains is the body hash (SHA-256 over the
already-encoded parts, without joining them), the relaxed form of a dozen header fields,
and one private-key operation by OpenSSL through ``cryptography``, which releases the GIL.
dkimpy is the reference verifier (``dkimcheck``, used by tests and ``newsletter dkim
check``), never the signer: its RSA is pure Python, milliseconds a message.

Canonicalization is ``relaxed/simple`` (RFC 6376 3.4):

* simple body: the cheapest (hash the bytes as they are, minus trailing empty lines), and
  safe for our bodies, which relays never rewrite: 7-bit quoted-printable, CRLF, lines of at
  most 76 characters and no line-leading dots, so there is nothing to re-encode, re-wrap or
  dot-stuff on the way;
* relaxed headers: relays do refold and re-space header fields (our To and
  List-Unsubscribe are folded), and relaxed makes that harmless.

No ``x=`` (expiry): a message deferred by a receiver is retried for up to a day and must
still verify when it lands, and a stolen signature is better retired by rotating the key
than by a clock. No ``l=`` either: a body-length limit lets anyone append to a signed body.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from newsletter.clock import Clock, SystemClock
from newsletter.config import DKIM_ALGORITHMS, DkimConfig
from newsletter.errors import DkimError, MessageError

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 100_000  # a PEM key is 2-4 KB; anything bigger is the wrong file
MIN_RSA_BITS = 1024  # RFC 8301: verifiers must reject smaller keys
GOOD_RSA_BITS = 2048  # RFC 8301: signers should use at least this
MAX_RSA_BITS = 4096  # RFC 8301: verifiers need not accept larger keys

# Signed when present, listed in h= in the order the message has them. List-Unsubscribe and
# List-Unsubscribe-Post must be covered by a valid signature for one-click unsubscribe to
# count (RFC 8058 4).
SIGNED_HEADERS = (
    *("from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe", "list-unsubscribe-post"),
    *("reply-to", "mime-version", "content-type", "content-transfer-encoding"),
)
# Over-signed: listed once more than the message has them (RFC 6376 8.15). The extra entry
# signs "no further instance", so a second From or Subject, or an unsubscribe header added
# on the way (a forged one-click link, say), breaks the signature instead of being shown.
OVERSIGNED_HEADERS = ("from", "subject", "list-unsubscribe", "list-unsubscribe-post")

_SIGNED = frozenset(name.encode("ascii") for name in SIGNED_HEADERS)
_OVERSIGNED = tuple(name.encode("ascii") for name in OVERSIGNED_HEADERS)
_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = 76  # characters per line of the folded signature field


def record_name(selector: str, domain: str) -> str:
    """Where the public key is published: ``selector._domainkey.domain``."""
    return f"{selector}._domainkey.{domain}"


def _relaxed_value(value: bytes) -> bytes:
    """RFC 6376 3.4.2 for a header value: unfold, runs of WSP to one space, no WSP at either end."""
    value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return value.strip(b" \t")


# --- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """One private key and where its public half is published."""

    selector: str
    algorithm: str  # "rsa-sha256" or "ed25519-sha256"
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)

    @property
    def bits(self) -> int:
        return self.private_key.key_size if isinstance(self.private_key, rsa.RSAPrivateKey) else 256

    @property
    def dns_record(self) -> str:
        """The TXT value to publish: ``v=DKIM1; k=rsa; p=...`` (p= is the raw key for ed25519, RFC 8463)."""
        return public_record(self.private_key)

    def describe(self) -> str:
        kind = f"{self.bits}-bit RSA" if self.algorithm == "rsa-sha256" else "Ed25519"
        return f"{self.algorithm} ({kind}), selector {self.selector}"


def public_record(private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The DNS TXT value publishing the public half of ``private_key``."""
    public = private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def zone_file_value(record: str, width: int = 250, separator: str = " ") -> str:
    """The record as a zone file writes it: quoted strings of at most 255 bytes each.

    A TXT string holds 255 bytes, and an RSA-2048 record is about 400, so most DNS
    consoles and zone files need it split; resolvers join the strings again.
    """
    head, sep, key = record.partition("p=")
    chunks = [head] if head else []
    rest = sep + key
    chunks += [rest[i : i + width] for i in range(0, len(rest), width)]
    return separator.join(f'"{chunk}"' for chunk in chunks)


def generate_key(algorithm: str = "rsa-sha256") -> tuple[bytes, str]:
    """A new private key (PEM, PKCS#8, unencrypted) and the DNS TXT value of its public key.

    RSA keys are 2048 bits: what RFC 8301 asks for, and what every receiver verifies.
    """
    if algorithm == "rsa-sha256":
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(65537, GOOD_RSA_BITS)
    elif algorithm == "ed25519-sha256":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimError(f"unknown DKIM algorithm {algorithm!r}; expected one of {', '.join(DKIM_ALGORITHMS)}", "key")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, public_record(key)


def _read_key_file(path: str, what: str) -> bytes:
    """The file's bytes, refusing what is not a small regular file (a FIFO would block, /dev/zero never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise DkimError(f"{what} {path}: no such file", "key") from None
    except OSError as exc:
        raise DkimError(f"{what} {path}: cannot be read ({exc.strerror or exc})", "key") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DkimError(f"{what} {path}: not a regular file; expected a PEM private key file", "key")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_KEY_BYTES:
            chunk = os.read(fd, MAX_KEY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise DkimError(f"{what} {path}: cannot be read ({exc.strerror or exc})", "key") from None
    finally:
        os.close(fd)
    if size > MAX_KEY_BYTES:
        raise DkimError(f"{what} {path}: larger than {MAX_KEY_BYTES // 1000} KB; expected a PEM private key", "key")
    return b"".join(chunks)


def _parse_key(data: bytes, algorithm: str, what: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """A private key from PEM (or, for ed25519, the bare base64 seed dkimpy's ``dknewkey`` writes).

    The messages never quote the data: it is a secret even when it is garbage.
    """
    text = data.strip()
    if b"\\n" in text and b"\n" not in text:  # PEM squeezed onto one line in an environment variable
        text = text.replace(b"\\n", b"\n")
    key: object
    if algorithm == "ed25519-sha256" and re.fullmatch(rb"[A-Za-z0-9+/]{43}=", text):
        key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(text))
    else:
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except TypeError:
            raise DkimError(
                f"{what}: the key is encrypted with a passphrase, which the sender cannot type; "
                "store it decrypted with mode 0600 (openssl pkey -in KEY -out PLAIN.pem)",
                "key",
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            kind = "a public key" if b"PUBLIC KEY-----" in text else "not a PEM private key"
            raise DkimError(
                f"{what}: {kind}; expected the private key in PEM (-----BEGIN PRIVATE KEY-----), "
                "as `newsletter dkim keygen` writes it",
                "key",
            ) from None
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimError(f"{what}: {_key_kind(key)} key, but the algorithm is rsa-sha256 (an RSA key)", "key")
        if key.key_size < MIN_RSA_BITS:
            raise DkimError(
                f"{what}: a {key.key_size}-bit RSA key; receivers reject keys under {MIN_RSA_BITS} bits "
                "(RFC 8301): make a 2048-bit one with `newsletter dkim keygen`",
                "key",
            )
        if key.key_size < GOOD_RSA_BITS:
            log.warning("%s: a %d-bit RSA key; RFC 8301 asks for %d bits", what, key.key_size, GOOD_RSA_BITS)
        elif key.key_size > MAX_RSA_BITS:
            log.warning("%s: a %d-bit RSA key; some receivers verify only up to %d", what, key.key_size, MAX_RSA_BITS)
        return key
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimError(f"{what}: {_key_kind(key)} key, but the algorithm is ed25519-sha256 (an Ed25519 key)", "key")
    return key


def _key_kind(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"a {key.key_size}-bit RSA"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "an EC (ECDSA)"
    return "another kind of"


def load_key(text: str, path: str, algorithm: str, setting: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """The key from its text when there is one (it comes from the environment), else from the file.

    :param setting: the name of the text setting ("dkim.key"); errors name it or its ``_file``.
    """
    if text:
        env = "NEWSLETTER_DKIM_ED25519_KEY" if "ed25519" in setting else "NEWSLETTER_DKIM_KEY"
        return _parse_key(text.encode("utf-8", "replace"), algorithm, f"{setting} (or ${env})")
    return _parse_key(_read_key_file(path, f"{setting}_file"), algorithm, f"{setting}_file {path}")


def load_signer(cfg: DkimConfig, clock: Clock | None = None) -> Signer | None:
    """The edition-wide signer of the ``[dkim]`` configuration, or None when signing is off.

    Every key problem is a one-line ``DkimError`` (reason "key") naming the setting.
    """
    if not cfg.enabled:
        return None
    keys = [SigningKey(cfg.selector, cfg.algorithm, load_key(cfg.key, cfg.key_file, cfg.algorithm, "dkim.key"))]
    if cfg.ed25519_selector:
        ed_key = load_key(cfg.ed25519_key, cfg.ed25519_key_file, "ed25519-sha256", "dkim.ed25519_key")
        keys.append(SigningKey(cfg.ed25519_selector, "ed25519-sha256", ed_key))
    return Signer(cfg.domain, keys, clock)


# --- signing ------------------------------------------------------------------------------------


class _Prefix(NamedTuple):
    """The fixed start of one key's DKIM-Signature field for one signed-header list."""

    emitted: bytes  # as written, folded, "DKIM-Signature: v=1; ... h=...;"
    canonical: bytes  # its relaxed form, "dkim-signature:v=1; ... h=...;"


def _fold_list(first: str, items: Sequence[str], sep: str, width: int = _FOLD) -> str:
    """``first`` + items joined by ``sep``, folded after a separator where a line would pass ``width``."""
    lines = [first]
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else "")
        if len(lines[-1]) + len(piece) > width:
            lines.append(" ")
        lines[-1] += piece
    return "\r\n".join(lines)


class Signer:
    """Signs each copy of an edition with one or two keys (RSA, then ed25519, for dual signing).

    One signer serves every sending thread: its only state is two caches whose entries are
    read and replaced whole, and OpenSSL signs without the GIL.
    """

    def __init__(self, domain: str, keys: Sequence[SigningKey], clock: Clock | None = None) -> None:
        if not keys:
            raise DkimError("a signer needs at least one key", "key")
        self.domain = domain
        self.keys = tuple(keys)
        self._clock = clock or SystemClock()
        self._prefixes: dict[tuple[bytes, ...], tuple[_Prefix, ...]] = {}
        self._seen: dict[int, tuple[bytes, tuple[tuple[bytes, bytes], ...]]] = {}
        self._pkcs1 = padding.PKCS1v15()
        self._sha256 = hashes.SHA256()

    def records(self) -> dict[str, str]:
        """DNS name -> the TXT value each key needs published."""
        return {record_name(k.selector, self.domain): k.dns_record for k in self.keys}

    def _prefix(self, h_list: tuple[bytes, ...]) -> tuple[_Prefix, ...]:
        """What each key's signature starts with, written once per signed-header list (one per edition)."""
        found = self._prefixes.get(h_list)
        if found is None:
            names = [n.decode("ascii") for n in h_list]
            found = self._prefixes[h_list] = tuple(self._make_prefix(key, names) for key in self.keys)
        return found

    def _make_prefix(self, key: SigningKey, names: Sequence[str]) -> _Prefix:
        tags = ["v=1", f"a={key.algorithm}", "c=relaxed/simple", f"d={self.domain}", f"s={key.selector};"]
        text = _fold_list("DKIM-Signature: ", tags, "; ") + "\r\n" + _fold_list(" h=", names, ":") + ";"
        emitted = text.encode("ascii")
        name, _, value = emitted.partition(b":")
        return _Prefix(emitted, name.lower() + b":" + _relaxed_value(value))

    def sign(self, parts: Sequence[bytes], now: datetime | None = None, *, whole: bytes | None = None) -> bytes:
        """The ``DKIM-Signature`` field(s) for the message ``b"".join(parts)``, folded, each ending in CRLF.

        Put them in front of the message. ``parts`` are CRLF-canonical bytes, as
        ``MessageTemplate.render_parts`` gives them; the header ends at the first empty line.
        ``now`` sets ``t=``; without it the signer's clock does. ``whole``, when the caller
        has joined the parts anyway, is hashed in one call instead of a hundred small ones:
        each call into hashlib over 2 KB gives up and retakes the GIL, which the send loop
        is waiting for.
        """
        head, body = _split(parts)
        if whole is not None and body:
            body = [memoryview(whole)[len(whole) - sum(len(piece) for piece in body) :]]
        body_hash = base64.b64encode(_body_hash(body))
        h_list, signed = _signed_headers(self._fields(head))
        when = int((now or self._clock.now()).timestamp())
        tail_emitted = b"\r\n t=%d; bh=%s;\r\n b=" % (when, body_hash)
        tail_canonical = b" t=%d; bh=%s; b=" % (when, body_hash)
        fields = []
        for key, prefix in zip(self.keys, self._prefix(h_list), strict=True):
            data = signed + prefix.canonical + tail_canonical
            private = key.private_key
            if isinstance(private, rsa.RSAPrivateKey):
                signature = private.sign(data, self._pkcs1, self._sha256)
            else:  # RFC 8463: Ed25519 signs the SHA-256 hash of the data
                signature = private.sign(hashlib.sha256(data).digest())
            b64 = base64.b64encode(signature)
            first = _FOLD - 3  # room for " b=" on the first line
            folded = b"\r\n ".join([b64[:first]] + [b64[i : i + _FOLD] for i in range(first, len(b64), _FOLD)])
            fields.append(prefix.emitted + tail_emitted + folded + b"\r\n")
        return b"".join(fields)

    def _fields(self, head: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """The signed fields of the header pieces, each piece canonicalized once while it repeats.

        The edition's shared head is the same bytes object in every message, so only the
        personal lines (Date, Message-ID, To, List-Unsubscribe) are worked on per message.
        Pieces that do not hold whole fields are joined and done together.
        """
        fields: list[tuple[bytes, bytes]] = []
        for i, piece in enumerate(head):
            seen = self._seen.get(i)
            if seen is not None and (seen[0] is piece or seen[0] == piece):
                fields += seen[1]
                continue
            found = _canonical_fields(piece)
            if found is None:
                joined = _canonical_fields(b"".join(head))
                if joined is None:
                    raise MessageError("cannot sign: a header line is malformed (a bare CR or LF, or no field name)")
                return list(joined)
            self._seen[i] = (piece, found)
            fields += found
        return fields


def _split(parts: Sequence[bytes]) -> tuple[list[bytes], list[bytes | memoryview]]:
    """The header's pieces (ending in the last field's CRLF) and the body's, both unjoined.

    The empty line may straddle two parts (the shared head ends with CRLF and the next
    part starts with one); the body's pieces are views, so a 60 KB part is never copied.
    """
    tail = b""
    for i, part in enumerate(parts):
        at = (tail + part[:3]).find(b"\r\n\r\n")
        if at >= 0:
            cut: int | None = at - len(tail)  # where the CRLFCRLF starts in ``part``: before it
        else:
            at = part.find(b"\r\n\r\n")
            cut = at if at >= 0 else None
        if cut is not None:
            body: list[bytes | memoryview] = [memoryview(part)[cut + 4 :], *parts[i + 1 :]]
            if cut == -2:  # the usual case: part i starts with the empty line
                return list(parts[:i]), body
            if cut < 0:
                return [b"".join(parts[:i])[:cut] + b"\r\n"], body
            return [*parts[:i], part[:cut] + b"\r\n"], body
        tail = part[-3:] if len(part) >= 3 else (tail + part)[-3:]
    head = b"".join(parts)
    return [head if head.endswith(b"\r\n") else head + b"\r\n"], []


def _body_hash(pieces: Sequence[bytes | memoryview]) -> bytes:
    """SHA-256 of the body in simple canonicalization: trailing empty lines dropped, one CRLF at the end."""
    pieces = [p for p in pieces if len(p)]
    last = bytes(pieces[-1][-4:]) if pieces else b""
    if len(last) == 4 and last.endswith(b"\r\n") and not last.startswith(b"\r\n"):
        # Ends in exactly one CRLF (the usual case: the closing MIME boundary): hash as is.
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        return digest.digest()
    stripped = b"".join(pieces)
    while stripped.endswith(b"\r\n"):
        stripped = stripped[:-2]
    return hashlib.sha256(stripped + b"\r\n").digest()


def _canonical_fields(block: bytes) -> tuple[tuple[bytes, bytes], ...] | None:
    """(name, relaxed field with CRLF) for each signed field of ``block``; None unless it is whole fields.

    Relaxed (RFC 6376 3.4.2) done on the whole block with bytes methods, a regular
    expression being ten times slower here: unfold, runs of WSP to one space, then per
    field a lowercase name and no WSP around the colon or at the end. A bare CR or LF is
    refused: message.py never writes one, and relaxed has no sure reading of it.
    """
    flat = block.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    ends = flat.count(b"\r\n")
    if block[:1] in b" \t" or not flat.endswith(b"\r\n") or flat.count(b"\r") != ends or flat.count(b"\n") != ends:
        return None  # empty, a continuation of an earlier piece, cut mid-field, or a bare CR or LF
    if b"\t" in flat or b"  " in flat:
        flat = _WSP_RUN.sub(b" ", flat)
    found = []
    for line in flat.split(b"\r\n")[:-1]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        name = name.rstrip(b" ").lower()
        if name in _SIGNED:
            found.append((name, name + b":" + value.strip(b" ") + b"\r\n"))
    return tuple(found)


def _signed_headers(fields: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[bytes, ...], bytes]:
    """The h= list and the signed data of the header, then one more entry per over-signed name.

    Fields are listed in the order they come. A name that occurs n times is listed n times
    and its instances signed from the bottom up, the order verifiers take them (RFC 6376 5.4.2).
    """
    names = [name for name, _ in fields]
    if len(set(names)) == len(names):
        return (*names, *_OVERSIGNED), b"".join(line for _, line in fields)
    groups: dict[bytes, list[bytes]] = {}
    for name, line in fields:
        groups.setdefault(name, []).append(line)
    h_list = [name for name, lines in groups.items() for _ in lines]
    signed = b"".join(line for lines in groups.values() for line in reversed(lines))
    return (*h_list, *_OVERSIGNED), signed
