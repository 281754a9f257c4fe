"""The sign-up form other pages embed, and what its ``source`` field means.

A newsroom's article pages carry a small form (or only a link) that posts to
``{base_url}/subscribe``. It must work with no script and load nothing from anywhere,
because the pages it sits on have their own Content-Security-Policy and their readers
their own blockers; so it is plain HTML with a few inline styles. It has no time zone
field (a reader cannot be expected to type one, and guessing it takes a script): a page
that runs scripts may add a ``timezone`` field itself, checked like our own form's.

Each sign-up records where it came from, for the growth chart of sign-ups by source:
``web`` for our own page, else ``PREFIX:PATH`` such as ``article:/news/bridge-reopens``.
The form's hidden ``source`` field says ``article:`` (the prefix, nothing after the
colon) and the path is then taken from the browser's ``Referer``, or the CMS template
writes the page's path after the colon itself. The path is cleaned and cut to fit the
column: no query string or fragment (they carry tracking codes and personal data), only
printable characters. Pure functions: no request, no database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlsplit

from newsletter import routes
from newsletter.subscribers import MAX_EMAIL, MAX_NAME, MAX_SOURCE, InvalidTextError

DEFAULT_PREFIX = "article"
WEB = "web"  # what our own sign-up page records
MAX_PREFIX = 20  # leaves 29 characters of the 50-character column for the path
MAX_RAW_SOURCE = 2000  # longer than any real path: refused rather than cut
_PREFIX = re.compile(rf"[a-z][a-z0-9_-]{{0,{MAX_PREFIX - 1}}}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NOT_IN_PATHS = frozenset('"<>\\^`{|}')  # a browser percent-encodes these in a URL (RFC 3986)
SOURCE_FIELD = "the form's source"


def valid_prefix(prefix: str) -> bool:
    """Whether ``prefix`` can start a source: lower-case letters, digits, "-" or "_", at most 20."""
    return _PREFIX.fullmatch(prefix) is not None


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, lower-cased and without a default port; else None.

    Browsers send an Origin header without the default port, and staff may write one in
    ``[web] embed_origins``; both are compared in this form.
    """
    if not url or len(url) > 4096 or not url.isascii() or not url.isprintable():
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a port that is not a number, an unclosed IPv6 bracket
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or any(c in host for c in "/\\@ "):
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    shown_port = "" if port is None or port == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{shown_port}"


def page_path(url: str | None) -> str:
    """The path of a page's URL (a Referer), or "" when there is none worth recording.

    A bare "/" is not recorded: it is what a browser sends to another site by default
    (``strict-origin-when-cross-origin``), the site rather than the page. Never raises: a
    Referer is whatever the client sent, so anything odd is simply not used.
    """
    if not url or len(url) > MAX_RAW_SOURCE or not url.isprintable():
        return ""
    try:
        path = _clean_path(urlsplit(url).path)
    except (ValueError, InvalidTextError):
        return ""
    return "" if path == "/" else path


def _clean_path(path: str) -> str:
    if not path:
        return ""
    if not path.isprintable() or any(c.isspace() or c in _NOT_IN_PATHS for c in path):
        raise InvalidTextError(SOURCE_FIELD, "must be a page's path: printable, without spaces, quotes or <>")
    return path if path.startswith("/") else "/" + path


def signup_source(raw: str, page: str = "") -> str:
    """The source to record for a sign-up form that sent ``raw`` from the page whose path is ``page``.

    "" and "web" are our own page. "PREFIX:" takes ``page``; "PREFIX:PATH" keeps PATH,
    without any scheme, host, query or fragment (a whole URL is welcome there). A bare
    "PREFIX" counts as "PREFIX:". The result is cut to the column's 50 characters.

    :param page: the embedding page's path, already cleaned (see ``page_path``).
    :raises InvalidTextError: not of that shape, with control characters or spaces in the
        path, or absurdly long: the form is broken, or someone is probing it.
    """
    text = raw.strip()
    if len(text) > MAX_RAW_SOURCE:
        raise InvalidTextError(SOURCE_FIELD, f"has at most {MAX_RAW_SOURCE} characters")
    if not text or text == WEB:
        return WEB
    prefix, _, rest = text.partition(":")
    if not valid_prefix(prefix):
        raise InvalidTextError(SOURCE_FIELD, "must start with a label of lower-case letters, digits, - or _")
    if not rest.isprintable():  # before urlsplit, which silently drops tabs and line breaks
        raise InvalidTextError(SOURCE_FIELD, "cannot contain control characters or line breaks")
    try:
        path = (_clean_path(urlsplit(rest).path) if rest else "") or page
    except ValueError as exc:  # urlsplit: an unclosed IPv6 bracket in a would-be URL
        raise InvalidTextError(SOURCE_FIELD, "must be a page's path") from exc
    return f"{prefix}:{path}"[:MAX_SOURCE]


