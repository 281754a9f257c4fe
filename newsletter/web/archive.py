"""The public archive: every edition that went out, newest first, as pages and as an Atom feed.

Only what every reader got appears here: the edition's date, subject, lead headline and
story count, and a link to its public copy (``/editions/<date>``, which has no greeting
and no personal link). A skipped day, or an edition made but not sent yet, is in neither
list nor feed. Feed addresses start with ``[web] base_url``, never with the request's
Host header, so a cached feed cannot be made to point elsewhere.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from html import escape

from flask import Blueprint, Response, abort, render_template, request, url_for

from newsletter import routes
from newsletter.editions import counted, long_date
from newsletter.store.archive import ArchivedEdition, count_published_editions, published_editions
from newsletter.web import context

bp = Blueprint("archive", __name__)

PER_PAGE = 20
FEED_ENTRIES = 50
ATOM = "http://www.w3.org/2005/Atom"
_PAGE = re.compile(r"[1-9][0-9]{0,5}")  # page 1 to 999,999: anything else is not a page here
# Characters XML 1.0 cannot carry even escaped; a stored title is plain text, but may hold them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_BODY = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
ET.register_namespace("", ATOM)  # Atom as the default namespace: <feed>, not <ns0:feed>


@bp.get(routes.ARCHIVE)
def index() -> tuple[str, int]:
    """One page of the archive; ``?page=N`` for older ones, and a 404 past the last."""
    page = _page_number(request.args.get("page", "1"))
    with context().store.session() as session:
        total = count_published_editions(session)
        editions = published_editions(session, offset=(page - 1) * PER_PAGE, limit=PER_PAGE)
    if page > 1 and not editions:
        abort(404)
    older = url_for("archive.index", page=page + 1) if page * PER_PAGE < total else None
    newer = None if page == 1 else url_for("archive.index") if page == 2 else url_for("archive.index", page=page - 1)
    html = render_template(
        "web/archive.html",
        editions=editions,
        page=page,
        per_page=PER_PAGE,
        total=total,
        older=older,
        newer=newer,
        long_date=long_date,
        counted=counted,
    )
    return html, 200


def _page_number(raw: str) -> int:
    if not _PAGE.fullmatch(raw):
        abort(404)
    return int(raw)


@bp.get(routes.FEED)
def feed() -> Response:
    """Atom 1.0: one entry per edition that went out, the newest ``FEED_ENTRIES``."""
    ctx = context()
    with ctx.store.session() as session:
        editions = published_editions(session, limit=FEED_ENTRIES)
    body = atom_feed(editions, ctx.config.web.base_url, ctx.config.newsletter.name, ctx.clock.now())
    response = Response(body, mimetype="application/atom+xml")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def atom_feed(editions: list[ArchivedEdition], base_url: str, name: str, now: datetime) -> bytes:
    """The feed document, UTF-8 with its XML declaration (RFC 4287).

    The feed's and each entry's id are their permanent public addresses; ``updated`` is
    when the newest edition went out, so the document does not change between editions.
    """
    base = base_url.rstrip("/")
    root = ET.Element(f"{{{ATOM}}}feed")
    _text(root, "id", routes.url(base, routes.FEED))
    _text(root, "title", f"{name}: past editions")
    _text(root, "subtitle", f"Every edition of {name} that went out, newest first")
    _text(root, "updated", _stamp(editions[0].went_out if editions else now))
    _link(root, routes.url(base, routes.FEED), "self", "application/atom+xml")
    _link(root, routes.url(base, routes.ARCHIVE), "alternate", "text/html")
    author = ET.SubElement(root, f"{{{ATOM}}}author")
    _text(author, "name", name)
    _text(root, "generator", "Breakfast in red")
    for edition in editions:
        address = routes.url(base, routes.EDITION, day=edition.date.isoformat())
        entry = ET.SubElement(root, f"{{{ATOM}}}entry")
        _text(entry, "id", address)
        _text(entry, "title", edition.subject)
        _text(entry, "updated", _stamp(edition.went_out))
        _text(entry, "published", _stamp(edition.went_out))
        _link(entry, address, "alternate", "text/html")
        _text(entry, "summary", summary(edition))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def summary(edition: ArchivedEdition) -> str:
    """'Bridge reopens, and 11 more stories': the lead headline and the story count."""
    stories = counted(edition.story_count, "story", "stories")
    if not edition.lead_title:
        return stories.capitalize()
    more = edition.story_count - 1
    if more <= 0:
        return f"{edition.lead_title} (the one story)"
    return f"{edition.lead_title}, and {counted(more, 'more story', 'more stories')} ({stories} in all)"


def _text(parent: ET.Element, tag: str, value: str) -> None:
    ET.SubElement(parent, f"{{{ATOM}}}{tag}").text = _NOT_XML.sub("", value)


def _link(parent: ET.Element, href: str, rel: str, kind: str) -> None:
    ET.SubElement(parent, f"{{{ATOM}}}link", {"href": href, "rel": rel, "type": kind})


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_archive_links(html: str, *, archive: str, subscribe: str) -> str:
    """``html`` with a small bar at the top of its body linking to ``archive`` and the sign-up page.

    Inline styles only: the edition page's policy allows them (it is email HTML) and
    loads no stylesheet of ours.
    """
    bar = (
        '<div style="font-family:Arial,Helvetica,sans-serif;font-size:14px;line-height:1.5;text-align:center;'
        'padding:8px;background:#f4efe9"><a href="'
        + escape(archive)
        + '" style="color:#b0141f">All past editions</a> · <a href="'
        + escape(subscribe)
        + '" style="color:#b0141f">Subscribe</a></div>'
    )
    found = _BODY.search(html)
    if found is None:
        return bar + html
    return html[: found.end()] + bar + html[found.end() :]
