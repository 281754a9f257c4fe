"""Reading a message written by a stranger: its parts, its text and its headers, within bounds.

Everything here is defensive. The parts are walked iteratively and only the first
``MAX_PARTS`` of them, so a message nested a hundred thousand deep costs no more than a
flat one; at most ``MAX_TEXT`` characters of text are read; a header is read from its raw
value, because parsing a malformed one may raise; and a part whose content type cannot be
read is plain text, as RFC 2045 says. ``read_message`` gives the rest of the package a
``Reading``: the parts in document order, the report's own text, and whether the message
is too big to hand to a reader without limits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser

from newsletter.bounces.findings import MAX_DIAGNOSTIC

MAX_PARTS = 50  # MIME parts looked at, in document order
MAX_TEXT = 300_000  # characters of text read from the whole message
MAX_PART_TEXT = 100_000  # characters of text read from one part
MAX_RECIPIENTS = 100
_MAX_HEADERS = 500  # outer header fields; more than this and flufl.bounce is not asked

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SPACES = re.compile(r"\s+")
# Bounded repeats keep a search linear: a long run of letters with no "@" would otherwise
# be rescanned from every position (quadratic on a 100 KB line).
ADDR_SPEC = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.\[\]:_-]{0,253}[A-Za-z0-9\]]")


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; the raw value when they are malformed."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - any malformed encoded word leaves the raw text
        return value


def clean(value: str, limit: int = MAX_DIAGNOSTIC) -> str:
    """One line: encoded words decoded, control characters gone, whitespace collapsed, capped."""
    value = decode_words(value[: limit * 8])
    value = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in _CONTROL.sub(" ", value))
    return SPACES.sub(" ", value).strip()[:limit]


def raw_headers(part: Message, name: str) -> list[str]:
    """The unparsed values of one header: parsing a stranger's header must not raise."""
    name = name.lower()
    try:
        return [str(value) for key, value in part.raw_items() if key.lower() == name]
    except Exception:  # noqa: BLE001 - a part without readable headers has none
        return []


def header(part: Message, name: str) -> str:
    values = raw_headers(part, name)
    return clean(values[0], 998) if values else ""


def content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # noqa: BLE001 - unreadable Content-Type is plain text by RFC 2045
        return "text/plain"


def param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:  # noqa: BLE001
        return ""
    if isinstance(value, tuple):
        value = value[2]
    return str(value or "").lower()


def _children(part: Message) -> list[Message]:
    if not part.is_multipart():
        return []
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []


@dataclass(frozen=True)
class Part:
    part: Message
    ctype: str
    nesting: int  # how many message/rfc822 (or returned-original) parts enclose it


def _walk(msg: Message) -> tuple[list[Part], bool]:
    """The first ``MAX_PARTS`` parts in document order, without recursion; and whether more were left."""
    found: list[Part] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        if len(found) >= MAX_PARTS:
            return found, True
        part, nesting = stack.pop()
        ctype = content_type(part)
        found.append(Part(part, ctype, nesting))
        if ctype == "message/delivery-status" or (ctype.startswith("message/") and ctype != "message/rfc822"):
            continue  # field blocks, read by field_blocks
        inner = nesting + 1 if ctype == "message/rfc822" else nesting
        children = _children(part)
        stack.extend((child, inner) for child in reversed(children[: MAX_PARTS * 2]))
    return found, False


def payload_text(part: Message, limit: int = MAX_PART_TEXT) -> str:
    """A leaf part's text, decoded with its charset when Python knows it, else UTF-8 or Latin-1."""
    try:
        raw = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - undecodable transfer encoding: use what is there
        raw = None
    if raw is None:
        payload = part.get_payload()
        return payload[:limit] if isinstance(payload, str) else ""
    raw = raw[: limit * 4]
    charset = param(part, "charset") or "utf-8"
    for candidate in (charset, "utf-8"):
        try:
            return raw.decode(candidate)[:limit]
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return raw.decode("latin-1")[:limit]


