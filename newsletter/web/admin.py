"""The staff admin under /admin: search and page through subscribers, change a status, follow editions.

Every view here sits behind the login (checked before each request of this blueprint,
so a new view cannot forget it); every form carries a CSRF token; failed logins are
rate-limited per client in the database.
"""

from __future__ import annotations

import hmac
from datetime import date
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from newsletter.errors import UsageError
from newsletter.store import deliveries as log_
from newsletter.store.models import Edition, StaffUser, SubscriberStatus
from newsletter.store.store import count_subscribers, edition_for
from newsletter.subscribers import change_status, page_subscribers
from newsletter.web import services
from newsletter.web.auth import authenticate, session_stamp
from newsletter.web.security import allow_attempt, client_key, local_path, record_attempt

bp = Blueprint("admin", __name__, url_prefix="/admin")

LOGIN_FAILURES_PER_HOUR = 20
PAGE_SIZE = 50
EDITIONS_PER_PAGE = 20
MAX_SEARCH = 200
STAFF_STATUSES = (SubscriberStatus.ACTIVE, SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED)


@bp.before_request
def require_login() -> Response | None:
    g.staff = None
    user_id, stamp = session.get("staff_id"), session.get("staff_stamp", "")
    if isinstance(user_id, int):
        with services().store.session() as db:
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
    app = services()
    next_path = local_path(request.values.get("next")) or ""
    if request.method == "GET":
        if g.staff:
            return redirect(request.script_root + next_path if next_path else url_for("admin.subscribers"))
        return render_template("web/admin/login.html", next=next_path, error="")
    username, password = request.form.get("username", ""), request.form.get("password", "")
    client = client_key(app.config.web.secret_key, request.remote_addr)
    now = app.clock.now()
    with app.store.session() as db:
        allowed = allow_attempt(db, "login", client, now, LOGIN_FAILURES_PER_HOUR, record=False)
        user = authenticate(db, username, password, app.clock) if allowed else None
        if allowed and user is None:
            record_attempt(db, "login", client, now)
        found = (user.id, session_stamp(user)) if user else None
    if not allowed:
        return render_template(
            "web/admin/login.html", next=next_path, error="Too many failed logins. Please wait an hour and try again."
        ), 429
    if found is None:
        return render_template("web/admin/login.html", next=next_path, error="Wrong user name or password."), 401
    session.clear()  # a fresh session: nothing from before the login carries over
    session.permanent = True
    session["staff_id"], session["staff_stamp"] = found
    return redirect(request.script_root + next_path if next_path else url_for("admin.subscribers"))


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("admin.login"))


@bp.get("/")
def home() -> Response:
    return redirect(url_for("admin.subscribers"))


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
    with services().store.session() as db:
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
        filters=filters,
        back=request.full_path.rstrip("?"),
    )


@bp.post("/subscribers/<int:subscriber_id>/status")
def set_subscriber_status(subscriber_id: int) -> Response:
    app = services()
    if subscriber_id > MAX_ID:
        abort(404)
    try:
        status = SubscriberStatus(request.form.get("status", ""))
    except ValueError:
        abort(400)
    if status not in STAFF_STATUSES:
        abort(400)
    try:
        with app.store.session() as db:
            changed = change_status(db, subscriber_id, status, app.clock, source=f"admin:{g.staff}")
    except UsageError:
        abort(404)
    flash(f"Subscriber {subscriber_id} is now {status.value}." if changed else "Nothing to change.")
    back = local_path(request.form.get("back"))
    if back and back.startswith("/admin/"):
        return redirect(request.script_root + back, code=303)
    return redirect(url_for("admin.subscribers"), code=303)


@bp.get("/editions")
def editions() -> str:
    before = request.args.get("before", "")
    try:
        before_day = date.fromisoformat(before) if before else None
    except ValueError:
        abort(400)
    app = services()
    with app.store.session() as db:
        query = select(Edition).order_by(Edition.date.desc()).limit(EDITIONS_PER_PAGE + 1)
        if before_day is not None:
            query = query.where(Edition.date < before_day)
        rows = list(db.scalars(query))
    more = len(rows) > EDITIONS_PER_PAGE
    rows = rows[:EDITIONS_PER_PAGE]
    with app.store.engine.connect() as conn:
        listed = [(e, log_.status_counts(conn, e.id)) for e in rows]
    return render_template(
        "web/admin/editions.html", editions=listed, older=rows[-1].date.isoformat() if more and rows else ""
    )


@bp.get("/editions/<day>")
def edition(day: str) -> str:
    try:
        when = date.fromisoformat(day)
    except ValueError:
        abort(404)
    app = services()
    with app.store.session() as db:
        found = edition_for(db, when)
    if found is None:
        abort(404)
    with app.store.engine.connect() as conn:
        counts = log_.status_counts(conn, found.id)
        errors = log_.recent_errors(conn, found.id, limit=20)
    return render_template("web/admin/edition.html", edition=found, counts=counts, errors=errors)
