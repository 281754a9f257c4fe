"""Tracked links: the edition's links to its stories and the site, rewritten once per edition.

Each link to a story or to the site becomes ``{base_url}/c/{marker}-{position}``, where the
marker is replaced per reader by their signed code (``newsletter.codes``) at byte level,
like the greeting, so the CSS is still inlined once and every copy is still a join of
pre-encoded segments. ``position`` numbers the edition's distinct link targets from 1; the
click endpoint redirects only to a target stored for that edition and position, so a
tracked link can never be turned into an open redirect.

Pure: text in, text and the list of targets out. Which links count: http(s) links to the
host of a story of this edition or of ``[web] base_url``. Not the unsubscribe link (it
must work in one click, with no redirect in between), not mailto:, not images.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from newsletter import routes

_HREF = re.compile(r'(<a\s[^>]*?href=")([^"]*)(")', re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>\"]+")
_BODY_END = re.compile(r"</body>", re.IGNORECASE)


@dataclass(frozen=True)
class LinkPolicy:
    """What to do with the links of one edition."""

    base_url: str
    clicks: bool
    opens: bool
    hosts: frozenset[str]  # links to these hosts are tracked
    story_urls: frozenset[str]  # these get UTM parameters, when ``utm`` is set
    utm: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Tracked:
    """The email HTML and text with tracked links, and the targets by position (1-based)."""

    html: str
    text: str
    links: tuple[str, ...]


def link_policy(
    base_url: str,
    story_urls: Iterable[str],
    *,
    clicks: bool,
    opens: bool,
    utm: bool,
    utm_source: str,
    utm_medium: str,
    campaign: str,
    day: date,
) -> LinkPolicy:
    """The policy for one edition: its stories' hosts and the site are tracked."""
    stories = frozenset(story_urls)
    hosts = {_host(url) for url in (*stories, base_url)} - {""}
    params = (("utm_source", utm_source), ("utm_medium", utm_medium), ("utm_campaign", f"{campaign}-{day:%Y-%m-%d}"))
    return LinkPolicy(base_url.rstrip("/"), clicks, opens, frozenset(hosts), stories, params if utm else ())


MAX_URL = 2048  # what edition_links.url holds


def trackable_url(url: str) -> bool:
    """Whether a link can go through the click endpoint: absolute http(s) with a host, no
    control characters or spaces, at most ``MAX_URL`` long; so a redirect's Location can
    never carry a line break or point at a ``javascript:`` or ``data:`` URL."""
    return bool(_host(url))


def _host(url: str) -> str:
    """The host of a trackable URL, else ""."""
    if not url or len(url) > MAX_URL or any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F for c in url):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed IPv6 host, say
        return ""
    return (parts.hostname or "").lower() if parts.scheme in ("http", "https") else ""


def with_utm(url: str, params: Sequence[tuple[str, str]]) -> str:
    """``url`` with the UTM parameters added, keeping its own query (and its own utm_* if set)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {name for name, _ in query}
    query += [(name, value) for name, value in params if name not in present]
    return urlunsplit(parts._replace(query=urlencode(query)))


def track(html: str, text: str, marker: str, policy: LinkPolicy, personal: Sequence[str] = ()) -> Tracked:
    """Rewrite the email's links by ``policy``; ``marker`` stands for each reader's code.

    A link holding one of the ``personal`` markers (the unsubscribe link) is left alone.
    """
    positions: dict[str, int] = {}
    untouched = (marker, *personal)
    clicks = routes.prefix(policy.base_url, routes.CLICK)

    def target(url: str) -> str:
        if any(m in url for m in untouched):
            return url
        if policy.utm and url in policy.story_urls:
            url = with_utm(url, policy.utm)
        if not policy.clicks or _host(url) not in policy.hosts:
            return url
        position = positions.setdefault(url, len(positions) + 1)
        return f"{clicks}{marker}-{position:x}"

    def in_html(match: re.Match[str]) -> str:
        url = html_lib.unescape(match[2])
        return match[1] + html_lib.escape(target(url), quote=True) + match[3]

    html = _HREF.sub(in_html, html)
    text = _TEXT_URL.sub(lambda match: target(match[0]), text)
    if policy.opens:
        pixel = (
            f'<img src="{routes.prefix(policy.base_url, routes.OPEN)}{marker}.gif" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0">'
        )
        html, found = _BODY_END.subn(pixel + "</body>", html, count=1)
        if not found:
            html += pixel
    return Tracked(html, text, tuple(positions))


def untrack(text: str, marker: str, base_url: str, links: Sequence[str], *, escape: bool) -> str:
    """The links put back as they were, for a preview: staff clicking one must reach the story."""
    prefix = f"{routes.prefix(base_url, routes.CLICK)}{marker}-"

    def original(match: re.Match[str]) -> str:
        position = int(match[1], 16)
        if not 0 < position <= len(links):
            return match[0]
        return html_lib.escape(links[position - 1], quote=True) if escape else links[position - 1]

    return re.sub(re.escape(prefix) + r"([0-9a-f]{1,8})", original, text)
