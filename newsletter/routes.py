"""Every public address of the web app, written once: the rules it serves and the links mails carry.

The web's views register these rules, and mails, previews, the archive's feed and the
sign-up form for article pages build their links from the same ones, so a path is
changed in one place and a link in a mail never points where no view answers.
"""

from __future__ import annotations

import re
from urllib.parse import quote

SUBSCRIBE = "/subscribe"
CONFIRM = "/confirm/<token>"
UNSUBSCRIBE = "/unsubscribe/<token>"
ARCHIVE = "/editions/"
EDITION = "/editions/<day>"
FEED = "/editions/feed.xml"
CLICK = "/c/<path:code>"
OPEN = "/o/<path:name>"

_VARIABLE = re.compile(r"<(?:(\w+):)?(\w+)>")


def url(base_url: str, rule: str, **values: str) -> str:
    """The absolute address of ``rule`` under ``[web] base_url``, its variables filled in.

    ``url(base, UNSUBSCRIBE, token=token)``. Values are percent-encoded (a ``path:``
    variable keeps its slashes), so whatever a caller passes stays inside its own segment.
    """

    def fill(match: re.Match[str]) -> str:
        return quote(values[match[2]], safe="/" if match[1] == "path" else "")

    return base_url.rstrip("/") + _VARIABLE.sub(fill, rule)


def prefix(base_url: str, rule: str) -> str:
    """The address of ``rule`` up to its first variable, for code that appends the value itself.

    The send personalises each copy by pasting a token after this prefix, and click
    tracking pastes a marker its template fills in per reader: neither can go through
    ``url`` per message or per link without encoding what must stay verbatim.
    """
    return base_url.rstrip("/") + rule.split("<", 1)[0]