def field_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status or feedback-report part, names lower-cased."""
    blocks: list[dict[str, str]] = []
    children = _children(part)
    if children:
        for block in children[:MAX_RECIPIENTS]:
            fields: dict[str, str] = {}
            for name in header_names(block):
                fields.setdefault(name, header(block, name))
            if fields:
                blocks.append(fields)
        if blocks:
            return blocks
    text = payload_text(part)
    for chunk in re.split(r"\r?\n\s*\r?\n", text)[:MAX_RECIPIENTS]:
        fields = {}
        try:
            parsed = HeaderParser().parsestr(chunk.strip() + "\n")
        except Exception:  # noqa: BLE001 - a block we cannot parse names nobody
            continue
        for name in header_names(parsed):
            fields.setdefault(name, header(parsed, name))
        if fields:
            blocks.append(fields)
    return blocks


def header_names(part: Message) -> list[str]:
    try:
        return [key.lower() for key, _ in part.raw_items()]
    except Exception:  # noqa: BLE001
        return []


def parse_address(value: str) -> str:
    """The addr-spec in a recipient field such as "rfc822; <Ann@Example.org>", lower-cased."""
    value = clean(value, 998)
    if ";" in value:
        value = value.split(";", 1)[1]
    match = ADDR_SPEC.search(value)
    if match:
        return match.group(0).strip(".").lower()
    value = value.strip().strip("<>").strip()
    return value.lower() if value and " " not in value else ""


_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global")
_TEXT_MSGID = re.compile(r"^\s*Message-I[dD]\s*:\s*(<[^<>\s]{1,250}>)", re.MULTILINE | re.IGNORECASE)
_TEXT_REF = re.compile(r"^\s*X-Newsletter-Delivery\s*:\s*(\S{1,250})", re.MULTILINE | re.IGNORECASE)


def _original_headers(part: Part) -> Message | None:
    """The headers of a returned original, from message/rfc822 or text/rfc822-headers."""
    if part.ctype in ("message/rfc822", "message/global"):
        children = _children(part.part)
        if children:
            return children[0]
    text = payload_text(part.part, 64_000)
    try:
        return HeaderParser().parsestr(text.split("\n\n", 1)[0] + "\n")
    except Exception:  # noqa: BLE001
        return None


def originals_in(parts: list[Part]) -> list[Message]:
    found = []
    for part in parts:
        if part.ctype in _ORIGINAL_TYPES:
            headers = _original_headers(part)
            if headers is not None:
                found.append(headers)
    return found


def references(originals: list[Message], texts: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Message-IDs and X-Newsletter-Delivery values of the returned original(s), nearest first."""
    ids: list[str] = []
    refs: list[str] = []
    for original in originals:
        for value in raw_headers(original, "message-id"):
            match = re.search(r"<[^<>\s]{1,250}>", value)
            if match and match.group(0) not in ids:
                ids.append(match.group(0))
        for value in raw_headers(original, "x-newsletter-delivery"):
            ref = clean(value, 250)
            if ref and ref not in refs:
                refs.append(ref)
    if not originals:
        for text in texts:
            ids.extend(m for m in _TEXT_MSGID.findall(text) if m not in ids)
            refs.extend(m for m in _TEXT_REF.findall(text) if m not in refs)
    return tuple(ids), tuple(refs)


@dataclass
class Reading:
    """The parts of a message split into what the report says and what it returns."""

    message: Message
    parts: list[Part]
    truncated: bool
    oversized: bool  # too many parts, headers or characters for flufl.bounce, which reads everything
    texts: list[str]  # readable text of the report itself (not of a returned original), capped

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def read_message(msg: Message) -> Reading:
    parts, truncated = _walk(msg)
    texts: list[str] = []
    budget = MAX_TEXT
    for part in parts:
        if budget <= 0:
            break
        if part.nesting or part.ctype not in ("text/plain", "text/html", "text/enriched"):
            continue
        attached = param(part.part, "name") or "attachment" in header(part.part, "content-disposition").lower()
        if attached and part.part is not msg:
            continue
        text = payload_text(part.part, min(budget, MAX_PART_TEXT))
        if part.ctype == "text/html":
            text = re.sub(r"<[^>]{0,2000}>", " ", text)
        budget -= len(text)
        texts.append(text)
    size = 0
    for part in parts:
        payload = part.part.get_payload() if not part.part.is_multipart() else ""
        size += len(payload) if isinstance(payload, str | bytes) else 0
    oversized = truncated or size > MAX_TEXT or len(header_names(msg)) > _MAX_HEADERS
    return Reading(msg, parts, truncated, oversized, texts)


def originals_below(reading: Reading, nesting: int) -> list[Message]:
    """Originals returned by the report at this nesting, nearest first, then any deeper."""
    parts = [p for p in reading.parts if p.nesting >= nesting]
    return originals_in(parts)
