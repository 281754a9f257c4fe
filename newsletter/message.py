"""Rendered edition + reader -> the exact bytes sent over SMTP.

Building and encoding a MIME message costs far more than sending it: quoted-printable
encoding of an 80 KB HTML part, then flattening it again, is most of the per-message CPU
of a naive sender. So the edition is built once as an ``EmailMessage`` with markers where
the personal parts go, encoded and flattened once, and cut at the markers. Each reader's
message is then a handful of small header lines plus a join of the cached segments with
that reader's values, each value quoted-printable encoded on lines of its own.

Why that is safe: a soft line break (``=`` CRLF) decodes to nothing, so ending the segment
before a marker with one, and the value with another, changes no decoded text and keeps
every encoded line within 76 characters, wherever the encoder had wrapped the marker.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from newsletter.addresses import PLAIN_ADDRESS
from newsletter.errors import HeaderInjectionError, MessageError
from newsletter.render import Markers, RenderedEdition

_QP_SAFE = frozenset(range(32, 127)) - {ord("=")}
_QP_TOKENS = [chr(b) if b in _QP_SAFE else f"={b:02X}" for b in range(256)]
_QP_LINE = 75  # characters before the soft break's "="
# RFC 2045 caps encoded lines at 76 characters; the stock SMTP policy would allow 78.
_POLICY = SMTP.clone(max_line_length=76)
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9 !#-'*+\-/=?^_`{|}~]*")  # atext and spaces: no quoting needed
_PRINTABLE_ASCII = re.compile(r"[ -~]*")
_CLICK_CODE = re.compile(r"[0-9A-Za-z-]{1,64}")
DELIVERY_HEADER = "X-Newsletter-Delivery"  # names the delivery in a returned message's headers
_SHORT_TO = 72  # "To: " + this stays within the 78 characters RFC 5322 asks of a line


def check_header(name: str, value: str) -> str:
    """Refuse a header value that could end the header early and forge others."""
    if _FORBIDDEN.search(value):
        raise HeaderInjectionError(name, value)
    return value


def check_address(name: str, address: str) -> str:
    """An address must be plain ASCII addr-spec: no display part, spaces or line breaks."""
    check_header(name, address)
    if not PLAIN_ADDRESS.fullmatch(address):
        raise MessageError(f"{name} {address!r} is not a plain email address")
    return address


def greeting_for(name: str) -> str:
    """The greeting for a reader: "Good morning, Ana" for "Ana García" (the templates add the stop).

    Trailing punctuation of the first word goes ("J. Smith", "Smith, Ana"), or the
    greeting would read "Good morning, J.." in every copy.
    """
    first = name.split()[0].rstrip(".,;:") if name.split() else ""
    return f"Good morning, {first}" if first else "Good morning"


@dataclass(frozen=True)
class EditionHeaders:
    """The headers every copy of one edition shares."""

    subject: str
    from_name: str
    from_address: str
    list_id: str
    list_name: str
    reply_to: str = ""
    envelope_from: str = ""

    def __post_init__(self) -> None:
        check_header("Subject", self.subject)
        check_header("From", self.from_name)
        check_address("From", self.from_address)
        check_header("List-Id", self.list_name)
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+", self.list_id):
            raise MessageError(f"List-Id {self.list_id!r} must be a dotted identifier")
        if self.reply_to:
            check_address("Reply-To", self.reply_to)
        if self.envelope_from:
            check_address("envelope sender", self.envelope_from)

    @property
    def domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1]

    @property
    def mail_from(self) -> str:
        return self.envelope_from or self.from_address


@dataclass(frozen=True)
class Reader:
    """One recipient's personal parts."""

    email: str
    name: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    message_id: str
    return_code: str = ""  # the signed VERP code, repeated in a header for relays that rewrite the envelope
    click_code: str = ""  # the signed code in each tracked link (letters, digits and "-")


_HTML_SAFE_URL = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$()*+,;=%-]*")  # nothing html.escape would change
_PLAIN_VALUE = re.compile(rb"[ !-<>-~]*")  # printable ASCII except "=": nothing to escape
_PLAIN_CHUNK = 73  # room for "=2E" in place of a leading "."


