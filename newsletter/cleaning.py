"""Article text and HTML made fit for email: sanitised, tidied, with links that work.

Pure functions over strings, shared by every source ``articles.py`` reads. Cleaning HTML
is two passes. nh3 does the security part against an allowlist fit for email (no scripts,
styles, frames, forms or event handlers; only http, https and mailto URLs). A small parser
then walks nh3's well-formed output to do what an allowlist cannot: resolve relative links
against the article URL, drop tracking pixels, collapse whitespace that is layout noise,
and find the first paragraph, image and caption. It never rewrites the words themselves,
so curly quotes, dashes and accents arrive as they were written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html import escape
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import nh3

STANDFIRST_MAX = 240

# What survives in an article body: structure and emphasis that every mail client renders.
# fmt: off
_INLINE = frozenset({
    "a", "b", "strong", "i", "em", "u", "s", "small", "sub", "sup", "abbr", "cite", "q", "code", "img",
})
_BLOCKS = frozenset({
    "p", "br", "hr", "pre", "blockquote", "ul", "ol", "li", "dl", "dt", "dd", "h2", "h3", "h4", "h5", "h6",
    "figure", "figcaption", "div", "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
})
# Dropped together with everything inside them (other tags outside the allowlist keep their text).
_DROP_WITH_CONTENT = frozenset({
    "script", "style", "iframe", "object", "embed", "form", "noscript", "template", "svg", "math",
    "select", "textarea", "button", "audio", "video", "canvas", "head", "title",
})
_TRACKER_HOSTS = (
    "feeds.feedburner.com", "pixel.wp.com", "stats.wordpress.com", "google-analytics.com",
    "pixel.quantserve.com", "scorecardresearch.com", "facebook.com", "doubleclick.net",
)
# fmt: on
# style on img only so the second pass can spot hidden pixels; it never reaches the output.
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title", "style"},
    "abbr": {"title"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "ol": {"start"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
_NOISE = re.compile(r"[ \t\r\n\f\v\u00a0\u0085\u2028\u2029]{2,}|[\t\r\n\f\v\u0085\u2028\u2029]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HIDDEN_STYLE = re.compile(
    r"(?:^|;)\s*(?:(?:width|height)\s*:\s*[01](?:px)?\s*(?:;|$)|display\s*:\s*none|visibility\s*:\s*hidden)", re.I
)


def squash(text: str) -> str:
    """Plain text with layout noise removed: control characters, runs of spaces, edge spaces.

    A single non-breaking space stays (it binds "10 km" or "Mr Smith" on purpose); a run of
    them, or of spaces, tabs and newlines, becomes one space.
    """
    return _NOISE.sub(" ", _CONTROL.sub("", text)).strip(" \u00a0")


def trim_standfirst(text: str, limit: int = STANDFIRST_MAX) -> str:
    """Cut ``text`` to at most ``limit`` characters at a word boundary, ending with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = max(cut.rfind(" "), cut.rfind("\u00a0"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" \u00a0,;:–—-") + "…"


def absolute_url(url: str, base: str, *, mailto: bool = False) -> str:
    """``url`` resolved against ``base``; empty when it is not an http(s) (or mailto) URL."""
    url = url.strip()
    if not url or _CONTROL.search(url) or any(c.isspace() for c in url):
        return ""
    try:
        resolved = urljoin(base, url) if base else url
        parts = urlsplit(resolved)
    except ValueError:
        return ""
    if parts.scheme in ("http", "https") and parts.hostname:
        return resolved
    return resolved if mailto and parts.scheme == "mailto" else ""


def _is_tracking_image(src: str, attrs: Mapping[str, str]) -> bool:
    """A 1×1 (or hidden) image, or one from a known analytics host, only tells someone you read."""
    for name in ("width", "height"):
        size = re.match(r"\s*(\d+)", attrs.get(name, ""))
        if size and int(size.group(1)) <= 1:
            return True
    if _HIDDEN_STYLE.search(attrs.get("style", "")):
        return True
    host = (urlsplit(src).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in _TRACKER_HOSTS)


@dataclass(frozen=True)
class CleanHTML:
    """A sanitised body and what was found in it on the way."""

    html: str
    text: str  # all of it as plain text
    first_paragraph: str
    image_url: str = ""
    image_alt: str = ""
    image_caption: str = ""


class _Tidy(HTMLParser):
    """The second pass over nh3's (well-formed, allowlisted) output; see the module docstring."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.out: list[str] = []  # tags start with "<"; escaped text never does
        self.text: list[str] = []
        self.first_paragraph = ""
        self.image: tuple[str, str] | None = None
        self.caption = ""
        self._stack: list[str] = []
        self._strip = " \u00a0"  # leading characters that would be noise here: after a block edge or a space
        self._dropped_a = False
        self._paragraph: tuple[int, list[str]] | None = None  # where the open <p> began in out, its text
        self._paragraph_has_content = False
        self._caption: list[str] | None = None
        self._wants_caption = False

    def _emit(self, tag: str, attrs: Mapping[str, str]) -> None:
        self.out.append(f"<{tag}" + "".join(f' {k}="{escape(v)}"' for k, v in attrs.items()) + ">")

    def _boundary(self, in_pre: bool = False) -> None:
        """Spaces before a block edge or a line break are trailing noise (except in a <pre>)."""
        if not in_pre and "pre" not in self._stack:
            while self.out and not self.out[-1].startswith("<"):
                stripped = self.out[-1].rstrip(" \u00a0")
                if stripped:
                    self.out[-1] = stripped
                    break
                self.out.pop()
        # A <br> or block edge separates words in every text collected, not only the body's.
        for collector in (self.text, self._paragraph[1] if self._paragraph else None, self._caption):
            if collector is not None:
                collector.append(" ")
        self._strip = " \u00a0"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in _BLOCKS:
            self._boundary()
        if tag == "img":
            src = absolute_url(values.get("src", ""), self.base_url)
            if not src or _is_tracking_image(src, values):
                return
            if self.image is None:
                self.image = (src, squash(values.get("alt", "")))
                self._wants_caption = "figure" in self._stack
            self._paragraph_has_content = True
            kept = {"src": src} | {k: values[k] for k in ("alt", "width", "height", "title") if k in values}
            self._emit(tag, kept)
            return
        if tag in ("br", "hr"):
            self._emit(tag, {})
            return
        self._stack.append(tag)
        if tag == "a":
            href = absolute_url(values.get("href", ""), self.base_url, mailto=True)
            self._dropped_a = not href
            if href:
                self._emit(tag, values | {"href": href})
            return
        if "cite" in values:
            cite = absolute_url(values.pop("cite"), self.base_url)
            values |= {"cite": cite} if cite else {}
        if tag == "p":
            self._paragraph = (len(self.out), [])
            self._paragraph_has_content = False
        if tag == "figcaption" and self._wants_caption:
            self._caption = []
        self._emit(tag, values)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self._stack:
            return
        while self._stack and self._stack.pop() != tag:
            pass
        if tag in _BLOCKS:
            self._boundary(in_pre=tag == "pre")
        if tag == "a" and self._dropped_a:
            self._dropped_a = False
            return
        if tag == "p" and self._paragraph is not None:
            start, words = self._paragraph
            self._paragraph = None
            if not self._paragraph_has_content:
                del self.out[start:]  # an empty <p>&nbsp;</p> spacer
                return
            if not self.first_paragraph and not {"figure", "blockquote", "table"} & set(self._stack):
                self.first_paragraph = squash("".join(words))
        if tag == "figcaption" and self._caption is not None:
            self.caption = squash("".join(self._caption))
            self._caption = None
            self._wants_caption = False
        if tag == "figure":
            self._wants_caption = False
        self.out.append(f"</{tag}>" + ("\n" if tag in _BLOCKS else ""))

    def handle_data(self, data: str) -> None:
        if "pre" not in self._stack:
            data = _NOISE.sub(" ", _CONTROL.sub("", data))
            data = data.lstrip(self._strip)
        if not data:
            return
        self._strip = " " if data.endswith(" ") else ""
        self._paragraph_has_content = self._paragraph_has_content or bool(data.strip(" \u00a0\n"))
        self.out.append(escape(data, quote=False))
        for collector in (self.text, self._paragraph[1] if self._paragraph else None, self._caption):
            if collector is not None:
                collector.append(data)


def clean_html(html: str, base_url: str) -> CleanHTML:
    """Sanitise an article body for email and resolve its links against ``base_url``."""
    safe = nh3.clean(
        html,
        tags=set(_INLINE | _BLOCKS),
        clean_content_tags=set(_DROP_WITH_CONTENT),
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        strip_comments=True,
        link_rel=None,
    )
    tidy = _Tidy(base_url)
    tidy.feed(safe)
    tidy.close()
    text = squash("".join(tidy.text))
    src, alt = tidy.image or ("", "")
    return CleanHTML(
        html="".join(tidy.out).strip(),
        text=text,
        first_paragraph=tidy.first_paragraph or text,
        image_url=src,
        image_alt=alt,
        image_caption=tidy.caption,
    )


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: tags stripped, entities decoded, whitespace tidied."""
    return clean_html(fragment, "").text if "<" in fragment or "&" in fragment else squash(fragment)


def text_to_html(text: str) -> str:
    """A plain-text body as paragraphs, split at blank lines."""
    return "".join(f"<p>{escape(p.strip())}</p>" for p in re.split(r"\n\s*\n", text) if p.strip())


# --- dates --------------------------------------------------------------------------------


def parse_date(raw: str, zone: ZoneInfo) -> datetime | None:
    """An aware datetime from RFC 822 or ISO 8601 text; a time with no zone is read in ``zone``."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        moment = parsedate_to_datetime(raw)
        if moment.tzinfo is None and raw.endswith("-0000"):  # RFC 5322: UTC, local zone unknown
            moment = moment.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)
