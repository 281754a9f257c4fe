"""The reader's pages: subscribe, confirm, unsubscribe (RFC 8058 one-click too) and view-in-browser.

Two rules shape them. A GET never changes a subscription except the confirm link the
reader asked for (link scanners fetch every URL in an email); and no answer tells a
stranger whether an address is on the list.
"""

from __future__ import annotations

import logging
import re
from datetime import date

from flask import Blueprint, Response, abort, current_app, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from newsletter import routes
from newsletter.config import Config
from newsletter.embed import WEB, origin_of, page_path, signup_source
from newsletter.errors import TokenError, TokenExpiredError, ValidationError
from newsletter.store.editions import edition_for, has_gone_out
from newsletter.store.models import SubscriberStatus
from newsletter.subscribers import (
    MAX_EMAIL,
    MAX_NAME,
    TIMEZONE_FIELD,
    ConfirmResult,
    InvalidAddressError,
    InvalidTextError,
    LeaveResult,
    clean_name,
    confirm_subscription,
    leave,
    normalise_email,
    request_subscription,
    subscriber_for,
)
from newsletter.timezones import MAX_ZONE, check_zone, zone_names
from newsletter.tokens import CONFIRM, UNSUBSCRIBE
from newsletter.web import context, transport_factory
from newsletter.web.archive import with_archive_links
from newsletter.web.mail import deliver_now, queue_for
from newsletter.web.security import EDITION_CSP, PAGE_CSP, allow_attempt, client_key, recipient_key

log = logging.getLogger(__name__)

bp = Blueprint("public", __name__)

HONEYPOT = "website"
# Sign-up mails (confirm links or "you already get it") one address can receive per hour,
# whoever fills in the form and from however many networks.
MAILS_PER_ADDRESS_PER_HOUR = 3
MAX_FORM_FIELDS = 50  # the form has seven; as many as MAX_FORM_PARTS lets a multipart body hold
# The sign-up page runs one script, our own static file that fills in the reader's time zone
# (static/timezone.js): scripts from this site only, never inline ones, nothing else loosened.
SUBSCRIBE_CSP = PAGE_CSP + "; script-src 'self'"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@bp.get("/")
def index() -> BaseResponse:
    return redirect(url_for("public.subscribe"))


Form = tuple[str, int, dict[str, str]]


def _subscribe_form(
    status: int = 200,
    *,
    email: str = "",
    name: str = "",
    source: str = "",
    timezone: str = "",
    errors: dict[str, str] | None = None,
) -> Form:
    """The form, with what was typed; a fresh one (GET) lets the script guess the time zone.

    Once the reader has sent it, the zone field keeps what they left there, even empty.
    """
    return (
        render_template(
            "web/subscribe.html",
            email=email[:MAX_EMAIL],
            name=name[:MAX_NAME],
            timezone=timezone[:MAX_ZONE],
            guess=request.method == "GET",
            zones=zone_names(),
            source="" if source == WEB else source,
            errors=errors or {},
            max_email=MAX_EMAIL,
            max_name=MAX_NAME,
            max_zone=MAX_ZONE,
            honeypot=HONEYPOT,
        ),
        status,
        {"Content-Security-Policy": SUBSCRIBE_CSP},
    )


@bp.get(routes.SUBSCRIBE)
def subscribe() -> Form:
    """The form; ``?email=`` and ``?source=`` fill it in (a link from an article page), and never subscribe.

    Values that could not have come from an honest link are dropped rather than refused:
    the reader still gets a form to fill in.
    """
    email = request.args.get("email", "").strip()
    if len(email) > MAX_EMAIL or not email.isprintable():
        email = ""
    source = ""
    if "source" in request.args:
        try:
            source = signup_source(request.args["source"], _article_path(context().config))
        except InvalidTextError:
            source = ""
    return _subscribe_form(email=email, source=source)


