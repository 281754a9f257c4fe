"""RSS and Atom feeds into candidates: feedparser, plus one pass of our own for what it loses.

feedparser reads almost every feed the web has; what it mangles (bylines whose address has
a long top-level domain, Media RSS captions taken for the article's text) is read again here
from the XML, within strict limits, before feedparser sees it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin
from xml.parsers import expat
from zoneinfo import ZoneInfo

import feedparser

from newsletter.cleaning import (
    DATE_RANGE,
    absolute_url,
    date_in_range,
    html_to_text,
    parse_date,
    squash,
    text_to_html,
)
from newsletter.errors import ArticleImportError
from newsletter.items import Candidate, finish_item

_ISSUE_KEYS = ("prism_issueidentifier", "prism_number")
_ISSUE_SUFFIXES = ("_issue", "_issuenumber", "_issue_number")


# --- what feedparser loses -----------------------------------------------------------------
#
# feedparser keeps a Media RSS element's attributes but not its own title, description and
# credit: it reads media:title and media:description as the item's title and description,
# so a picture's caption becomes the article's body or standfirst. And it splits an RSS
# <author> into name and address with a pattern that knows top-level domains of at most four
# letters ("desk@paper.example (Priya Shah)" gives the name "ple (Priya Shah"). So one quick
# pass of our own over the XML first collects, per item, each picture's words and the bylines
# as written, and cuts media:title and media:description out of what feedparser is given.

_MEDIA_NS = frozenset({"http://search.yahoo.com/mrss/", "http://search.yahoo.com/mrss"})
_ATOM_NS = frozenset({"http://www.w3.org/2005/Atom", "http://purl.org/atom/ns#"})
_ITEM_NS = frozenset({"", "http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/"}) | _ATOM_NS
_DC_CREATOR = "http://purl.org/dc/elements/1.1/ creator"
_WORDS_MAX = 10_000  # of one picture text or byline: a caption, not a chapter
_XML_TAG = re.compile(rb"""<(?:[^>"']|"[^"]*"|'[^']*')*>""")
_CHARREF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));?")


@dataclass
class _Media:
    """One Media RSS picture (or video) and the words of its own, else of its group or item."""

    url: str
    title: str = ""
    description: str = ""
    credit: str = ""


@dataclass
class _ItemExtras:
    """What feedparser loses of one item: its pictures' words and its bylines as written."""

    media: list[_Media] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    title: str = ""  # an item- or group-level media:title, for an item with no title of its own


