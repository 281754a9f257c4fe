"""Getting articles into the store: RSS and Atom feeds, JSON Lines exports and hand-typed ones.

Every source goes the same way: read it (a file or HTTP, within ``[fetch]``'s time and size
limits, with conditional requests over HTTP), parse it (feedparser, or one JSON object per line), clean each item
for email (``cleaning.py``), and upsert by a stable guid in one transaction per source. A
bad item is rejected with a reason and the rest go in; a source that cannot be read at all
raises ``ArticleImportError`` naming it, and nothing of it is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.parsers import expat
from zoneinfo import ZoneInfo

import feedparser
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from newsletter import __version__
from newsletter.cleaning import (
    DATE_RANGE,
    absolute_url,
    clean_html,
    date_in_range,
    html_to_text,
    parse_date,
    squash,
    text_to_html,
    trim_standfirst,
)
from newsletter.clock import Clock
from newsletter.config import PRIORITY_MAX, PRIORITY_MIN, Config, FeedConfig, FetchConfig
from newsletter.errors import ArticleImportError, NewsletterError, UsageError
from newsletter.store import Store
from newsletter.store.models import Article, FeedState
from newsletter.store.store import article_by_guid

log = logging.getLogger(__name__)

USER_AGENT = f"BreakfastInRed/{__version__} (newsletter feed reader)"

_ISSUE_KEYS = ("prism_issueidentifier", "prism_number")
_ISSUE_SUFFIXES = ("_issue", "_issuenumber", "_issue_number")


@dataclass(frozen=True)
class ArticleInput:
    """An article as a source describes it, already cleaned."""

    guid: str
    url: str
    title: str
    published_at: datetime
    standfirst: str = ""
    body: str = ""
    image_url: str = ""
    image_alt: str = ""
    image_caption: str = ""
    author: str = ""
    section: str = ""
    issue_number: str = ""
    priority: int = 0

    def __post_init__(self) -> None:
        if not self.guid.strip():
            raise UsageError("an article needs a guid (or a URL to use as one)")
        if not self.title.strip():
            raise UsageError(f"article {self.guid}: the title is empty")
        if not self.url.startswith(("http://", "https://")) or absolute_url(self.url, "") != self.url:
            raise UsageError(f"article {self.guid}: the URL must start with http:// or https:// and name a host")
        if self.image_url and absolute_url(self.image_url, "") != self.image_url:
            raise UsageError(f"article {self.guid}: the image URL must be a whole http(s) address")
        if self.published_at.tzinfo is None:
            raise UsageError(f"article {self.guid}: the publication time needs a time zone")
        if not date_in_range(self.published_at):
            when = self.published_at.isoformat()
            raise UsageError(f"article {self.guid[:80]}: the publication time {when} is outside {DATE_RANGE}")
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise UsageError(f"article {self.guid[:80]}: the priority must be from {PRIORITY_MIN} to {PRIORITY_MAX}")
        for name, limit in _LIMITS.items():
            value = getattr(self, name, None)
            if isinstance(value, str) and len(value) > limit:
                raise UsageError(
                    f"article {self.guid[:80]}: the {name.replace('_', ' ')} is longer than {limit} characters"
                )


_FIELDS = [f.name for f in fields(ArticleInput) if f.name != "guid"]
_JSON_FIELDS = frozenset(f.name for f in fields(ArticleInput))
_LIMITS = {c.name: c.type.length for c in Article.__table__.columns if getattr(c.type, "length", None)}


def typed_article(*, body: str = "", priority: int = 0, published_at: datetime, **fields: str) -> ArticleInput:
    """An article typed in by hand (the CLI), cleaned as an imported one is but never cut short.

    :raises UsageError: a value too long, a URL that is not a whole http(s) address, and
        anything else an import would reject, said the same way.
    """
    values = {name: squash(value) for name, value in fields.items()}
    guid = values.get("guid") or values.get("url", "")
    for name, value in values.items():
        if name in _LIMITS and len(value) > _LIMITS[name]:
            raise UsageError(
                f"article {guid[:80]}: the {name.replace('_', ' ')} is longer than {_LIMITS[name]} characters"
            )
    image = values.get("image_url", "")
    if image and absolute_url(image, "") != image:  # typed by hand: no guessing what it is relative to
        raise UsageError(f"article {guid[:80]}: the image URL must be a whole http(s) address")
    candidate = _finish("the article", values, body, values.pop("standfirst", ""), values.get("section", ""))
    if candidate.error:
        raise UsageError(f"article {guid[:80]}: {candidate.error}")
    return ArticleInput(published_at=published_at, priority=priority, **candidate.fields)


def upsert_article(session: Session, data: ArticleInput, clock: Clock) -> str:
    """Insert or update by guid; returns "new", "updated" or "unchanged"."""
    now = clock.now()
    existing = article_by_guid(session, data.guid)
    if existing is None:
        session.add(Article(guid=data.guid, **{f: getattr(data, f) for f in _FIELDS}, created_at=now, updated_at=now))
        session.flush()
        return "new"
    changed = False
    edited = set(existing.edited_fields.split(","))  # an editor's hand changes win over the source
    for name in _FIELDS:
        if name in edited:
            continue
        value = getattr(data, name)
        if getattr(existing, name) != value:
            setattr(existing, name, value)
            changed = True
    if changed:
        existing.updated_at = now
        return "updated"
    return "unchanged"


@dataclass
class ImportSummary:
    """What one source gave: counts by outcome, why items were rejected, and what looked odd."""

    source: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_modified: bool = False  # the server answered 304: nothing was re-imported
    error: str = ""  # the source could not be read at all (set by fetch_feeds, which carries on)

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    @property
    def ok(self) -> bool:
        return not self.error

    def describe(self) -> str:
        """One line for a terminal, a log or a cron mail."""
        if self.error:
            return self.error
        if self.not_modified:
            return f"{self.source}: unchanged since the last fetch (304 Not Modified); nothing to import"
        counts = f"{self.new} new, {self.updated} updated, {self.unchanged} unchanged, {self.rejected} rejected"
        return f"{self.source}: {counts}"


# --- parsing sources into candidates --------------------------------------------------------


@dataclass
class _Candidate:
    """One item of a source on its way in: its fields, or why it cannot go in."""

    where: str  # "line 3" or "item 2 “Title”", for messages
    fields: dict[str, str] = field(default_factory=dict)
    published_at: datetime | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)  # warnings worth showing if the item is new
    categories: tuple[str, ...] = ()  # the item's own categories, for a feed's priority table
    priority: int | None = None  # set by the source itself (JSON Lines), else from the categories


def _finish(
    where: str, values: dict[str, str], body_html: str, standfirst: str, section: str, body_base: str = ""
) -> _Candidate:
    """Clean the body, fill what the source left out, and fit every field to its column.

    :param body_base: what relative links in the body are relative to, when the source
        says (Atom's xml:base); otherwise the article's own URL.
    """
    url = values["url"]
    body = clean_html(body_html, body_base or url) if body_html else None
    values["body"] = body.html if body else ""
    values["standfirst"] = trim_standfirst(standfirst or (body.first_paragraph if body else ""))
    notes = []
    image = absolute_url(values.get("image_url", ""), url)
    if values.get("image_url") and not image:
        notes.append(f"{where}: image {values['image_url'][:80]!r} ignored: not an http(s) URL")
    if body and body.image_url and image in ("", body.image_url):
        image = body.image_url
        values["image_alt"] = values.get("image_alt") or body.image_alt
        values["image_caption"] = values.get("image_caption") or body.image_caption
    values["image_url"] = image
    values["section"] = section or values.get("section", "")
    for name in ("guid", "url", "image_url"):
        if len(values[name]) > _LIMITS[name]:
            return _Candidate(where, error=f"{name} is longer than {_LIMITS[name]} characters")
    for name, limit in _LIMITS.items():
        if name in values and len(values[name]) > limit:
            values[name] = trim_standfirst(values[name], limit)
    return _Candidate(where, values, notes=notes)


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
    entry: Mapping[str, Any], n: int, base: str, zone: ZoneInfo, section: str, issue: str, extras: _ItemExtras | None
) -> _Candidate:
    title = _detail_text(entry, "title") or (extras.title if extras else "")
    where = f"item {n}" + (f" “{title[:60]}”" if title else "")
    link = str(entry.get("link") or "")
    if entry.get("guidislink") and link == entry.get("id"):
        link = link if link.startswith(("http://", "https://")) else ""  # an id, not a relative link
    url = absolute_url(link, base)
    if not url:
        why = f"its link {link[:80]!r} is not an http(s) URL" if link else "no link to the article"
        return _Candidate(where, error=why)
    if not title:
        return _Candidate(where, error="no title")
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
    candidate = _finish(where, values, body, standfirst, section, urljoin(url, detail.get("base") or ""))
    if candidate.error:
        return candidate
    candidate.categories = categories
    # dict.get: feedparser's own get() maps a missing "updated" to "published" with a warning.
    raw_date = str(dict.get(entry, "published") or dict.get(entry, "updated") or dict.get(entry, "created") or "")
    candidate.published_at = parse_date(raw_date, zone)
    parsed = dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")
    if candidate.published_at is None and parsed:
        with contextlib.suppress(TypeError, ValueError, OverflowError):  # a year 0, or beyond 9999
            candidate.published_at = datetime(*parsed[:6], tzinfo=UTC)  # feedparser read an unusual format
    if candidate.published_at is not None and not date_in_range(candidate.published_at):
        shown = raw_date or candidate.published_at.isoformat()
        return _Candidate(where, error=f"its date {shown[:40]!r} is outside {DATE_RANGE}")
    if candidate.published_at is None:
        unreadable = f" (cannot read {raw_date[:40]!r})" if raw_date else ""
        candidate.notes.append(f"{where}: no publication date{unreadable}; using the time of import")
    return candidate


def _parse_feed(
    data: bytes, source: str, base_url: str, zone: ZoneInfo, section: str
) -> tuple[list[_Candidate], list[str]]:
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
_JSON_DIGITS_MAX = 40


class _TooManyDigitsError(Exception):
    """Raised (and caught, within this module) for a JSON number past ``_JSON_DIGITS_MAX``."""

    def __init__(self, digits: int) -> None:
        self.digits = digits
        super().__init__(f"a number with {digits} digits; at most {_JSON_DIGITS_MAX} are allowed")


def _json_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > _JSON_DIGITS_MAX:
        raise _TooManyDigitsError(digits)
    return int(text)


def _json_candidate(line: bytes, where: str, zone: ZoneInfo, section: str) -> tuple[_Candidate, set[str]]:
    try:
        item = json.loads(line.decode("utf-8"), parse_int=_json_int)
    except UnicodeDecodeError:
        return _Candidate(where, error="not UTF-8 text"), set()
    except json.JSONDecodeError as exc:
        return _Candidate(where, error=f"not valid JSON: {exc.msg} (column {exc.colno})"), set()
    except _TooManyDigitsError as exc:
        return _Candidate(where, error=str(exc)), set()
    except RecursionError:  # json nests by recursion: [[[[…]]]] 100,000 deep must cost one line only
        return _Candidate(where, error="nested too deeply"), set()
    if not isinstance(item, dict):
        return _Candidate(where, error="expected a JSON object {...}"), set()
    unknown = set(item) - _JSON_FIELDS
    priority = item.pop("priority", None)
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        return _Candidate(
            where, error=f"priority must be a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}"
        ), unknown
    values: dict[str, str] = {}
    for name in _JSON_FIELDS & set(item):
        value = item[name]
        if name == "issue_number" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and not isinstance(value, str):
            return _Candidate(where, error=f"{name} must be a string, not {type(value).__name__}"), unknown
        values[name] = value or ""
    url = absolute_url(values.get("url", ""), "")
    if not url:
        why = "is missing" if not values.get("url") else f"{values['url'][:80]!r} is not an http(s) URL"
        return _Candidate(where, error=f"url {why}"), unknown
    values["url"] = url
    values["guid"] = squash(values.get("guid", "")) or url
    for name in ("title", "image_alt", "image_caption", "author", "section", "issue_number"):
        values[name] = html_to_text(values.get(name, ""))
    if not values["title"]:
        return _Candidate(where, error="title is missing"), unknown
    raw_date = values.pop("published_at", "")
    published = parse_date(raw_date, zone) if raw_date else None
    if raw_date and published is None:
        return _Candidate(
            where, error=f"published_at {raw_date[:40]!r} is not a date like 2026-11-24T05:30:00Z"
        ), unknown
    if published is not None and not date_in_range(published):
        return _Candidate(where, error=f"published_at {raw_date[:40]!r} is outside {DATE_RANGE}"), unknown
    body = values.pop("body", "")
    candidate = _finish(where, values, body, html_to_text(values.pop("standfirst", "")), section)
    candidate.published_at = published
    candidate.priority = priority
    candidate.categories = (values.get("section", ""),)
    if published is None and not candidate.error:
        candidate.notes.append(f"{where}: no published_at; using the time of import")
    return candidate, unknown


def _parse_json_lines(data: bytes, source: str, zone: ZoneInfo, section: str) -> tuple[list[_Candidate], list[str]]:
    candidates: list[_Candidate] = []
    unknown: dict[str, int] = {}
    # bytes.splitlines splits at \r and \n only, never at U+2028 inside a JSON string.
    for number, line in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        if line.strip():
            candidate, extra = _json_candidate(line, f"line {number}", zone, section)
            candidates.append(candidate)
            for name in extra:
                unknown.setdefault(name, number)
    warnings = [f"{source}: unknown field {k!r} ignored (first on line {n})" for k, n in sorted(unknown.items())]
    return candidates, warnings


# --- reading sources ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fetched:
    """A source's bytes, where they came from (for relative links) and the HTTP validators."""

    data: bytes
    base_url: str = ""
    etag: str = ""
    last_modified: str = ""
    not_modified: bool = False


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class _HTTPRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect to ftp://; a feed only moves between http(s) URLs."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not is_url(newurl.lower()):
            return None  # urllib then reports the redirect itself as the HTTP error
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_file(source: str, settings: FetchConfig) -> _Fetched:
    """Read a file within ``fetch.max_bytes``, the limit a download has.

    A path may name something endless (``/dev/zero``) or a pipe (``<(cms-export)``), so the
    read stops one byte past the limit, and a pipe or device must deliver all of it within
    ``fetch.timeout``. Opening does not wait: a named pipe with no writer reads as empty.
    """
    if "://" in source:
        raise ArticleImportError(f"{source}: only http://, https:// URLs and file paths can be imported")
    try:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(Path(source).expanduser(), flags)
    except FileNotFoundError:
        raise ArticleImportError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ArticleImportError(f"{source}: is a directory; give a feed or JSON Lines file") from None
    except OSError as exc:
        raise ArticleImportError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise ArticleImportError(f"{source}: is a directory; give a feed or JSON Lines file")
        return _Fetched(_read_within(fd, source, settings))
    except OSError as exc:
        raise ArticleImportError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _read_within(fd: int, source: str, settings: FetchConfig) -> bytes:
    """Up to ``settings.max_bytes`` from ``fd``, opened non-blocking: when a pipe or device has
    nothing yet, wait for it until the deadline rather than for ever."""
    data = bytearray()
    deadline = time.monotonic() + settings.timeout
    while True:
        try:
            chunk = os.read(fd, min(1 << 20, settings.max_bytes + 1 - len(data)))
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise ArticleImportError(
                    f"{source}: no end of the data within fetch.timeout ({settings.timeout:g} s)"
                ) from None
            continue
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > settings.max_bytes:
            raise ArticleImportError(
                f"{source}: larger than fetch.max_bytes ({settings.max_bytes:,} bytes); refusing it"
            )


def _fetch(url: str, settings: FetchConfig, etag: str = "", last_modified: str = "") -> _Fetched:
    """GET ``url`` within the time and size limits; a 304 to our validators means "no news"."""
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5",
        "Accept-Encoding": "identity",
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    too_big = ArticleImportError(
        f"{url}: the response is larger than fetch.max_bytes ({settings.max_bytes:,} bytes); refusing it"
    )
    slow = ArticleImportError(f"{url}: no complete answer within fetch.timeout ({settings.timeout:g} s)")
    opener = urllib.request.build_opener(_HTTPRedirectsOnly)
    deadline = time.monotonic() + settings.timeout
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=settings.timeout) as reply:
            declared = reply.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > settings.max_bytes:
                raise too_big
            chunks: list[bytes] = []
            size = 0
            while chunk := reply.read1(64 * 1024):
                size += len(chunk)
                if size > settings.max_bytes:
                    raise too_big
                if time.monotonic() > deadline:
                    raise slow
                chunks.append(chunk)
            return _Fetched(
                b"".join(chunks),
                reply.geturl(),
                reply.headers.get("ETag", ""),
                reply.headers.get("Last-Modified", ""),
            )
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304 and (etag or last_modified):
            return _Fetched(b"", url, etag, last_modified, not_modified=True)
        raise ArticleImportError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise slow from None
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise ArticleImportError(f"{url}: cannot connect ({reason})") from None
    except TimeoutError:
        raise slow from None
    except (OSError, HTTPException, ValueError) as exc:
        raise ArticleImportError(f"{url}: the download failed ({exc or type(exc).__name__})") from None


