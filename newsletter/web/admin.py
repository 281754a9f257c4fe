"""The staff admin under /admin: subscribers, editions, and steering the next edition.

Every view here sits behind the login (checked before each request of this blueprint,
so a new view cannot forget it); every form carries a CSRF token; failed logins are
rate-limited per client in the database. Editorial changes go through
``newsletter.editorial``, the same functions the CLI calls, and are logged with the
staff member's name.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, g, make_response, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from newsletter import editorial
from newsletter.config import Config
from newsletter.editions import Story, long_date
from newsletter.errors import ArticleNotFoundError, NewsletterError, UsageError, ValidationError
from newsletter.outbox import queue_signup_mail
from newsletter.preflight.findings import Report, Severity
from newsletter.preflight.gate import override_command
from newsletter.preflight.tools import Tools
from newsletter.render import fill_markers
from newsletter.store import deliveries as delivery_log
from newsletter.store.articles import edition_articles, list_articles
from newsletter.store.attempts import record_attempt
from newsletter.store.bounces import edition_feedback
from newsletter.store.editions import edition_for, editions_before, has_gone_out
from newsletter.store.holds import Hold, hold_of
from newsletter.store.models import Edition, EditionStatus, OutboxKind, StaffUser, SubscriberStatus
from newsletter.store.readers import count_subscribers
from newsletter.subscribers import (
    LEFT,
    MAX_SOURCE,
    ConsentRequiredError,
    NotListedError,
    NotPendingError,
    change_status,
    change_zone,
    normalise_email,
    page_subscribers,
    pending_reader,
    reactivate,
)
from newsletter.timezones import MAX_ZONE, zone_names
from newsletter.web import context, transport_factory
from newsletter.web.auth import MAX_USERNAME, authenticate, session_stamp
from newsletter.web.mail import deliver_now
from newsletter.web.security import PAGE_CSP, allow_attempt, client_key, local_path

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin")

LOGIN_FAILURES_PER_HOUR = 20
PAGE_SIZE = 50
EDITIONS_PER_PAGE = 20
MAX_SEARCH = 200
STAFF_STATUSES = (SubscriberStatus.ACTIVE, SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED)
CONSENT = "yes"  # the value of the "they asked to come back" checkbox


@bp.before_request
def require_login() -> Response | None:
    g.staff = None
    user_id, stamp = session.get("staff_id"), session.get("staff_stamp", "")
    if isinstance(user_id, int):
        with context().store.session() as db:
            user = db.get(StaffUser, user_id)
        if user is not None and hmac.compare_digest(session_stamp(user), str(stamp)):
            g.staff = user.username
        else:
            session.clear()
    if g.staff is None and request.endpoint != "admin.login":
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("admin.login", next=target))
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    ctx = context()
    next_path = local_path(request.values.get("next")) or ""
    if request.method == "GET":
        if g.staff:
            return redirect(request.script_root + next_path if next_path else url_for("admin.subscribers"))
        return render_template("web/admin/login.html", next=next_path, error="", username="")
    username, password = request.form.get("username", ""), request.form.get("password", "")
    typed = username[:MAX_USERNAME] if username.isprintable() else ""  # shown again; the password never is
    client = client_key(ctx.config.web.secret_key, request.remote_addr)
    now = ctx.clock.now()
    with ctx.store.session() as db:
        allowed = allow_attempt(db, "login", client, now, LOGIN_FAILURES_PER_HOUR, record=False)
        user = authenticate(db, username, password, ctx.clock) if allowed else None
        if allowed and user is None:
            record_attempt(db, "login", client, now)
        found = (user.id, session_stamp(user)) if user else None
    if not allowed:
        return render_template(
            "web/admin/login.html",
            next=next_path,
            error="Too many failed logins. Please wait an hour and try again.",
            username=typed,
        ), 429
    if found is None:
        return render_template(
            "web/admin/login.html", next=next_path, error="Wrong user name or password.", username=typed
        ), 401
    session.clear()  # a fresh session: nothing from before the login carries over
    session.permanent = True
    session["staff_id"], session["staff_stamp"] = found
    return redirect(request.script_root + next_path if next_path else url_for("admin.subscribers"))


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("admin.login"))


EDITIONS_CHARTED = 30
GROWTH_DAYS = 90


@bp.get("/")
def home() -> str:
    """The overview: the last editions' delivered, click-through and unsubscribes, and how the list grew.

    Charts are inline SVG drawn on the server (``newsletter.charts``): no script, which
    the admin's CSP forbids anyway, and each with its numbers in a table below it.
    """
    from newsletter import charts
    from newsletter.store.reports import edition_reports, latest_editions_out, list_growth

    ctx = context()
    zone = ctx.config.newsletter.zone
    today = ctx.clock.now().astimezone(zone).date()
    with ctx.store.reading() as db:
        figures = edition_reports(db, latest_editions_out(db, EDITIONS_CHARTED), opens=False, with_links=False)
        growth = list_growth(db, zone, today - timedelta(days=GROWTH_DAYS - 1), today)
    return render_template(
        "web/admin/home.html",
        edition_charts=charts.edition_charts(figures),
        editions_charted=EDITIONS_CHARTED,
        latest=figures[-1] if figures else None,
        status_chart=charts.status_chart(growth.history),
        signups_chart=charts.signups_chart(growth.signups),
        top_sources=growth.signups.top_sources,
        today=growth.history[-1] if growth.history else None,
        growth_days=GROWTH_DAYS,
    )


def _status_arg(value: str | None) -> SubscriberStatus | None:
    if not value:
        return None
    try:
        return SubscriberStatus(value)
    except ValueError:
        abort(400)


MAX_ID = 2**31 - 1  # the id columns' range on PostgreSQL


def _int_arg(name: str) -> int:
    value = request.args.get(name, "")
    if not value:
        return 0
    if not (value.isascii() and value.isdecimal()) or len(value) > 10 or int(value) > MAX_ID:
        abort(400)
    return int(value)


@bp.get("/subscribers")
def subscribers() -> str:
    search = request.args.get("q", "")[:MAX_SEARCH]
    if not search.isprintable():
        abort(400)
    status = _status_arg(request.args.get("status"))
    with context().store.session() as db:
        page = page_subscribers(
            db, status=status, search=search, after_id=_int_arg("after"), before_id=_int_arg("before"), size=PAGE_SIZE
        )
        counts = count_subscribers(db)
    filters: dict[str, Any] = {"q": search or None, "status": status.value if status else None}
    return render_template(
        "web/admin/subscribers.html",
        page=page,
        counts=counts,
        search=search,
        status=status.value if status else "",
        statuses=list(SubscriberStatus),
        staff_statuses=STAFF_STATUSES,
        left=LEFT,
        consent=CONSENT,
        zones=zone_names(),
        max_zone=MAX_ZONE,
        filters=filters,
        back=request.full_path.rstrip("?"),
    )


def _one_value(name: str) -> str:
    """A form field sent once; 400 when it is missing or repeated (no browser repeats it)."""
    values = request.form.getlist(name)
    if len(values) != 1:
        abort(400)
    return values[0]


def _back_to_list() -> Response:
    back = local_path(request.form.get("back"))
    if back and back.startswith("/admin/"):
        return redirect(request.script_root + back, code=303)
    return redirect(url_for("admin.subscribers"), code=303)


def _who() -> str:
    """The staff member, as recorded with the change ("admin:ana"), within the column's width."""
    return f"admin:{g.staff}"[:MAX_SOURCE]


