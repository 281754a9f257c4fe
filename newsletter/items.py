"""An article on its way in: the checked form every source fills, and one source item as it is parsed.

Every way in (a feed item, a JSON line, a hand-typed article) ends as an ``ArticleInput``,
whose checks are the one place the limits of a stored article are enforced; a source item
that cannot become one is a ``Candidate`` with the reason, so it is rejected on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime

from newsletter.cleaning import (
    DATE_RANGE,
    absolute_url,
    clean_html,
    date_in_range,
    squash,
    trim_standfirst,
)
from newsletter.config import PRIORITY_MAX, PRIORITY_MIN
from newsletter.errors import InvalidArticleError
from newsletter.store.models import Article


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
            raise InvalidArticleError("", "an article needs a guid (or a URL to use as one)")
        if not self.title.strip():
            raise InvalidArticleError(self.guid, "the title is empty")
        if not self.url.startswith(("http://", "https://")) or absolute_url(self.url, "") != self.url:
            raise InvalidArticleError(self.guid, "the URL must start with http:// or https:// and name a host")
        if self.image_url and absolute_url(self.image_url, "") != self.image_url:
            raise InvalidArticleError(self.guid, "the image URL must be a whole http(s) address")
        if self.published_at.tzinfo is None:
            raise InvalidArticleError(self.guid, "the publication time needs a time zone")
        if not date_in_range(self.published_at):
            when = self.published_at.isoformat()
            raise InvalidArticleError(self.guid, f"the publication time {when} is outside {DATE_RANGE}")
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise InvalidArticleError(self.guid, f"the priority must be from {PRIORITY_MIN} to {PRIORITY_MAX}")
        for name, limit in FIELD_LIMITS.items():
            value = getattr(self, name, None)
            if isinstance(value, str) and len(value) > limit:
                raise InvalidArticleError(self.guid, f"the {name.replace('_', ' ')} is longer than {limit} characters")


STORED_FIELDS = [f.name for f in fields(ArticleInput) if f.name != "guid"]
JSON_FIELDS = frozenset(f.name for f in fields(ArticleInput))
FIELD_LIMITS = {c.name: length for c in Article.__table__.columns if (length := getattr(c.type, "length", None))}


def typed_article(*, body: str = "", priority: int = 0, published_at: datetime, **fields: str) -> ArticleInput:
    """An article typed in by hand (the CLI), cleaned as an imported one is but never cut short.

    :raises InvalidArticleError: a value too long, a URL that is not a whole http(s) address, and
        anything else an import would reject, said the same way.
    """
    values = {name: squash(value) for name, value in fields.items()}
    guid = values.get("guid") or values.get("url", "")
    for name, value in values.items():
        if name in FIELD_LIMITS and len(value) > FIELD_LIMITS[name]:
            raise InvalidArticleError(
                guid, f"the {name.replace('_', ' ')} is longer than {FIELD_LIMITS[name]} characters"
            )
    image = values.get("image_url", "")
    if image and absolute_url(image, "") != image:  # typed by hand: no guessing what it is relative to
        raise InvalidArticleError(guid, "the image URL must be a whole http(s) address")
    candidate = finish_item("the article", values, body, values.pop("standfirst", ""), values.get("section", ""))
    if candidate.error:
        raise InvalidArticleError(guid, candidate.error)
    return ArticleInput(published_at=published_at, priority=priority, **candidate.fields)


# --- parsing sources into candidates --------------------------------------------------------


@dataclass
class Candidate:
    """One item of a source on its way in: its fields, or why it cannot go in."""

    where: str  # "line 3" or "item 2 “Title”", for messages
    fields: dict[str, str] = field(default_factory=dict)
    published_at: datetime | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)  # warnings worth showing if the item is new
    categories: tuple[str, ...] = ()  # the item's own categories, for a feed's priority table
    priority: int | None = None  # set by the source itself (JSON Lines), else from the categories


def finish_item(
    where: str, values: dict[str, str], body_html: str, standfirst: str, section: str, body_base: str = ""
) -> Candidate:
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
        if len(values[name]) > FIELD_LIMITS[name]:
            return Candidate(where, error=f"{name} is longer than {FIELD_LIMITS[name]} characters")
    for name, limit in FIELD_LIMITS.items():
        if name in values and len(values[name]) > limit:
            values[name] = trim_standfirst(values[name], limit)
            notes.append(f"{where}: the {name.replace('_', ' ')} was cut to {limit} characters")
    return Candidate(where, values, notes=notes)