class _ExtrasReader:
    """The expat pass described above; ``items`` is in document order, like feedparser's entries."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.items: list[_ItemExtras] = []
        self.cuts: list[tuple[int, int]] = []  # byte ranges of media:title and media:description
        self._parser = expat.ParserCreate(namespace_separator=" ")
        self._parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self._parser.buffer_text = True
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._text
        self._parser.EntityDeclHandler = self._entity
        self._item: _ItemExtras | None = None
        self._levels: list[dict[str, str]] = []  # words of the item, then of each open media:group
        self._group: list[_Media] = []  # the media of the open media:group
        self._media: list[_Media] = []  # the open media:content (and a media:thumbnail in it)
        self._words: list[str] | None = None  # the text being collected
        self._length = 0  # of that text
        self._started = 0  # where the element whose text is collected began
        self._kind = ""  # its type attribute: html or plain
        self._atom_author = self._in_source = False

    def read(self) -> bool:
        """Whether the whole document was read (else only what came before the error)."""
        try:
            self._parser.Parse(self.data, True)
        except (expat.ExpatError, _EntitiesError, LookupError, ValueError):  # and an unknown encoding
            return False
        return True

    def _entity(self, *_: object) -> None:
        raise _EntitiesError  # entity tricks are feedparser's to guard against; we give up

    def _collect(self, kind: str) -> None:
        self._words, self._length, self._started, self._kind = [], 0, self._parser.CurrentByteIndex, kind

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        ns, _, local = name.rpartition(" ")
        if self._item is None:
            if local in ("item", "entry") and ns in _ITEM_NS:
                self._item, self._levels = _ItemExtras(), [{}]
            return
        if ns in _ATOM_NS and local == "source":
            self._in_source = True
        elif self._in_source:
            return
        elif ns in _MEDIA_NS and local in ("content", "thumbnail"):
            self._media.append(_Media(str(attrs.get("url", ""))))
            self._item.media.append(self._media[-1])
            self._group.append(self._media[-1])
        elif ns in _MEDIA_NS and local == "group":
            self._levels.append({})
            self._group = []
        elif ns in _MEDIA_NS and local in ("title", "description", "credit"):
            self._collect(attrs.get("type", "plain"))
        elif (not ns and local == "author") or name == _DC_CREATOR:
            self._collect("plain")
        elif ns in _ATOM_NS and local == "author":
            self._atom_author = True
        elif self._atom_author and ns in _ATOM_NS and local == "name":
            self._collect("plain")

    def _text(self, text: str) -> None:
        if self._words is not None and self._length < _WORDS_MAX:
            self._words.append(text)
            self._length += len(text)

    def _end(self, name: str) -> None:
        item = self._item
        if item is None:
            return
        ns, _, local = name.rpartition(" ")
        words = "".join(self._words or ())[:_WORDS_MAX]
        self._words = None
        if ns in _ATOM_NS and local == "source":
            self._in_source = False
        elif self._in_source:
            return
        elif local in ("item", "entry") and ns in _ITEM_NS:
            _fill(item.media, self._levels[0])
            item.title = self._levels[0].get("title", "")
            self.items.append(item)
            self._item = None
        elif ns in _MEDIA_NS and local in ("content", "thumbnail"):
            self._media.pop()
        elif ns in _MEDIA_NS and local == "group":
            words_of_group = self._levels.pop()
            _fill(self._group, words_of_group)
            if words_of_group.get("title"):
                self._levels[-1].setdefault("title", words_of_group["title"])
        elif ns in _MEDIA_NS and local in ("title", "description", "credit"):
            text = html_to_text(words) if self._kind == "html" else squash(words)
            if local != "credit":
                self.cuts.append((self._started, self._parser.CurrentByteIndex))
            if self._media:
                setattr(self._media[-1], local, getattr(self._media[-1], local) or text)
            else:
                self._levels[-1].setdefault(local, text)
        elif (not ns and local == "author") or name == _DC_CREATOR or (self._atom_author and local == "name"):
            item.authors.append(words)
        if ns in _ATOM_NS and local == "author":
            self._atom_author = False

    def cut(self) -> bytes:
        """The document without the media:title and media:description elements read so far.

        Each is replaced by its line breaks, so that feedparser's line numbers still match.
        """
        if not _ascii_compatible(self.data):
            return self.data
        pieces, done = [], 0
        for start, end in self.cuts:
            closing = _XML_TAG.match(self.data, end)
            if start < done or not closing or self.data[start : start + 1] != b"<":
                continue
            pieces += [self.data[done:start], b"\n" * self.data.count(b"\n", start, closing.end())]
            done = closing.end()
        return b"".join([*pieces, self.data[done:]])


def _ascii_compatible(data: bytes) -> bool:
    """Whether a byte ``<`` or ``&`` is that character, as in UTF-8 and the Latin encodings
    (not in UTF-16 or UTF-32), so the bytes can be worked on as they are."""
    return b"\x00" not in data[:4] and not data.startswith((b"\xff\xfe", b"\xfe\xff"))


def _xml_char(ref: re.Match[bytes]) -> bytes:
    """A numeric character reference as it is if XML allows the character, else one to U+FFFD.

    feedparser's lenient parser turns ``&#xD800;`` (half a UTF-16 pair), ``&#1114112;``
    (past Unicode) or a reference of thousands of digits into an exception of its own.
    """
    digits = ref[1] or ref[2]
    if len(digits) <= 8:
        code = int(digits, 16 if ref[1] else 10)
        if code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF:
            return ref[0]
    return b"&#xFFFD;"


class _EntitiesError(Exception):
    """Raised (and caught, within this module) when a feed declares entities."""


def _fill(media: list[_Media], words: Mapping[str, str]) -> None:
    """Give each picture the group's or item's words where it has none of its own."""
    for one in media:
        for name in ("title", "description", "credit"):
            setattr(one, name, getattr(one, name) or words.get(name, ""))


def _read_extras(data: bytes) -> tuple[list[_ItemExtras] | None, bytes]:
    """Per item, what feedparser would lose (None if the XML could not all be read), and the
    document to give feedparser instead."""
    reader = _ExtrasReader(data)
    complete = reader.read()
    return (reader.items if complete else None), reader.cut()


_ADDRESS = re.compile(r"(?:mailto:)?[^\s@<>()\"]+@[^\s@<>()\"]+\.[^\s@<>()\"]+", re.IGNORECASE)


def _byline(written: str) -> str:
    """The name in an author as feeds write it, without the address: "desk@paper.example
    (Priya Shah)" (RSS 2.0), "Priya Shah <desk@paper.example>", "Priya Shah (desk@…)" or just
    a name. An address alone is no byline."""
    text = squash(written)
    if (angle := re.fullmatch(r"(.*?)\s*<([^<>]*)>", text)) and _ADDRESS.fullmatch(angle[2].strip()):
        text = angle[1]
    elif (after := re.fullmatch(r"(\S+)\s*\((.*)\)", text)) and _ADDRESS.fullmatch(after[1]):
        text = after[2]
    if (before := re.fullmatch(r"(.*?)\s*\(([^()]*)\)", text)) and _ADDRESS.fullmatch(before[2].strip()):
        text = before[1]
    text = text.strip(" \"'")
    return "" if _ADDRESS.fullmatch(text) else squash(text)


def _entry_authors(entry: Mapping[str, Any], extras: _ItemExtras | None) -> str:
    """The byline: every author's name once, in order."""
    if extras is not None and extras.authors:
        written = extras.authors
    else:  # feedparser's own reading, minus the names it split off an address (see above)
        details = entry.get("authors") or ()
        if len(details) <= 1:
            written = [str(entry.get("author") or "")]
        else:
            written = [str(d.get("name") or "") for d in details if not d.get("email")]
    names = [_byline(w) for w in written]
    return ", ".join(dict.fromkeys(n for n in names if n))