@bp.post("/subscribers/<int:subscriber_id>/status")
def set_subscriber_status(subscriber_id: int) -> Response:
    """Change one reader's status; making someone who left active needs the consent checkbox.

    Someone who unsubscribed, bounced or complained comes back only if they asked to, so
    without "they asked to come back" ticked nothing changes and the page says why.
    """
    ctx = context()
    if subscriber_id > MAX_ID:
        abort(404)
    try:
        status = SubscriberStatus(_one_value("status"))
    except ValueError:
        abort(400)
    if status not in STAFF_STATUSES:
        abort(400)
    consent = request.form.getlist("consent")
    if consent not in ([], [CONSENT]):  # a checkbox sends its value once, or nothing
        abort(400)
    try:
        with ctx.store.session() as db:
            if status == SubscriberStatus.ACTIVE:
                changed = reactivate(db, subscriber_id, ctx.clock, by=_who(), confirmed=bool(consent))
            else:
                changed = change_status(db, subscriber_id, status, ctx.clock, source=_who())
    except ConsentRequiredError as exc:
        log.info("admin %s: subscriber %d not reactivated: no consent confirmed", g.staff, subscriber_id)
        flash(
            f"{exc.email} is {exc.status.value}: nothing changed. Make them active again only if they asked "
            "to come back, and tick “They asked to come back” to say so."
        )
        return _back_to_list()
    except UsageError:  # no such subscriber
        abort(404)
    if changed:
        log.info("admin %s: subscriber %d is now %s", g.staff, subscriber_id, status.value)
    flash(f"Subscriber {subscriber_id} is now {status.value}." if changed else "Nothing to change.")
    return _back_to_list()