# --- storing --------------------------------------------------------------------------------


def priority_for(categories: Iterable[str], feed: FeedConfig) -> int:
    """The highest priority the feed's table gives any of the item's categories, else the feed's own."""
    table = dict(feed.priorities)
    found = [table[c.casefold()] for c in categories if c.casefold() in table]
    return max(found) if found else feed.priority


def _store_candidates(
    session: Session, candidates: Iterable[_Candidate], clock: Clock, summary: ImportSummary, feed: FeedConfig
) -> None:
    """Upsert each good candidate under a savepoint, so one the database refuses is only rejected."""
    now = clock.now()
    seen: dict[str, str] = {}
    for candidate in candidates:
        where = candidate.where
        if candidate.error:
            summary.rejections.append(f"{where}: {candidate.error}")
            continue
        guid = candidate.fields["guid"]
        if guid in seen:
            summary.rejections.append(f"{where}: same guid as {seen[guid]}; ignored")
            continue
        seen[guid] = where
        published = candidate.published_at
        if published is None:
            # Keep the first import's time, or a dateless item would look updated on every fetch.
            existing = article_by_guid(session, guid)
            published = existing.published_at if existing is not None else now
        try:
            priority = (
                candidate.priority if candidate.priority is not None else priority_for(candidate.categories, feed)
            )
            data = ArticleInput(published_at=published, priority=priority, **candidate.fields)
            with session.begin_nested():
                outcome = upsert_article(session, data, clock)
        except NewsletterError as exc:
            summary.rejections.append(f"{where}: {exc}")
            continue
        except (IntegrityError, DataError) as exc:
            summary.rejections.append(f"{where}: the database refused it ({str(exc.orig).strip().splitlines()[0]})")
            continue
        except StatementError as exc:
            if isinstance(exc, DBAPIError):
                raise  # the connection or the server failed: no fault of this item's
            # A value the driver could not even send (it failed before reaching the database).
            detail = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0][:200]
            summary.rejections.append(f"{where}: the database cannot store it ({detail})")
            continue
        setattr(summary, outcome, getattr(summary, outcome) + 1)
        if outcome == "new":
            summary.warnings.extend(candidate.notes)
            if published > now:
                when = published.isoformat(timespec="minutes")
                summary.warnings.append(f"{where}: dated {when}, in the future; it waits for the edition after that")