@bp.post(routes.SUBSCRIBE)
def subscribe_post() -> BaseResponse | Form | tuple[str, int]:
    """Sign up: check where the form came from, validate, rate-limit, record a pending reader and queue its mail.

    The form may come from our own page (held to the CSRF token) or be embedded in an
    article page on an origin listed in ``[web] embed_origins`` (``newsletter embed``),
    whose first visit can carry no cookie of ours and so no token; the double opt-in, the
    honeypot and both rate limits hold either way.
    """
    ctx = context()
    if sum(1 for _ in request.form.items(multi=True)) > MAX_FORM_FIELDS:
        abort(413)  # werkzeug counts the parts of a multipart form only; this counts urlencoded ones too
    refused = _refuse_foreign_form(ctx.config)
    if refused is not None:
        return refused
    email, name = request.form.get("email", ""), request.form.get("name", "")
    timezone = request.form.get(TIMEZONE_FIELD, "")
    try:
        source, broken_source = signup_source(request.form.get("source", ""), _article_path(ctx.config)), False
    except InvalidTextError:
        source, broken_source = WEB, True
    client = client_key(ctx.config.web.secret_key, request.remote_addr)
    with ctx.store.session() as session:
        allowed = allow_attempt(session, "subscribe", client, ctx.clock.now(), ctx.config.web.subscribe_per_hour)
    if not allowed:
        log.warning("sign-up rate limit reached for a client")
        problem = "Too many sign-ups from your network in the last hour. Please try again later."
        return _subscribe_form(429, email=email, name=name, source=source, timezone=timezone, errors={"form": problem})
    if request.form.get(HONEYPOT):
        log.info("sign-up with the hidden field filled in: ignored")
        return redirect(url_for("public.check_inbox"), code=303)
    errors: dict[str, str] = {}
    try:
        normalise_email(email)
    except InvalidAddressError as exc:
        errors["email"] = _address_problem(exc)
    try:
        clean_name(name)
    except InvalidTextError as exc:
        errors["name"] = f"Your name {exc.problem}."
    zone = ""
    try:
        zone = check_zone(timezone, TIMEZONE_FIELD)
    except ValidationError as exc:
        errors["timezone"] = _zone_problem(exc)
        if exc.reason in ("control", "encoding"):
            timezone = ""  # not worth showing again: no browser sends these from a text field
    if broken_source:
        # A hidden field the reader cannot fix: show our own form, which no longer carries it.
        log.warning("sign-up form with a source that cannot be recorded: refused")
        errors["form"] = "This sign-up form sent something we cannot use. Please sign up here instead."
    if errors:
        return _subscribe_form(400, email=email, name=name, source=source, timezone=timezone, errors=errors)
    now = ctx.clock.now()
    with ctx.store.session() as session:
        signup = request_subscription(session, email, ctx.clock, name=name, source=source, timezone=zone)
        recipient = recipient_key(ctx.config.web.secret_key, signup.email)
        # Queued mails count too: the limit holds while the mail server is down.
        may_mail = allow_attempt(session, "signup-mail", recipient, now, MAILS_PER_ADDRESS_PER_HOUR)
        mail_id = queue_for(session, signup, now) if may_mail else None
    if mail_id is not None:
        deliver_now(ctx, transport_factory(), mail_id, signup.subscriber_id)
    else:  # someone is filling a stranger's inbox through the form
        log.warning(
            "sign-up mail to subscriber %d held back: %d sent this hour",
            signup.subscriber_id,
            MAILS_PER_ADDRESS_PER_HOUR,
        )
    return redirect(url_for("public.check_inbox"), code=303)


# --- where a sign-up form came from --------------------------------------------------------


def _posted_from() -> str | None:
    """The origin the browser says the form was on: Origin, else the Referer's; "null" when hidden.

    None when the request names neither (not a browser, or a very old one).
    """
    claimed = request.headers.get("Origin")
    if claimed is not None:
        return origin_of(claimed) or "null"
    if request.referrer is None:
        return None
    return origin_of(request.referrer) or "null"


def _own_hosts(config: Config) -> set[str]:
    """Our host[:port] as base_url names it and as this request reached us.

    Compared without the scheme: behind a proxy that does not pass X-Forwarded-Proto the
    app sees http while the browser says https, and our own form must not be refused
    for that (it still needs its CSRF token).
    """
    hosts = {origin_of(config.web.base_url), origin_of(request.host_url)}
    return {h.split("://", 1)[1] for h in hosts if h}


def _is_own(origin: str, config: Config) -> bool:
    return origin != "null" and origin.split("://", 1)[1] in _own_hosts(config)


def _listed(config: Config) -> set[str]:
    return {found for found in map(origin_of, config.web.embed_origins) if found}


def _refuse_foreign_form(config: Config) -> tuple[str, int] | None:
    """None when the post may go on; else the 403 page saying why and what to configure.

    * From a listed origin, without a CSRF token: an embedded form; it goes on.
    * From our own origin (or a listed one, with a token): today's CSRF check, which
      answers 400 "This form has expired" itself when the token is wrong.
    * From any other origin, from a page that hides its origin, or from nowhere at all
      and without a token: refused with 403.
    """
    has_token = bool(request.form.get("csrf_token"))
    origin = _posted_from()
    listed = _listed(config)
    if origin is not None and origin in listed and not has_token:
        return None
    cross_site = request.headers.get("Sec-Fetch-Site") == "cross-site"
    if (origin is not None and (_is_own(origin, config) or origin in listed)) or (
        origin is None and has_token and not cross_site
    ):
        current_app.extensions["csrf"].protect()  # raises CSRFError: the friendly 400 page
        return None
    shown = origin if origin not in (None, "null") else ""
    log.warning("sign-up form posted from %s, which is not in [web] embed_origins: refused", shown or "an unnamed page")
    page = render_template("web/subscribe_refused.html", origin=shown, example=shown or "https://news.example.com")
    return page, 403


def _article_path(config: Config) -> str:
    """The path of the article page the reader came from, when the Referer shows one on a listed origin.

    Our own pages are not articles: a form re-shown after a mistake posts from /subscribe.
    """
    referer = request.referrer
    origin = origin_of(referer)
    if origin is None or origin not in _listed(config):
        return ""
    path = page_path(referer)
    root = request.script_root
    if _is_own(origin, config) and (not root or path == root or path.startswith(root + "/")):
        return ""
    return path