def qp_encode_value(value: str) -> bytes:
    """Quoted-printable for a short personal value, as whole lines each ending in a soft break."""
    raw = value.encode("utf-8")
    if _PLAIN_VALUE.fullmatch(raw):  # the common case (URLs, ASCII names): slice, no per-byte work
        chunks = [raw[i : i + _PLAIN_CHUNK] for i in range(0, len(raw), _PLAIN_CHUNK)] or [b""]
        # a line-leading dot would need SMTP dot-stuffing; "=2E" is the same character
        return b"".join((b"=2E" + c[1:] if c[:1] == b"." else c) + b"=\r\n" for c in chunks)
    out: list[bytes] = []
    line: list[str] = []
    width = 0
    for byte in raw:
        token = _QP_TOKENS[byte]
        if width == 0 and token == ".":
            token = "=2E"
        if width + len(token) > _QP_LINE:
            out.append("".join(line).encode("ascii") + b"=\r\n")
            line, width = [], 0
            if token == ".":
                token = "=2E"
        line.append(token)
        width += len(token)
    out.append("".join(line).encode("ascii") + b"=\r\n")
    return b"".join(out)


def _marker_pattern(marker: str) -> re.Pattern[bytes]:
    # The encoder may have wrapped a marker with a soft line break anywhere inside it.
    return re.compile(b"(?:=\r\n)?".join(re.escape(c.encode("ascii")) for c in marker))


def _no_leading_dots(segment: bytes) -> bytes:
    """Write a line-leading "." as "=2E", so the transport never has to dot-stuff a copy.

    Every segment but the first starts a line (the value before it ends with a soft break).
    """
    segment = segment.replace(b"\r\n.", b"\r\n=2E=\r\n")
    return b"=2E=\r\n" + segment[1:] if segment.startswith(b".") else segment


@dataclass(frozen=True)
class _Slot:
    marker: str  # which personal part
    is_html: bool  # escape for HTML or not