def _record_state(session: Session, url: str, now: datetime, status: str, fetched: _Fetched | None) -> None:
    state = session.get(FeedState, url)
    if state is None:
        state = FeedState(url=url)
        session.add(state)
    state.fetched_at = now
    state.status = status[:500]
    if fetched is not None:
        state.etag = fetched.etag[:500]
        state.last_modified = fetched.last_modified[:100]


def import_source(
    source: str,
    config: Config,
    store: Store,
    clock: Clock,
    *,
    section: str = "",
    conditional: bool = False,
    feed: FeedConfig | None = None,
) -> ImportSummary:
    """Import one feed URL, feed file or JSON Lines file, in one transaction.

    :param section: put every article in this section, instead of each item's own category.
    :param feed: the ``[[feeds]]`` entry (or a hand import's options) whose priority and
        category -> priority table set each new item's priority.
    :param conditional: send the ETag / Last-Modified remembered from the last fetch of this
        URL, so an unchanged feed costs one 304 (``fetch_feeds`` does; a hand import re-reads).
    :raises ArticleImportError: the source cannot be read or is neither a feed nor JSON Lines.
    """
    summary = ImportSummary(source)
    try:
        if is_url(source):
            state = None
            if conditional:
                with store.session() as session:
                    state = session.get(FeedState, source)
            etag, modified = (state.etag, state.last_modified) if state else ("", "")
            fetched = _fetch(source, config.fetch, etag, modified)
        else:
            fetched = _read_file(source, config.fetch)
        if fetched.not_modified:
            summary.not_modified = True
            with store.session() as session:
                _record_state(session, source, clock.now(), summary.describe(), None)
            return summary
        zone = config.newsletter.zone
        if not fetched.data.strip():
            candidates: list[_Candidate] = []
            summary.warnings.append(f"{source}: empty; nothing to import")
        elif _looks_like_json_lines(fetched.data, source):
            candidates, summary.warnings = _parse_json_lines(fetched.data, source, zone, section)
        else:
            candidates, summary.warnings = _parse_feed(fetched.data, source, fetched.base_url, zone, section)
    except ArticleImportError as exc:
        if is_url(source):
            with store.session() as session:
                _record_state(session, source, clock.now(), str(exc), None)
        raise
    with store.session() as session:
        _store_candidates(session, candidates, clock, summary, feed or FeedConfig(url=source))
        if is_url(source):
            _record_state(session, source, clock.now(), summary.describe(), fetched)
    log.info("%s", summary.describe())
    return summary