def _picture_words(image: str, extras: _ItemExtras | None) -> tuple[str, str]:
    """The alt text and caption of the item's picture from its Media RSS element, if it has one:
    its title is the alt text; its description, with the credit, the caption."""
    media = next((m for m in extras.media if m.url.strip() == image.strip()), None) if extras and image else None
    if media is None:
        return "", ""
    caption, credit = media.description, media.credit
    if credit and credit.casefold() not in caption.casefold():
        if not re.match(r"(?i)(photo|picture|image|illustration|video)", credit):
            credit = f"Photograph: {credit}"
        caption = f"{caption}{'' if caption.endswith(('.', '!', '?', '…')) else '.'} {credit}" if caption else credit
    return media.title, caption


def _entry_issue(entry: Mapping[str, Any]) -> str:
    for key, value in entry.items():
        if isinstance(value, str) and (key in _ISSUE_KEYS or key.endswith(_ISSUE_SUFFIXES)):
            return squash(value)
    return ""


def _entry_image(entry: Mapping[str, Any]) -> str:
    """The item's picture from Media RSS or an image enclosure, if it names one."""
    for media in (*entry.get("media_content", ()), *entry.get("media_thumbnail", ())):
        kind = f"{media.get('medium', '')} {media.get('type', '')}"
        if media.get("url") and ("image" in kind or kind == " "):
            return str(media["url"])
    for link in entry.get("links", ()):
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/"):
            return str(link.get("href", ""))
    return ""


def _detail_text(entry: Mapping[str, Any], key: str) -> str:
    value = str(entry.get(key) or "")
    kind = (entry.get(f"{key}_detail") or {}).get("type", "text/html")
    return squash(value) if kind == "text/plain" else html_to_text(value)