@bp.post("/subscribers/<int:subscriber_id>/timezone")
def set_subscriber_timezone(subscriber_id: int) -> Response:
    """Give one reader their own time zone, or (empty, "none") the newsletter's; checked as everywhere else."""
    ctx = context()
    if subscriber_id > MAX_ID:
        abort(404)
    try:
        with ctx.store.session() as db:
            change = change_zone(db, _one_value("timezone"), ctx.clock, field="timezone", subscriber_id=subscriber_id)
    except ValidationError as exc:
        flash(f"Time zone not changed: {exc.problem}.")
        return _back_to_list()
    except NotListedError:
        abort(404)
    if change.changed:
        log.info("admin %s: subscriber %d has the time zone %r", g.staff, subscriber_id, change.after)
        flash(f"{change.email} now has the time zone {change.after or 'of the newsletter'}.")
    else:
        flash("Nothing to change.")
    return _back_to_list()


@bp.post("/subscribers/<int:subscriber_id>/resend-confirmation")
def resend_confirmation(subscriber_id: int) -> Response:
    """Queue a fresh confirmation link for a pending reader and try to send it now, saying what happened."""
    ctx = context()
    if subscriber_id > MAX_ID:
        abort(404)
    now = ctx.clock.now()
    try:
        with ctx.store.session() as db:
            reader = pending_reader(db, subscriber_id=subscriber_id)
            email = reader.email
            mail_id = queue_signup_mail(db, reader.id, email, OutboxKind.CONFIRM, now)
    except NotListedError:
        abort(404)
    except NotPendingError as exc:
        flash(f"No confirmation sent: {_one_line(exc)}.")
        return _back_to_list()
    report = deliver_now(ctx, transport_factory(), mail_id, subscriber_id)
    if report is not None and report.sent:
        log.info("admin %s: a new confirmation link went to subscriber %d", g.staff, subscriber_id)
        flash(f"A new confirmation link went to {email}.")
    else:
        problem = report.last_error if report is not None and report.last_error else "the mail server is unavailable"
        log.warning("admin %s: confirmation for subscriber %d queued, not sent yet", g.staff, subscriber_id)
        flash(f"The confirmation to {email} is queued but not sent yet ({problem}); it is retried automatically.")
    return _back_to_list()


@bp.get("/editions")
def editions() -> str:
    before = request.args.get("before", "")
    try:
        before_day = date.fromisoformat(before) if before else None
    except ValueError:
        abort(400)
    ctx = context()
    with ctx.store.session() as db:
        rows = editions_before(db, before_day, EDITIONS_PER_PAGE + 1)
    more = len(rows) > EDITIONS_PER_PAGE
    rows = rows[:EDITIONS_PER_PAGE]
    with ctx.store.engine.connect() as conn:
        listed = [(e, delivery_log.status_counts(conn, e.id)) for e in rows]
    return render_template(
        "web/admin/editions.html", editions=listed, older=rows[-1].date.isoformat() if more and rows else ""
    )