def _looks_like_json_lines(data: bytes, source: str) -> bool:
    """JSON Lines by name, or by an object on one of its first lines: a bad first line must
    be rejected with its number, not make the whole file "neither a feed nor JSON Lines"."""
    if urlsplit(source).path.lower().endswith((".jsonl", ".ndjson")):
        return True
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return False
    return any(line.lstrip().startswith(b"{") for line in head[:65536].splitlines()[:50])


def fetch_feeds(config: Config, store: Store, clock: Clock) -> list[ImportSummary]:
    """Import every ``[[feeds]]`` entry with conditional requests; one failing never stops the rest.

    Returns one summary per feed, in order; a feed that could not be imported has ``error``
    set. Reporting them is the caller's job (the CLI prints them, the scheduler logs them).
    """
    summaries = []
    for feed in config.feeds:
        try:
            summary = import_source(feed.url, config, store, clock, section=feed.section, conditional=True, feed=feed)
        except NewsletterError as exc:
            log.info("%s", exc)  # the caller reports the summaries; a warning here would say it twice
            summary = ImportSummary(feed.url, error=str(exc))
        except Exception as exc:  # a parser bug on one feed's content must not stop the others
            log.exception("importing %s failed unexpectedly", feed.url)
            summary = ImportSummary(feed.url, error=f"{feed.url}: unexpected error ({exc!r}); see the log")
        summaries.append(summary)
    return summaries


def iter_details(summary: ImportSummary) -> Iterator[str]:
    """The rejections and warnings of a summary, one line each, for printing under it."""
    yield from (f"  rejected: {reason}" for reason in summary.rejections)
    yield from (f"  warning: {warning}" for warning in summary.warnings)
