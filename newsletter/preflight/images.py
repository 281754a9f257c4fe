"""The images check: alt text, declared sizes, and what fetching each image gave.

Pure: the images as the HTML declares them (``htmlscan.Image``) and the fetch results.
An image without ``alt`` is an error: readers with images off (the default in several
clients) or a screen reader get nothing, or the file name. Missing width or height, an
image over 1 MB or one that cannot be fetched are warnings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from newsletter.preflight.fetch import MAX_IMAGE_BYTES, LinkResult
from newsletter.preflight.findings import SHOWN, Finding, capped, counted, error, listed, short, warning
from newsletter.preflight.htmlscan import Image

CHECK = "images"


def image_urls(images: Sequence[Image], skip: Sequence[str] = ()) -> list[str]:
    """The distinct remote images worth fetching (not inline data, not ``skip`` prefixes)."""
    return [
        src
        for src in dict.fromkeys(i.src for i in images)
        if src.lower().startswith(("http://", "https://")) and not src.startswith(tuple(skip))
    ]


def markup_findings(images: Sequence[Image]) -> list[Finding]:
    """What the HTML says about its images, no network needed."""
    no_alt = [error(CHECK, f"no alt text: {short(i.src or '(no src)')}", i.src) for i in images if i.alt is None]
    found = capped(no_alt, SHOWN, "more images without alt text")
    for attribute in ("width", "height"):
        missing = list(dict.fromkeys(i.src for i in images if getattr(i, attribute) in (None, "")))
        if missing:
            found.append(
                warning(
                    CHECK,
                    f"{len(missing)} image{'s' if len(missing) > 1 else ''} with no {attribute} attribute "
                    f"(the layout jumps as it loads, and Outlook may draw it at its full size): "
                    f"{listed([short(s, 80) for s in missing], 3)}",
                    missing[0],
                )
            )
    empty = [i.src for i in images if not i.src]
    if empty:
        found.append(error(CHECK, f"{len(empty)} image{'s' if len(empty) > 1 else ''} with no src"))
    nowhere = [
        i.src for i in images if i.src and not i.src.lower().startswith(("http://", "https://", "data:", "cid:"))
    ]
    found += capped(
        [
            warning(CHECK, f"cannot be loaded by a mail client (not an http or https address): {short(s)}", s)
            for s in nowhere
        ],
        SHOWN,
        "more images with no web address",
    )
    return found


def fetch_findings(urls: Sequence[str], results: Mapping[str, LinkResult]) -> list[Finding]:
    """Images readers cannot load, or that cost them over 1 MB each."""
    unreachable: list[Finding] = []
    heavy: list[Finding] = []
    late = [url for url in urls if (r := results.get(url)) is not None and r.failure == "deadline"]
    for url in urls:
        result = results.get(url)
        if result is None or result.failure == "deadline":
            continue
        if result.failure or (result.status is not None and result.status >= 400):
            why = result.detail if result.failure else f"{result.status} {result.reason}".rstrip()
            unreachable.append(warning(CHECK, f"cannot be loaded ({why}): {short(url)}", url))
        elif result.size is not None and result.size > MAX_IMAGE_BYTES:
            size = "over 1 MB" if result.size == MAX_IMAGE_BYTES + 1 else f"{result.size / 1_000_000:.1f} MB"
            heavy.append(warning(CHECK, f"{size} (slow on a phone; keep images under 1 MB): {short(url)}", url))
    found = capped(unreachable, SHOWN, "more images that cannot be loaded") + capped(heavy, SHOWN, "more large images")
    if late:
        found.append(warning(CHECK, f"{counted(len(late), 'image')} not checked in time: {listed(late, 3)}", late[0]))
    return found