def _feed_candidate(
    entry: dict[str, Any], n: int, base: str, zone: ZoneInfo, section: str, issue: str, extras: _ItemExtras | None
) -> Candidate:
    title = _detail_text(entry, "title") or (extras.title if extras else "")
    where = f"item {n}" + (f" “{title[:60]}”" if title else "")
    link = str(entry.get("link") or "")
    if entry.get("guidislink") and link == entry.get("id"):
        link = link if link.startswith(("http://", "https://")) else ""  # an id, not a relative link
    url = absolute_url(link, base)
    if not url:
        why = f"its link {link[:80]!r} is not an http(s) URL" if link else "no link to the article"
        return Candidate(where, error=why)
    if not title:
        return Candidate(where, error="no title")
    # The body is the full content when the item has it, else its description; a separate
    # description then serves as the standfirst.
    contents = [c for c in entry.get("content", ()) if c.get("value")]
    if contents:
        value, detail, summary = contents[0]["value"], contents[0], _detail_text(entry, "summary")
    else:
        value, detail, summary = str(entry.get("summary") or ""), entry.get("summary_detail") or {}, ""
    body = text_to_html(value) if detail.get("type") == "text/plain" else value
    standfirst = summary if summary and summary != html_to_text(body) else ""
    tags = entry.get("tags") or [{}]
    categories = tuple(
        squash(str(t.get(k) or "")) for t in entry.get("tags") or () for k in ("term", "label") if t.get(k)
    )
    values = {
        "guid": squash(str(entry.get("id") or "")) or url,
        "url": url,
        "title": title,
        "author": _entry_authors(entry, extras),  # names only: an address has no place in a byline
        "section": squash(tags[0].get("label") or tags[0].get("term") or ""),
        "issue_number": _entry_issue(entry) or issue,
        "image_url": _entry_image(entry),
    }
    values["image_alt"], values["image_caption"] = _picture_words(values["image_url"], extras)
    candidate = finish_item(where, values, body, standfirst, section, urljoin(url, detail.get("base") or ""))
    if candidate.error:
        return candidate
    candidate.categories = categories
    # dict.get: feedparser's own get() maps a missing "updated" to "published" with a warning.
    raw_date = str(dict.get(entry, "published") or dict.get(entry, "updated") or dict.get(entry, "created") or "")
    candidate.published_at = parse_date(raw_date, zone)
    parsed = dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")
    if candidate.published_at is None and parsed:
        with contextlib.suppress(TypeError, ValueError, OverflowError):  # a year 0, or beyond 9999
            candidate.published_at = datetime(*parsed[:6]).replace(tzinfo=UTC)  # feedparser read an unusual format
    if candidate.published_at is not None and not date_in_range(candidate.published_at):
        shown = raw_date or candidate.published_at.isoformat()
        return Candidate(where, error=f"its date {shown[:40]!r} is outside {DATE_RANGE}")
    if candidate.published_at is None:
        unreadable = f" (cannot read {raw_date[:40]!r})" if raw_date else ""
        candidate.notes.append(f"{where}: no publication date{unreadable}; using the time of import")
    return candidate


def parse_feed(
    data: bytes, source: str, base_url: str, zone: ZoneInfo, section: str
) -> tuple[list[Candidate], list[str]]:
    if _ascii_compatible(data):
        data = _CHARREF.sub(_xml_char, data)
    extras, data = _read_extras(data)
    try:
        parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    except (ValueError, OverflowError, LookupError, RecursionError) as exc:  # UnicodeError is a ValueError
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ArticleImportError(f"{source}: the feed cannot be parsed ({type(exc).__name__}: {detail})") from None
    if extras is not None and len(extras) != len(parsed.entries):
        extras = None  # the two readings disagree on what the items are: trust neither's extras
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    detail = ""
    if problem is not None:
        line = getattr(problem, "getLineNumber", None)
        detail = f"line {line()}: {problem.getMessage()}" if line else str(problem)
    if not parsed.get("version") and not parsed.entries:
        raise ArticleImportError(
            f"{source}: not an RSS or Atom feed, nor JSON Lines" + (f" ({detail})" if detail else "")
        )
    warnings = [f"{source}: the feed is not well-formed ({detail}); imported what could be read"] if detail else []
    feed_link = str(parsed.feed.get("link") or "")
    base = urljoin(base_url, feed_link) if feed_link else base_url  # relative item links resolve against the site
    issue = _entry_issue(parsed.feed)  # a print issue number given once for the whole feed
    entries = [
        _feed_candidate(e, n, base, zone, section, issue, extras[n - 1] if extras else None)
        for n, e in enumerate(parsed.entries, 1)
    ]
    return entries, warnings


# No field holds a number longer than this, and Python takes time quadratic in the length to
# read a long one (it refuses past 4,300 digits, with a ValueError).
