"""Getting articles into the store: RSS and Atom feeds, JSON Lines exports and hand-typed ones.

Every source goes the same way: read it (a file, or HTTP with a timeout, a size limit and
conditional requests), parse it (feedparser, or one JSON object per line), clean each item
for email (``cleaning.py``), and upsert by a stable guid in one transaction per source. A
bad item is rejected with a reason and the rest go in; a source that cannot be read at all
raises ``ArticleImportError`` naming it, and nothing of it is written.
"""

from __future__ import annotations

import json
import logging
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
from zoneinfo import ZoneInfo

import feedparser
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from newsletter import __version__
from newsletter.cleaning import (
    absolute_url,
    clean_html,
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
    entry: Mapping[str, Any], n: int, base: str, zone: ZoneInfo, section: str, issue: str
) -> _Candidate:
    title = _detail_text(entry, "title")
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
    # Names only: an RSS <author> is often an email address, which has no place in a byline.
    authors = [a.get("name", "") for a in entry.get("authors", ())]
    tags = entry.get("tags") or [{}]
    categories = tuple(
        squash(str(t.get(k) or "")) for t in entry.get("tags") or () for k in ("term", "label") if t.get(k)
    )
    values = {
        "guid": squash(str(entry.get("id") or "")) or url,
        "url": url,
        "title": title,
        "author": squash(", ".join(a for a in authors if a)),
        "section": squash(tags[0].get("label") or tags[0].get("term") or ""),
        "issue_number": _entry_issue(entry) or issue,
        "image_url": _entry_image(entry),
    }
    candidate = _finish(where, values, body, standfirst, section, urljoin(url, detail.get("base") or ""))
    if candidate.error:
        return candidate
    candidate.categories = categories
    # dict.get: feedparser's own get() maps a missing "updated" to "published" with a warning.
    raw_date = str(dict.get(entry, "published") or dict.get(entry, "updated") or dict.get(entry, "created") or "")
    candidate.published_at = parse_date(raw_date, zone)
    parsed = dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")
    if candidate.published_at is None and parsed:
        candidate.published_at = datetime(*parsed[:6], tzinfo=UTC)  # feedparser read an unusual format
    if candidate.published_at is None:
        unreadable = f" (cannot read {raw_date[:40]!r})" if raw_date else ""
        candidate.notes.append(f"{where}: no publication date{unreadable}; using the time of import")
    return candidate


def _parse_feed(
    data: bytes, source: str, base_url: str, zone: ZoneInfo, section: str
) -> tuple[list[_Candidate], list[str]]:
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
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
    entries = [_feed_candidate(e, n, base, zone, section, issue) for n, e in enumerate(parsed.entries, 1)]
    return entries, warnings


def _json_candidate(line: bytes, where: str, zone: ZoneInfo, section: str) -> tuple[_Candidate, set[str]]:
    try:
        item = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return _Candidate(where, error="not UTF-8 text"), set()
    except json.JSONDecodeError as exc:
        return _Candidate(where, error=f"not valid JSON: {exc.msg} (column {exc.colno})"), set()
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


def _read_file(source: str) -> _Fetched:
    if "://" in source:
        raise ArticleImportError(f"{source}: only http://, https:// URLs and file paths can be imported")
    try:
        return _Fetched(Path(source).expanduser().read_bytes())
    except FileNotFoundError:
        raise ArticleImportError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ArticleImportError(f"{source}: is a directory; give a feed or JSON Lines file") from None
    except OSError as exc:
        raise ArticleImportError(f"{source}: cannot be read ({exc.strerror or exc})") from None


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
            fetched = _read_file(source)
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
