"""Reading a message written by a stranger: its parts, their text and their headers, within bounds.

Everything here is defensive. The parts are walked iteratively and only the first
``MAX_PARTS`` of them, so a message nested a hundred thousand deep costs no more than a
flat one; at most ``MAX_PART_TEXT`` characters of one part's text are read; a header is
read from its raw value, because parsing a malformed one may raise; and a part whose
content type cannot be read is plain text, as RFC 2045 says.

Everything here is also read once: a bounce passes through several readers that each
ask for the same Subject, From or text, so a ``Headers`` keeps each field it has looked
up and a ``Part`` the text it has decoded; the parts themselves are read through
``views.Views``, which parse each header field once.
"""

from __future__ import annotations

import re
import unicodedata
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from functools import cached_property
from typing import Any

from newsletter.bounces.findings import MAX_DIAGNOSTIC
from newsletter.bounces.views import Views

MAX_PARTS = 50  # MIME parts looked at, in document order
MAX_TEXT = 300_000  # characters of text read from the whole message
MAX_PART_TEXT = 100_000  # characters of text read from one part
MAX_RECIPIENTS = 100

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
    value = _CONTROL.sub(" ", decode_words(value[: limit * 8]))
    if not value.isascii():  # ASCII has no control characters left after _CONTROL
        value = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in value)
    return SPACES.sub(" ", value).strip()[:limit]


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


class Headers:
    """One part's header fields by lower-cased name, unparsed, each looked up and cleaned once.

    Parsing a stranger's header may raise, so the raw values are read; a part whose
    headers cannot be listed has none, and a value that cannot be read as text is absent.
    """

    def __init__(self, part: Message) -> None:
        try:
            items = list(part.raw_items())
            names = [key.lower() for key, _ in items]
        except Exception:  # noqa: BLE001 - a part without readable headers has none
            items, names = [], []
        self.names: list[str] = names  # every field, in order, repeats kept
        self._raw: dict[str, list[Any]] = {}
        for name, (_, value) in zip(names, items, strict=True):
            self._raw.setdefault(name, []).append(value)
        self._values: dict[str, tuple[str, ...]] = {}
        self._first: dict[str, str] = {}

    def raw(self, name: str) -> tuple[str, ...]:
        """The unparsed values of one field, in order."""
        name = name.lower()
        found = self._values.get(name)
        if found is None:
            try:
                found = tuple(str(value) for value in self._raw.get(name, ()))
            except Exception:  # noqa: BLE001 - unreadable as text: not there
                found = ()
            self._values[name] = found
        return found

    def first(self, name: str) -> str:
        """The first value of one field as one clean line, "" when there is none."""
        found = self._first.get(name)
        if found is None:
            values = self.raw(name)
            found = self._first[name] = clean(values[0], 998) if values else ""
        return found

    def fields(self) -> dict[str, str]:
        """Each field's first value, as a report's field block is read."""
        fields: dict[str, str] = {}
        for name in self.names:
            if name not in fields:
                fields[name] = self.first(name)
        return fields


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


def children(part: Message) -> list[Message]:
    if not part.is_multipart():
        return []
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []


def payload_text(part: Message, limit: int = MAX_PART_TEXT) -> str:
    """A leaf part's text, decoded with its charset when Python knows it, else UTF-8 or Latin-1."""
    try:
        raw = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - undecodable transfer encoding: use what is there
        raw = None
    if not isinstance(raw, bytes):  # None: decoding gives bytes, or None for a multipart part
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


class Part:
    """One MIME part (a view of it), its content type and depth, and what has been read of it."""

    def __init__(self, part: Message, ctype: str, nesting: int, views: Views) -> None:
        self.part = part
        self.ctype = ctype
        self.nesting = nesting  # how many message/rfc822 (or returned-original) parts enclose it
        self.views = views
        self._texts: dict[int, str] = {}

    @classmethod
    def top(cls, msg: Message) -> Part:
        """The message itself, the first part, with the views its parts will share."""
        views = Views(msg)
        view = views.view(msg)
        return cls(view, content_type(view), 0, views)

    def inner(self, part: Message, nesting: int) -> Part:
        """A part found inside this message, read through the same views."""
        view = self.views.view(part)
        return Part(view, content_type(view), nesting, self.views)

    @cached_property
    def headers(self) -> Headers:
        return Headers(self.part)

    def text(self, limit: int = MAX_PART_TEXT) -> str:
        """``payload_text`` of this part, decoded once for each limit asked."""
        found = self._texts.get(limit)
        if found is None:
            found = self._texts[limit] = payload_text(self.part, limit)
        return found


def walk(top: Part) -> tuple[list[Part], bool]:
    """The first ``MAX_PARTS`` parts in document order, without recursion; and whether more were left."""
    found: list[Part] = []
    stack: list[tuple[Message, int]] = []
    part = top
    while True:
        found.append(part)
        ctype = part.ctype
        # message/delivery-status and the like hold field blocks, read by field_blocks
        if not (ctype == "message/delivery-status" or (ctype.startswith("message/") and ctype != "message/rfc822")):
            inner = part.nesting + 1 if ctype == "message/rfc822" else part.nesting
            stack.extend((child, inner) for child in reversed(children(part.part)[: MAX_PARTS * 2]))
        if not stack:
            return found, False
        if len(found) >= MAX_PARTS:
            return found, True
        child, nesting = stack.pop()
        part = top.inner(child, nesting)


def field_blocks(part: Part) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status or feedback-report part, names lower-cased."""
    blocks: list[dict[str, str]] = []
    found = children(part.part)
    if found:
        for block in found[:MAX_RECIPIENTS]:
            fields = Headers(block).fields()
            if fields:
                blocks.append(fields)
        if blocks:
            return blocks
    text = part.text()
    for chunk in re.split(r"\r?\n\s*\r?\n", text)[:MAX_RECIPIENTS]:
        try:
            parsed = HeaderParser().parsestr(chunk.strip() + "\n")
        except Exception:  # noqa: BLE001 - a block we cannot parse names nobody
            continue
        fields = Headers(parsed).fields()
        if fields:
            blocks.append(fields)
    return blocks
