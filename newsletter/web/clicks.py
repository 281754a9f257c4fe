"""Tracked links and the open image: ``/c/<code>`` counts a click and redirects, ``/o/<code>.gif`` counts an open.

A link's code is ``<edition>-<reader>-<signature>-<position>`` in hex: the reader code
of ``newsletter.codes`` (purpose ``click``) and the link's position in the edition. The
redirect goes only to the URL stored for that position of that edition
(``edition_links``), never to anything the request names, so the endpoint is no open
redirect; a position is not signed, so a reader who edits it reaches another link of the
same edition, which is no harm. Whatever is wrong with a code (cut short, forged, an
edition or position that does not exist) gets a small "this link does not work" page
with 404, and nothing is recorded.

What is recorded, and when: a GET from a reader, while ``[tracking] clicks`` is on (links
already sent keep redirecting when it is turned off); not a HEAD, not a test copy
(``send --to``, reader 0), not a link scanner within ``scanner_seconds`` of the send (the
rule is in ``newsletter.clickrecorder``). The click is queued for the batch writer, so the
answer never waits for the database: an edition's links are read once per process when
it has gone out, and kept. A click changes no subscription, sets no cookie and needs no
session; the redirect carries ``Referrer-Policy: no-referrer``, so the site linked to
never sees the URL that names the reader.

The open image is served only with ``[tracking] opens = true`` (404 otherwise, and for a
forged code: only codes we made are in mails, so nobody real sees a broken image). Every
load is recorded (position 0); the report counts readers, not loads.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, abort, current_app, make_response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from newsletter import routes
from newsletter.clickrecorder import ClickRecorder, looks_like_scanner
from newsletter.codes import CLICK, Attribution, ReaderCodes
from newsletter.context import Context
from newsletter.errors import TokenError
from newsletter.store import Store
from newsletter.store.clicks import OPEN_POSITION, ClickRow, edition_links
from newsletter.tracking import trackable_url
from newsletter.web import CONTEXT, context

bp = Blueprint("clicks", __name__)

MAX_CODE = 64  # the longest code made is 41 characters; anything much longer is not one of ours
CACHED_EDITIONS = 256  # editions whose links a process keeps: far more than are clicked on any day
TEST_COPY = 0  # the reader id of copies sent with `send --to`
_POSITION = re.compile(r"[0-9a-fA-F]{1,8}")
# The smallest transparent GIF: 1x1, one transparent colour, 43 bytes.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


class _LinkCache:
    """Editions' links by id, kept only once they are fixed (the edition has gone out), newest used last."""

    def __init__(self, store: Store, size: int = CACHED_EDITIONS) -> None:
        self._store = store
        self._size = size
        self._lock = threading.Lock()
        self._fixed: OrderedDict[int, dict[int, str]] = OrderedDict()

    def links_of(self, edition_id: int) -> dict[int, str] | None:
        """The edition's links by position; None when there is no such edition."""
        with self._lock:
            links = self._fixed.get(edition_id)
            if links is not None:
                self._fixed.move_to_end(edition_id)
                return links
        with self._store.reading() as session:  # no write lock on SQLite: a send's commits go on
            found = edition_links(session, edition_id)
        if found is None:
            return None
        # Checked again here, once per edition: a row written by other means than
        # save_edition_links must not become a Location header.
        links = {position: url for position, url in found.links.items() if trackable_url(url)}
        if found.fixed:
            with self._lock:
                self._fixed[edition_id] = links
                while len(self._fixed) > self._size:
                    self._fixed.popitem(last=False)
        return links


@dataclass(frozen=True)
class Tracking:
    """The click endpoint's collaborators, one per app."""

    codes: ReaderCodes
    recorder: ClickRecorder
    links: _LinkCache


def install(app: Flask) -> ClickRecorder:
    """Add the routes to ``app`` with a recorder of their own; returns it (it writes from the first click on).

    Called by ``create_app`` after the app's ``Context`` is set. The recorder is closed,
    and what it holds written, when the process exits; tests call ``flush()``.
    """
    found: Context = app.extensions[CONTEXT]
    recorder = ClickRecorder(found.store, scanner_seconds=found.config.tracking.scanner_seconds)
    app.extensions["clicks"] = Tracking(
        codes=ReaderCodes(found.config.require_secret_key(), CLICK),
        recorder=recorder,
        links=_LinkCache(found.store),
    )
    app.register_blueprint(bp)
    return recorder


def recorder_of(app: Flask) -> ClickRecorder:
    """The app's click recorder (to flush or close it)."""
    tracking: Tracking = app.extensions["clicks"]
    return tracking.recorder


def _tracking() -> Tracking:
    tracking: Tracking = current_app.extensions["clicks"]
    return tracking


@bp.get(routes.CLICK)
def click(code: str) -> BaseResponse:
    """Redirect to the link the code names, and count the click (GET by a reader only)."""
    tracking = _tracking()
    found = _read_link_code(tracking.codes, code)
    if found is None:
        return _not_found()
    who, position = found
    links = tracking.links.links_of(who.edition_id)
    url = links.get(position) if links is not None else None
    if url is None:
        return _not_found()
    ctx = context()
    if ctx.config.tracking.clicks:
        _record(ctx, tracking, who, position)
    response = redirect(url, code=302)
    _private(response)
    return response


@bp.get(routes.OPEN)
def open_image(name: str) -> Response:
    """The 1×1 image of ``[tracking] opens``: count an open (position 0) and answer a transparent GIF."""
    ctx = context()
    if not ctx.config.tracking.opens or len(name) > MAX_CODE:
        abort(404)
    code, dot, extension = name.rpartition(".")
    if not dot or extension != "gif":
        abort(404)
    tracking = _tracking()
    try:
        who = tracking.codes.read(code)
    except TokenError:
        abort(404)
    if tracking.links.links_of(who.edition_id) is None:
        abort(404)
    _record(ctx, tracking, who, OPEN_POSITION)
    response = make_response(PIXEL)
    response.mimetype = "image/gif"
    _private(response)
    return response


def _read_link_code(codes: ReaderCodes, code: str) -> tuple[Attribution, int] | None:
    """The reader code and the position in a link's code, or None when it is not a genuine one."""
    if len(code) > MAX_CODE:
        return None
    signed, dash, position = code.rpartition("-")
    if not dash or not _POSITION.fullmatch(position):
        return None
    try:
        who = codes.read(signed)
    except TokenError:
        return None
    number = int(position, 16)
    return (who, number) if number > OPEN_POSITION else None


def _record(ctx: Context, tracking: Tracking, who: Attribution, position: int) -> None:
    """Queue the click unless it is a HEAD (scanners probe with it) or a test copy's."""
    if request.method != "GET" or who.subscriber_id == TEST_COPY:
        return
    row = ClickRow(who.edition_id, position, who.subscriber_id, ctx.clock.now())
    tracking.recorder.record(row, scanner=looks_like_scanner(request.headers.get("User-Agent")))


def _private(response: BaseResponse) -> None:
    """Never cached (every load is a reader's), never indexed, and the URL naming the reader never passed on."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"


def _not_found() -> Response:
    response = make_response(render_template("web/link_not_found.html"), 404)
    _private(response)
    return response
