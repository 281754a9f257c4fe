"""A message as the readers see it: the report's own text apart from the original it returns.

A bounce or complaint usually carries a copy of what we sent, or its headers. Its
Message-ID and X-Newsletter-Delivery name the sending the report answers, but its words
are ours, not the report's, so they are kept out of the text the rules read. The text is
capped at ``MAX_TEXT`` characters, and a message past any bound is marked ``oversized``:
flufl.bounce reads all of a message without limits, so it is not given one of those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.parser import HeaderParser
from functools import cached_property

from newsletter.bounces.mime import MAX_PART_TEXT, MAX_TEXT, Headers, Part, children, clean, param, walk

_MAX_HEADERS = 500  # outer header fields; more than this and flufl.bounce is not asked
_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global")
_TEXT_MSGID = re.compile(r"^\s*Message-I[dD]\s*:\s*(<[^<>\s]{1,250}>)", re.MULTILINE | re.IGNORECASE)
_TEXT_REF = re.compile(r"^\s*X-Newsletter-Delivery\s*:\s*(\S{1,250})", re.MULTILINE | re.IGNORECASE)


@dataclass
class Reading:
    """The parts of a message split into what the report says and what it returns.

    What more than one reader asks of the message (its originals, flufl.bounce's answer)
    is kept here once it has been read.
    """

    top: Part  # the message itself
    parts: list[Part]
    truncated: bool
    oversized: bool  # too many parts, headers or characters for flufl.bounce, which reads everything
    texts: list[str]  # readable text of the report itself (not of a returned original), capped
    # (temporary, permanent) addresses from flufl.bounce, set by freeform.flufl_failures once asked
    failures: tuple[tuple[str, ...], tuple[str, ...]] | None = field(default=None, repr=False)
    _originals: dict[int, Headers | None] = field(default_factory=dict, repr=False)  # by index in parts

    @property
    def headers(self) -> Headers:
        """The outer message's header fields."""
        return self.top.headers

    @cached_property
    def text(self) -> str:
        return "\n".join(self.texts)

    def originals(self, nesting: int = 0) -> list[Headers]:
        """Headers of the originals returned at this nesting or deeper, in document order (nearest first)."""
        found = []
        for index, part in enumerate(self.parts):
            if part.nesting < nesting or part.ctype not in _ORIGINAL_TYPES:
                continue
            if index not in self._originals:
                self._originals[index] = _original_headers(part)
            headers = self._originals[index]
            if headers is not None:
                found.append(headers)
        return found


def read_message(top: Part) -> Reading:
    """Walk the message and read the report's own text, within the bounds."""
    parts, truncated = walk(top)
    texts: list[str] = []
    budget = MAX_TEXT
    for part in parts:
        if budget <= 0:
            break
        if part.nesting or part.ctype not in ("text/plain", "text/html", "text/enriched"):
            continue
        # An attachment is not the report's text, unless the message is nothing but it.
        if part.part is not top.part and (
            param(part.part, "name") or "attachment" in part.headers.first("content-disposition").lower()
        ):
            continue
        text = part.text(min(budget, MAX_PART_TEXT))
        if part.ctype == "text/html":
            text = re.sub(r"<[^>]{0,2000}>", " ", text)
        budget -= len(text)
        texts.append(text)
    size = 0
    for part in parts:
        payload = part.part.get_payload() if not part.part.is_multipart() else ""
        size += len(payload) if isinstance(payload, str | bytes) else 0
    oversized = truncated or size > MAX_TEXT or len(top.headers.names) > _MAX_HEADERS
    return Reading(top, parts, truncated, oversized, texts)


def _original_headers(part: Part) -> Headers | None:
    """The headers of a returned original, from message/rfc822 or text/rfc822-headers."""
    if part.ctype in ("message/rfc822", "message/global"):
        found = children(part.part)
        if found:
            return Headers(found[0])
    text = part.text(64_000)
    try:
        return Headers(HeaderParser().parsestr(text.split("\n\n", 1)[0] + "\n"))
    except Exception:  # noqa: BLE001
        return None


def references(originals: list[Headers], texts: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Message-IDs and X-Newsletter-Delivery values of the returned original(s), nearest first."""
    ids: list[str] = []
    refs: list[str] = []
    for original in originals:
        for value in original.raw("message-id"):
            match = re.search(r"<[^<>\s]{1,250}>", value)
            if match and match.group(0) not in ids:
                ids.append(match.group(0))
        for value in original.raw("x-newsletter-delivery"):
            ref = clean(value, 250)
            if ref and ref not in refs:
                refs.append(ref)
    if not originals:
        for text in texts:
            ids.extend(m for m in _TEXT_MSGID.findall(text) if m not in ids)
            refs.extend(m for m in _TEXT_REF.findall(text) if m not in refs)
    return tuple(ids), tuple(refs)