@bp.get("/editions/<day>")
def edition(day: str) -> str:
    try:
        when = date.fromisoformat(day)
    except ValueError:
        abort(404)
    from newsletter.store.reports import edition_on, edition_reports

    ctx = context()
    with ctx.store.reading() as db:
        found = edition_for(db, when)
        feedback = edition_feedback(db, [found.id])[found.id] if found is not None else None
        row = edition_on(db, when) if has_gone_out(found) else None
        figures = edition_reports(db, [row], opens=ctx.config.tracking.opens)[0] if row else None
    if found is None:
        abort(404)
    with ctx.store.engine.connect() as conn:
        counts = delivery_log.status_counts(conn, found.id)
        errors = delivery_log.recent_errors(conn, found.id, limit=20)
    return render_template(
        "web/admin/edition.html",
        edition=found,
        counts=counts,
        errors=errors,
        feedback=feedback,
        figures=figures,
        bounces=ctx.config.bounces,
        zones=_zones_to_come(found),
        held=_held(found),
        override=override_command(found.date),
        when=_when,
    )


def _zones_to_come(edition: Edition) -> list[str]:
    """An edition going out zone by zone: each zone still to come, soonest first, in the newsroom's time."""
    from newsletter.due import zone_text
    from newsletter.publish import zones_to_come

    if edition.status != EditionStatus.SENDING:
        return []
    ctx = context()
    return [zone_text(zone, ctx.config.newsletter.zone) for zone in zones_to_come(ctx, edition)]


# --- the next edition -----------------------------------------------------------------------

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PRIORITY = re.compile(r"[-+]?[0-9]{1,4}")
PRIORITY_LIMIT = 1000
HIDDEN_SHOWN = 50
TEST_COPY_KEY = "test_copy_to"  # the session remembers the address of the last test copy
STATE_LABELS = {
    EditionStatus.READY: "made",
    EditionStatus.SENDING: "sending",
    EditionStatus.SENT: "sent",
    EditionStatus.SKIPPED: "skipped",
}
# The page frames its own preview, and nothing else.
NEXT_PAGE_CSP = PAGE_CSP + "; frame-src 'self'"
# The preview is email HTML as readers get it (inline CSS, pictures from anywhere, no
# scripts); only the admin's own pages may frame it.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; form-action 'none'; "
    "frame-ancestors 'self'; base-uri 'none'"
)


def _day_value(value: str | None) -> date | None:
    """A date given as YYYY-MM-DD, None when absent; 400 for anything else."""
    if not value:
        return None
    if not _DAY.fullmatch(value):
        abort(400)
    try:
        return date.fromisoformat(value)
    except ValueError:
        abort(400)


def _next_day() -> date:
    ctx = context()
    from newsletter.preparation import next_edition_day

    return next_edition_day(ctx)


@dataclass(frozen=True)
class _Group:
    heading: str
    start: int  # the reading-order number of its first story
    stories: tuple[Story, ...]


@dataclass(frozen=True)
class _Listed:
    """A story outside the edition (hidden, or too old), as the page lists it."""

    id: int
    title: str
    published: str
    section: str = ""


def _when(moment: datetime) -> str:
    return moment.astimezone(context().config.newsletter.zone).strftime("%d %b %Y %H:%M")


@bp.get("/next")
def next_edition() -> Response:
    """The next edition (or ``?date=``): its state, its stories and the controls that steer them."""
    return _next_page(_day_value(request.args.get("date")))


def preflight_tools(config: Config) -> Tools:
    """What the admin's preflight fetches and runs with: the real web and programs."""
    return Tools.real(config.preflight.user_agent)