class MessageTemplate:
    """One edition's message, encoded once; ``render`` produces each reader's bytes."""

    def __init__(
        self, headers: EditionHeaders, head: bytes, segments: Sequence[bytes], slots: Sequence[_Slot], markers: Markers
    ) -> None:
        self.headers = headers
        self._head = head
        self._segments = tuple(segments)
        self._slots = tuple(slots)
        self._markers = markers
        self._date_cache: tuple[int, bytes] = (-1, b"")
        self._tracked = any(slot.marker == "click" for slot in self._slots)
        self._greetings: dict[str, tuple[bytes, bytes]] = {}

    @classmethod
    def compile(cls, rendered: RenderedEdition, headers: EditionHeaders) -> MessageTemplate:
        """Build and encode the edition's MIME message once, and cut it at the markers."""
        skeleton = EmailMessage(policy=_POLICY)
        skeleton["Subject"] = headers.subject
        skeleton["From"] = Address(headers.from_name, addr_spec=headers.from_address)
        if headers.reply_to:
            skeleton["Reply-To"] = headers.reply_to
        skeleton["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        skeleton["Precedence"] = "bulk"
        skeleton.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
        skeleton.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
        wire = skeleton.as_bytes(policy=_POLICY)
        list_id = f"{_encode_phrase(headers.list_name)} <{headers.list_id}>"
        wire = f"List-Id: {list_id}\r\n".encode("ascii") + wire

        head_end = wire.index(b"\r\n\r\n") + 2
        head, body = wire[:head_end], wire[head_end:]
        markers = rendered.markers
        names = {markers.greeting: "greeting", markers.unsubscribe_url: "unsubscribe_url"}
        if markers.click:
            names[markers.click] = "click"  # in every tracked link: one slot per link
        combined = re.compile(b"|".join(_marker_pattern(m).pattern for m in names))
        html_start = body.index(b"Content-Type: text/html")
        segments: list[bytes] = []
        slots: list[_Slot] = []
        position = 0
        for match in combined.finditer(body):
            found = re.sub(rb"=\r\n", b"", match.group()).decode("ascii")
            segments.append(_no_leading_dots(body[position : match.start()]) + b"=\r\n")
            slots.append(_Slot(marker=names[found], is_html=match.start() > html_start))
            position = match.end()
        segments.append(_no_leading_dots(body[position:]))
        if len(slots) < 4:
            raise MessageError("the rendered edition lost its personal markers while being encoded")
        return cls(headers, head, segments, slots, markers)

    @staticmethod
    def _to_header(name: str, email: str) -> str:
        """The To value: the name as typed when it needs nothing, else quoted or encoded.

        A name containing "=?" is encoded too: written as it is (even quoted), mail readers
        would decode it as an RFC 2047 encoded-word and show something else. Long or
        non-ASCII names become encoded-words of at most 75 characters on folded lines.
        """
        if not name:
            return email
        if "=?" not in name and len(name) + len(email) < _SHORT_TO:
            if _PLAIN_NAME.fullmatch(name):
                return f"{name} <{email}>"
            if _PRINTABLE_ASCII.fullmatch(name):
                return formataddr((name, email))  # a quoted-string
        encoded = Header(name, "utf-8", header_name="To").encode(linesep="\r\n")
        return f"{encoded}\r\n <{email}>"

    def _greeting(self, name: str) -> tuple[bytes, bytes]:
        """The encoded greeting for a name, cached by greeting: first names repeat (Ana, Tom, none)."""
        greeting = greeting_for(name)
        cached = self._greetings.get(greeting)
        if cached is None:
            if len(self._greetings) > 10_000:
                self._greetings.clear()
            cached = self._greetings[greeting] = (qp_encode_value(greeting), qp_encode_value(html.escape(greeting)))
        return cached

    def _date_header(self, now: datetime) -> bytes:
        second = int(now.timestamp())
        if self._date_cache[0] != second:
            self._date_cache = (second, f"Date: {format_datetime(now)}\r\n".encode("ascii"))
        return self._date_cache[1]

    def render(self, reader: Reader, now: datetime) -> bytes:
        """The complete message for one reader, CRLF line endings, ready for SMTP DATA."""
        return b"".join(self.render_parts(reader, now))

    def render_parts(self, reader: Reader, now: datetime) -> list[bytes]:
        """The message for one reader as consecutive parts: most are the edition's shared,
        already-encoded segments, so a sender that can write them in one gather call never
        copies the message at all."""
        check_address("To", reader.email)
        personal_values = (
            reader.name + reader.message_id + reader.unsubscribe_url + reader.unsubscribe_mailto + reader.return_code
        )
        if self._tracked and not _CLICK_CODE.fullmatch(reader.click_code):
            raise MessageError(f"click code {reader.click_code[:40]!r} is not letters, digits and dashes")
        if _FORBIDDEN.search(personal_values):
            for header, value in (
                ("To", reader.name),
                ("Message-ID", reader.message_id),
                ("List-Unsubscribe", reader.unsubscribe_url + reader.unsubscribe_mailto),
                (DELIVERY_HEADER, reader.return_code),
            ):
                check_header(header, value)
        to = self._to_header(reader.name, reader.email)
        # Built by hand so the email package's folding cannot turn the URLs into
        # RFC 2047 encoded-words, which no client would follow.
        delivery = f"{DELIVERY_HEADER}: {reader.return_code}\r\n" if reader.return_code else ""
        personal = self._date_header(now) + (
            f"Message-ID: {reader.message_id}\r\n"
            f"To: {to}\r\n"
            f"List-Unsubscribe: <{reader.unsubscribe_url}>,\r\n <{reader.unsubscribe_mailto}>\r\n{delivery}"
        ).encode("ascii")
        greeting_text, greeting_html = self._greeting(reader.name)
        url = reader.unsubscribe_url
        url_text = qp_encode_value(url)
        click = qp_encode_value(reader.click_code) if self._tracked else b""
        values = {
            ("greeting", False): greeting_text,
            ("greeting", True): greeting_html,
            ("unsubscribe_url", False): url_text,
            ("unsubscribe_url", True): url_text if _HTML_SAFE_URL.fullmatch(url) else qp_encode_value(html.escape(url)),
            ("click", False): click,
            ("click", True): click,
        }
        parts = [personal, self._head]
        for segment, slot in zip(self._segments, self._slots, strict=False):
            parts.append(segment)
            parts.append(values[slot.marker, slot.is_html])
        parts.append(self._segments[-1])
        return parts


def _encode_phrase(text: str) -> str:
    """A display name for a structured header: quoted ASCII, or an RFC 2047 encoded-word."""
    return formataddr((text, "x@x"), charset="utf-8").rsplit(" <", 1)[0]
