"""Article text and HTML made fit for email: sanitised, tidied, with links that work.

Pure functions over strings, shared by every source ``articles.py`` reads. Cleaning HTML
is two passes, after one that writes out the end tags HTML implies and caps the nesting,
so that no input, however hostile, makes the parsers slow (see ``_Balancer``). nh3 does
the security part against an allowlist fit for email (no scripts, styles, frames, forms
or event handlers; only http, https and mailto URLs). A small parser then walks nh3's
well-formed output to do what an allowlist cannot: resolve relative links against the
article URL, drop tracking pixels, collapse whitespace that is layout noise, and find the
first paragraph, image and caption. It never rewrites the words themselves, so curly
quotes, dashes and accents arrive as they were written; only control characters go.
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
# For balancing markup before nh3 (see _Balancer): elements with no end tag, whose content is
# raw text, that stop a search for an open element, and that close an open <p>.
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param", "source",
    "track", "wbr",
})
_RAW_TEXT = frozenset({
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext",
})
_SCOPE = frozenset({"applet", "caption", "html", "table", "td", "th", "marquee", "object", "template"})
_CLOSE_P = frozenset({
    "address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div", "dl", "dd",
    "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hgroup", "li", "listing", "main", "menu", "nav", "ol", "p", "pre", "section", "summary", "table", "ul",
})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_TABLE_SECTIONS = frozenset({"thead", "tbody", "tfoot"})
# Opening one of these closes the innermost open element named on the left, when no element
# named on the right stands between (HTML's implied end tags, simplified).
_CLOSES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "li": (frozenset({"li"}), _SCOPE | {"ul", "ol"}),
    "dt": (frozenset({"dt", "dd"}), _SCOPE | {"dl"}),
    "dd": (frozenset({"dt", "dd"}), _SCOPE | {"dl"}),
    "td": (frozenset({"td", "th"}), frozenset({"table", "tr"})),
    "th": (frozenset({"td", "th"}), frozenset({"table", "tr"})),
    "tr": (frozenset({"tr"}), frozenset({"table"}) | _TABLE_SECTIONS),
    **dict.fromkeys(_TABLE_SECTIONS, (_TABLE_SECTIONS, frozenset({"table"}))),
    "option": (frozenset({"option"}), frozenset({"select", "datalist"}) | _SCOPE),
    "a": (frozenset({"a"}), _SCOPE),
    **dict.fromkeys(_HEADINGS, (_HEADINGS, _SCOPE | (_CLOSE_P - _HEADINGS))),
}
# fmt: on
NESTING_MAX = 100  # elements open at once; real articles stay within a few dozen
# A tag: a name, then anything but "<" or ">" (so that each character is looked at a bounded
# number of times, whatever the input).
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/<>]*)[^<>]*>")
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
# C0 (but tab, LF, CR), DEL and C1 (but NEL, a line break that _NOISE turns into a space): a
# terminal or mail client may act on them (ESC [ and its one-byte form CSI, U+009B, start
# escape sequences), and no text is written with them. Also lone surrogates (JSON's "\ud800",
# half an emoji): not characters at all, so nothing can encode them, from nh3 to the database.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff]")
_HIDDEN_STYLE = re.compile(
    r"(?:^|;)\s*(?:(?:width|height)\s*:\s*[01](?:px)?\s*(?:;|$)|display\s*:\s*none|visibility\s*:\s*hidden)", re.I
)


class _Balancer:
    """Rewrites markup so that every element it closes is closed by its own end tag, and none
    is opened deeper than ``NESTING_MAX``; a callable for ``_TAG.sub``.

    Why: nh3's HTML parser does work in proportion to the depth for every tag, and re-opens
    every formatting element (``<b>``, ``<a href>``, …) that a paragraph's end closed by
    implication in each paragraph after it, copying its attributes. So 100,000 nested tags,
    or paragraphs each leaving a ``<b title="…">`` open, cost minutes and gigabytes however
    short the input. Following the nesting roughly as a browser does, in one pass, and
    writing out the end tags that HTML implies, leaves nothing to re-open; tags past the
    depth limit are dropped and their text stays. Ordinary markup comes out as it went in,
    bar those explicit end tags. nh3 still does all the sanitising afterwards, so a mistake
    here can only cost formatting, never let anything through.
    """

    def __init__(self) -> None:
        self.open: list[str] = []
        self.raw = ""  # inside <script>, <style> and the like, whose content is text

    def _innermost(self, names: frozenset[str], stop: frozenset[str]) -> int | None:
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index] in names:
                return index
            if self.open[index] in stop:
                return None
        return None

    def _close_from(self, index: int | None) -> str:
        if index is None:
            return ""
        closed = "".join(f"</{name}>" for name in reversed(self.open[index:]))
        del self.open[index:]
        return closed

    def __call__(self, tag: re.Match[str]) -> str:
        name = tag[2].lower()
        if self.raw:
            if tag[1] and name == self.raw:
                self.raw = ""
            return tag[0]
        if name in _VOID:
            return tag[0]
        if tag[1]:  # an end tag closes the innermost open element of its name, and all inside it
            index = self._innermost(frozenset({name}), _SCOPE - {name})
            if index is None:
                return tag[0]  # HTML ignores it (or makes an empty <p> of a stray </p>)
            return self._close_from(index + 1) + self._close_from(index)
        closed = self._close_from(self._innermost(frozenset({"p"}), _SCOPE | {"button"})) if name in _CLOSE_P else ""
        if name in _CLOSES:
            closed += self._close_from(self._innermost(*_CLOSES[name]))
        if name in _RAW_TEXT:
            self.raw = name
            return closed + tag[0]
        if len(self.open) >= NESTING_MAX:
            return closed
        self.open.append(name)
        return closed + tag[0]


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
        self.out.append(f"<{tag}" + "".join(f' {k}="{escape(_CONTROL.sub("", v))}"' for k, v in attrs.items()) + ">")

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
        data = _CONTROL.sub("", data)  # in a <pre> too: an escape sequence is no layout
        if "pre" not in self._stack:
            data = _NOISE.sub(" ", data).lstrip(self._strip)
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
    html = _CONTROL.sub("", html)  # they would go anyway; nh3 cannot even take a lone surrogate
    safe = nh3.clean(
        _TAG.sub(_Balancer(), html) if "<" in html else html,
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

# The years an article can be dated in. Far outside them a date is a mistake, and at the very
# edges (year 1 or 9999 in a far time zone) it cannot even be turned into UTC for the database.
EARLIEST_YEAR = 1970
LATEST_YEAR = 2100
_EARLIEST = datetime(EARLIEST_YEAR, 1, 1, tzinfo=UTC)
_AFTER_LATEST = datetime(LATEST_YEAR + 1, 1, 1, tzinfo=UTC)
DATE_RANGE = f"the years {EARLIEST_YEAR} to {LATEST_YEAR}"


def date_in_range(moment: datetime) -> bool:
    """Whether an aware ``moment`` falls in ``EARLIEST_YEAR`` to ``LATEST_YEAR`` (UTC).

    Comparing aware datetimes works from their offsets without converting either, so this
    is safe for 9999-12-31T23:59:59-12:00, which ``astimezone(UTC)`` cannot represent.
    """
    return _EARLIEST <= moment < _AFTER_LATEST


def parse_date(raw: str, zone: ZoneInfo) -> datetime | None:
    """An aware datetime from RFC 822 or ISO 8601 text; a time with no zone is read in ``zone``.

    None when it cannot be read. A date that can be read is returned even when it is not
    ``date_in_range``: the caller says which date it refuses, and why.
    """
    raw = raw.strip()
    if not raw:
        return None
    try:
        moment = parsedate_to_datetime(raw)
        if moment.tzinfo is None and raw.endswith("-0000"):  # RFC 5322: UTC, local zone unknown
            moment = moment.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        try:
            moment = datetime.fromisoformat(raw)
        except (ValueError, OverflowError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)