@bp.post("/next/preflight")
def run_next_preflight() -> Response:
    """Preflight on demand, and the page again with its report.

    Run in the request, as staff wait for an answer they asked for: links and images are
    fetched under ``[preflight] link_check_seconds`` (a slow site costs that much at most),
    the spam score is taken when SpamAssassin is installed, and no screenshots (the page
    shows the preview). The report is not stored: it is the edition as it stands now, and
    the next change to a story makes it stale; only the scheduler's holds are kept.
    """
    from newsletter.preflight import run_preflight

    ctx = context()
    day = _day_value(request.form.get("date")) or _next_day()
    try:
        report = run_preflight(ctx, day, preflight_tools(ctx.config), screenshots=False)
    except UsageError as exc:  # a date with no edition to check
        flash(f"No preflight: {_one_line(exc)}")
        return _back_to(day)
    log.info(
        "admin %s: preflight of the edition of %s: %d errors, %d warnings",
        g.staff,
        day,
        report.count(Severity.ERROR),
        report.count(Severity.WARNING),
    )
    return _next_page(day, report)


def _held(edition: Edition | None) -> Hold | None:
    """The scheduler's hold on a made edition, while it stands (an edition gone out is not held)."""
    if edition is None or edition.status != EditionStatus.READY:
        return None
    with context().store.reading() as db:
        return hold_of(db, edition.id)


def _next_page(asked: date | None, report: Report | None = None) -> Response:
    from newsletter.preparation import plan_for

    ctx = context()
    upcoming = _next_day()
    day = asked or upcoming
    with ctx.store.session() as db:
        edition = edition_for(db, day)
        hidden = [
            _Listed(a.id, a.title, _when(a.published_at))
            for a in list_articles(db, hidden_only=True, limit=HIDDEN_SHOWN)
        ]
    frozen = has_gone_out(edition)
    fixed_stories: list[_Listed] = []
    if frozen and edition is not None:
        with ctx.store.session() as db:
            fixed_stories = [
                _Listed(a.id, a.title, _when(a.published_at), a.section) for a in edition_articles(db, edition.id)
            ]
    groups: list[_Group] = []
    too_old: list[_Listed] = []
    subject = edition.subject if edition is not None else ""
    problem = ""
    if not frozen:
        try:
            selection = plan_for(ctx, day, look_ahead=True)
        except UsageError as exc:
            problem = str(exc)
        else:
            plan = selection.plan
            subject = plan.subject
            number = 1
            if plan.lead is not None:
                groups.append(_Group("Lead", number, (plan.lead,)))
                number += 1
            for section in plan.sections:
                groups.append(_Group(section.heading, number, section.stories))
                number += len(section.stories)
            too_old = [_Listed(i, title, _when(at)) for i, title, at in selection.too_old]
    page = render_template(
        "web/admin/next.html",
        day=day,
        long_day=long_date(day),
        is_next=day == upcoming,
        previous_day=_shift(day, -1),
        following_day=_shift(day, 1),
        edition=edition,
        state=STATE_LABELS.get(edition.status, edition.status.value) if edition is not None else "not made",
        subject=subject,
        frozen=frozen,
        fixed_stories=fixed_stories,
        problem=problem,
        groups=groups,
        story_count=sum(len(grp.stories) for grp in groups),
        too_old=too_old,
        hidden=hidden,
        max_age_hours=ctx.config.newsletter.max_age_hours,
        priority_limit=PRIORITY_LIMIT,
        test_address=session.get(TEST_COPY_KEY, ""),
        report=report,
        findings=report.ordered() if report is not None else [],
        held=_held(edition),
        override=override_command(day),
        link_seconds=ctx.config.preflight.link_check_seconds,
        when=_when,
    )
    response = make_response(page, 404 if problem else 200)
    response.headers["Content-Security-Policy"] = NEXT_PAGE_CSP
    return response


def _shift(day: date, days: int) -> str:
    try:
        return (day + timedelta(days=days)).isoformat()
    except OverflowError:
        return ""