# --- the snippet ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    """What ``newsletter embed`` prints, from the configuration and its options."""

    base_url: str
    name: str
    publication: str
    prefix: str = DEFAULT_PREFIX
    path: str = ""  # a CMS template expression that prints the page's path, written as it is

    @property
    def action(self) -> str:
        return routes.url(self.base_url, routes.SUBSCRIBE)

    @property
    def source(self) -> str:
        return f"{self.prefix}:{self.path}"


def refuse_bad_snippet(snippet: Snippet) -> None:
    """``InvalidTextError`` for a prefix or path that would give a broken form or a refused source."""
    if not valid_prefix(snippet.prefix):
        raise InvalidTextError(
            "--source-prefix",
            f"must be lower-case letters, digits, - or _, starting with a letter, at most {MAX_PREFIX}",
        )
    if not snippet.path.isprintable() or '"' in snippet.path or "\\" in snippet.path:
        # Written into an attribute as it is (it is the CMS's own template code): a quote
        # would end the attribute early, and control characters have no place in HTML.
        raise InvalidTextError("--path", 'cannot hold quotes ("), backslashes or control characters')


# Just enough to be legible on any page; a page whose CSP refuses inline styles shows
# the form in its own look instead, and nothing breaks.
_BOX = "margin:1.5em 0;padding:1em;border:1px solid #ccc;max-width:32em"
_FIELD = "display:block;box-sizing:border-box;width:100%;max-width:24em;margin:.25em 0 .75em;padding:.4em;font:inherit"


def form_html(snippet: Snippet) -> str:
    """A sign-up form that needs no script, no stylesheet and no cookie: paste it into a page.

    The honeypot is hidden with the ``hidden`` attribute rather than a style, so it stays
    hidden on a page whose CSP refuses inline styles.
    """
    refuse_bad_snippet(snippet)
    name, publication, action = escape(snippet.name), escape(snippet.publication), escape(snippet.action)
    source = snippet.prefix + ":" + snippet.path  # the prefix is [a-z0-9_-]; the path is the CMS's code
    lines = [
        f"<!-- {name}: sign-up form made by `newsletter embed`. No script; nothing loaded from elsewhere.",
        f"     It posts to {action}, which takes it from the origins in [web] embed_origins.",
        "     A page may add a field named timezone holding the reader's IANA zone (Europe/London). -->",
        f'<form method="post" action="{action}" accept-charset="utf-8" style="{_BOX}">',
        f'  <p style="margin:0 0 .5em;font-weight:bold">Get {name} every morning</p>',
        f'  <p style="margin:0 0 .75em">The day’s stories from {publication}, in your inbox before breakfast.',
        "    Free, and you can leave with one click.</p>",
        '  <label style="display:block">Email address',
        f'    <input name="email" type="email" required maxlength="{MAX_EMAIL}" autocomplete="email"',
        f'      spellcheck="false" style="{_FIELD}"></label>',
        '  <label style="display:block">Your name (optional)',
        f'    <input name="name" type="text" maxlength="{MAX_NAME}" autocomplete="name" style="{_FIELD}"></label>',
        f'  <input type="hidden" name="source" value="{source}">',
        '  <p hidden><label>Leave this empty <input name="website" type="text" tabindex="-1" autocomplete="off">',
        "  </label></p>",
        '  <button type="submit">Subscribe</button>',
        '  <small style="display:block;margin-top:.5em">We email you a link to confirm;',
        "    nothing is sent until you click it.</small>",
        "</form>",
    ]
    return "\n".join(lines) + "\n"


def link_html(snippet: Snippet) -> str:
    """Only a link to the sign-up page, unstyled, carrying the source.

    ``referrerpolicy`` lets the sign-up page see which article the reader came from when
    the link does not say; the query string of that address is never recorded.
    """
    refuse_bad_snippet(snippet)
    prefix = quote(snippet.prefix + ":", safe="")
    href = f"{escape(snippet.action)}?source={prefix}{snippet.path}"
    return (
        f'<a href="{href}" referrerpolicy="no-referrer-when-downgrade">'
        f"Get {escape(snippet.name)} every morning: sign up</a>\n"
    )
