"""The text part check: readers of the plain-text part (and spam filters comparing the two
parts) must get every story and every link the HTML part has.

Pure: the stories' headlines, the HTML part's links and the text part, all as readers see
them. Headlines are compared without whitespace, since the text part wraps them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from newsletter.preflight.fetch import canonical
from newsletter.preflight.findings import SHOWN, Finding, capped, error, short, warning

CHECK = "text part"
TEXT_URL = re.compile(r"https?://[^\s<>\"]+")  # the same rule tracking.py uses to find them
_SPACE = re.compile(r"\s+")


def text_links(text: str) -> list[str]:
    return TEXT_URL.findall(text)


def check_text_part(headlines: Sequence[str], html_links: Iterable[str], text: str) -> list[Finding]:
    """An error per story missing from the text part, a warning per missing web link."""
    flat = _SPACE.sub("", text)
    missing_stories = [
        error(CHECK, f"story missing from the plain-text part: {short(title, 100)}", title)
        for title in headlines
        if _SPACE.sub("", title) not in flat
    ]
    in_text = {canonical(u) for u in text_links(text)}
    missing_links = [
        warning(CHECK, f"link missing from the plain-text part: {short(url)}", url)
        for url in dict.fromkeys(html_links)
        if url.lower().startswith(("http://", "https://")) and canonical(url) not in in_text
    ]
    return capped(missing_stories, SHOWN, "more stories missing from the plain-text part") + capped(
        missing_links, SHOWN, "more links missing from the plain-text part"
    )