def _address_problem(exc: InvalidAddressError) -> str:
    if exc.reason == InvalidAddressError.EMPTY:
        return "Please enter your email address."
    if exc.reason == InvalidAddressError.LINE_BREAK:
        return "An email address cannot contain line breaks."
    if exc.reason == InvalidAddressError.TOO_LONG:
        return f"An email address has at most {MAX_EMAIL} characters."
    return f"That is not a valid email address: {exc.detail}" if exc.detail else "That is not a valid email address."


def _zone_problem(exc: ValidationError) -> str:
    """The form's words for a time zone ``check_zone`` refused, chosen by its ``reason``."""
    if exc.reason == "unknown":
        return "We do not know that time zone. Pick one from the list, such as Europe/London, or leave it empty."
    if exc.reason in ("control", "encoding"):
        return "A time zone name has no line breaks or special characters. Pick one from the list, or leave it empty."
    return "That is not a time zone name. Use one such as Europe/London or America/New_York, or leave it empty."


def _link_state(exc: TokenError) -> str:
    """The page a link that ``Tokens.read`` refused gets: "expired" or "invalid"."""
    return "expired" if isinstance(exc, TokenExpiredError) else "invalid"


@bp.get("/subscribe/check-your-inbox")
def check_inbox() -> str:
    return render_template("web/check_inbox.html", days=context().config.web.confirm_days)


@bp.get(routes.CONFIRM)
def confirm(token: str) -> tuple[str, int]:
    """Double opt-in: the link from the confirmation email makes the reader active."""
    if request.method == "HEAD":  # link scanners probe with HEAD; only a visit confirms
        return "", 200
    ctx = context()
    try:
        claim = ctx.tokens.read(CONFIRM, token, ctx.config.web.confirm_days)
    except TokenError as exc:
        return render_template("web/confirm.html", state=_link_state(exc)), 400
    with ctx.store.session() as session:
        result = confirm_subscription(session, claim, ctx.clock, source="web", issued_at=claim.issued_at)
    refused = (ConfirmResult.UNKNOWN, ConfirmResult.STALE, ConfirmResult.SUPERSEDED)
    status = 400 if result in refused else 200
    return render_template("web/confirm.html", state=result.value), status


@bp.route(routes.UNSUBSCRIBE, methods=["GET", "POST"])
def unsubscribe(token: str) -> Response:
    """GET shows a button and changes nothing; POST (the button, or RFC 8058 one-click) unsubscribes.

    The POST needs no cookie and no form token (the signed URL is the authority), never
    redirects, answers 200 and can be repeated: that is what mailbox providers expect of
    ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``.
    """
    ctx = context()
    try:
        claim = ctx.tokens.read(UNSUBSCRIBE, token, ctx.config.web.unsubscribe_days)
    except TokenError as exc:
        return _unsubscribe_page(_link_state(exc), 400)
    if request.method == "POST":
        source = "web" if request.form.get("via") == "page" else "one-click"
        with ctx.store.session() as session:
            result = leave(session, claim, ctx.clock, source=source)
        if result == LeaveResult.UNSUBSCRIBED:
            log.info("subscriber %d unsubscribed (%s)", claim.subscriber_id, source)
        state = "done" if result in (LeaveResult.UNSUBSCRIBED, LeaveResult.ALREADY) else result.value
        return _unsubscribe_page(state, 200)
    if claim.subscriber_id == 0:
        return _unsubscribe_page(LeaveResult.TEST_COPY.value, 200)
    with ctx.store.session() as session:
        subscriber = subscriber_for(session, claim)
        email = subscriber.email if subscriber else ""
        gone = subscriber is not None and subscriber.status == SubscriberStatus.UNSUBSCRIBED
    if subscriber is None:
        return _unsubscribe_page(LeaveResult.NOT_LISTED.value, 200)
    return _unsubscribe_page("already" if gone else "ask", 200, email=email)


def _unsubscribe_page(state: str, status: int, *, email: str = "") -> Response:
    response = make_response(render_template("web/unsubscribe.html", state=state, email=email), status)
    response.headers["X-Robots-Tag"] = "noindex"
    return response


@bp.get(routes.EDITION)
def edition(day: str) -> Response:
    """The public copy of an edition ("view in browser"): no greeting, no personal links, and a
    bar linking to the archive and the sign-up page (added as it is served, so editions made
    before the archive existed have it too)."""
    if not _DATE.fullmatch(day):
        abort(404)
    try:
        when = date.fromisoformat(day)
    except ValueError:
        abort(404)
    with context().store.session() as session:
        found = edition_for(session, when)
        # Only once it has gone out: a made edition can still change, and is nobody's to read yet.
        html = found.web_html if has_gone_out(found) else ""
    if not html:
        abort(404)
    response = make_response(
        with_archive_links(html, archive=url_for("archive.index"), subscribe=url_for("public.subscribe"))
    )
    response.headers["Content-Security-Policy"] = EDITION_CSP
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