@bp.get("/next/preview")
def next_preview() -> Response:
    """The edition's HTML exactly as a reader gets it, with a sample greeting and unsubscribe link."""
    from newsletter.preparation import preview_edition

    ctx = context()
    day = _day_value(request.args.get("date")) or _next_day()
    try:
        shown = preview_edition(ctx, day)
    except UsageError:
        abort(404)
    if not shown.html:
        abort(404)
    sample = fill_markers(
        shown.html,
        shown.markers,
        greeting="Good morning, Ana",
        unsubscribe_url=f"{ctx.config.web.base_url}/unsubscribe/PREVIEW",
    )
    response = make_response(sample)
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def _back_to(day: date | None) -> Response:
    return redirect(url_for("admin.next_edition", date=day.isoformat() if day else None), code=303)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _editorial(article_id: int, change: Callable[[str], editorial.Outcome]) -> Response:
    """Run one editorial change on an article and go back to the page, saying what happened."""
    day = _day_value(request.form.get("date"))
    if article_id > MAX_ID:
        abort(404)
    try:
        outcome = change(str(article_id))
    except ArticleNotFoundError:
        abort(404)
    except UsageError as exc:  # the edition has gone out, a pin too far ahead, ...
        log.info("admin %s: %s refused: %s", g.staff, request.path, exc)
        flash(_sentence(_one_line(exc)))
    else:
        log.info("admin %s: %s", g.staff, outcome.message)
        flash(outcome.message)
    return _back_to(day)


@bp.post("/next/articles/<int:article_id>/pin")
def pin_story(article_id: int) -> Response:
    ctx = context()
    day = _day_value(request.form.get("date"))
    return _editorial(article_id, lambda ref: editorial.pin(ctx, ref, day))


@bp.post("/next/articles/<int:article_id>/unpin")
def unpin_story(article_id: int) -> Response:
    ctx = context()
    return _editorial(article_id, lambda ref: editorial.unpin(ctx.store, ctx.clock, ref))


@bp.post("/next/articles/<int:article_id>/hide")
def hide_story(article_id: int) -> Response:
    ctx = context()
    return _editorial(article_id, lambda ref: editorial.hide(ctx.store, ctx.clock, ref))


@bp.post("/next/articles/<int:article_id>/unhide")
def unhide_story(article_id: int) -> Response:
    ctx = context()
    return _editorial(article_id, lambda ref: editorial.unhide(ctx.store, ctx.clock, ref))


@bp.post("/next/articles/<int:article_id>/priority")
def set_story_priority(article_id: int) -> Response:
    ctx = context()
    raw = request.form.get("priority", "").strip()
    if not _PRIORITY.fullmatch(raw) or abs(int(raw)) > PRIORITY_LIMIT:
        abort(400)
    priority = int(raw)
    return _editorial(article_id, lambda ref: editorial.set_priority(ctx.store, ctx.clock, ref, priority))


@bp.post("/next/test-copy")
def send_next_test_copy() -> Response:
    """One copy of the edition as it stands to one address (the staff member's own); nothing is recorded."""
    from newsletter.publish import send_test_copy

    ctx = context()
    day = _day_value(request.form.get("date")) or _next_day()
    try:
        address = normalise_email(request.form.get("email", ""))
    except UsageError as exc:
        flash(f"No test copy sent: {_one_line(exc)}")
        return _back_to(day)
    session[TEST_COPY_KEY] = address
    try:
        reply = send_test_copy(ctx, day, address, transport=transport_factory()())
    except (NewsletterError, OSError) as exc:  # the mail server is down or refused it: say so, in one line
        log.warning("admin %s: test copy of the edition of %s to %s failed: %s", g.staff, day, address, exc)
        flash(f"The test copy to {address} could not be sent: {_one_line(exc)}")
    else:
        log.info("admin %s: test copy of the edition of %s sent to %s: %s", g.staff, day, address, reply)
        flash(f"A test copy of the edition of {day} went to {address}.")
    return _back_to(day)
