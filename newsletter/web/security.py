"""What every response carries and every form relies on: headers, rate limits, safe redirects, error pages.

Rate limits count rows in the database (``web_attempts``), so they hold across the
worker processes of a WSGI server and across restarts. Clients are stored as a keyed
hash of their IP address, never the address itself, and rows older than the window are
deleted as new ones arrive.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Flask, Response, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from newsletter.errors import NewsletterError
from newsletter.store.attempts import recent_attempts, record_attempt

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)

# No scripts at all; styles only from our stylesheet; forms only back to us; never framed.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The stored edition is email HTML: its CSS is inlined, and its pictures live on the site.
EDITION_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_FRIENDLY = {
    400: ("Something is wrong with that request", "Please go back and try again."),
    404: ("Page not found", "There is nothing at this address. Check the link, or start from the sign-up page."),
    405: ("Not allowed", "This page cannot be used that way."),
    413: ("Too much to send", "What you sent is larger than this site accepts."),
    429: ("Please slow down", "Too many attempts from your network in the last hour. Please try again later."),
}


def client_key(secret: str, address: str | None) -> str:
    """A keyed hash of the client's IP: enough to count attempts, useless to anyone who reads the table.

    An IPv6 client is counted by its /64, the block one customer gets, or a single
    connection could pick a fresh address for every attempt.
    """
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return _keyed(secret, address or "unknown")
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _keyed(secret, str(ip.ipv4_mapped))
        return _keyed(secret, str(ipaddress.ip_network(f"{ip}/64", strict=False)))
    return _keyed(secret, str(ip))


def recipient_key(secret: str, email: str) -> str:
    """A keyed hash of an address, for counting the mails one sign-up form sends to it."""
    return _keyed(secret, "mailto:" + email)


def _keyed(secret: str, value: str) -> str:
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]


def allow_attempt(session: Session, kind: str, client: str, now: datetime, limit: int, *, record: bool = True) -> bool:
    """Whether ``client`` is under ``limit`` attempts of ``kind`` in the last hour; records this one."""
    if recent_attempts(session, kind, client, now - WINDOW) >= limit:
        return False
    if record:
        record_attempt(session, kind, client, now)
    return True


def local_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None: the login's ``next`` is never an open redirect."""
    if not target or len(target) > 2000:
        return None
    if any(c in target for c in "\\\r\n\t\x00") or not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def message_page(status: int, title: str, text: str) -> tuple[str, int]:
    return render_template("web/message.html", title=title, text=text, status=status), status


def _set_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", PAGE_CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # Same-origin only: links in pages reached by a token never send that token elsewhere.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if response.mimetype == "text/html" and "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-store"  # pages show addresses and carry form tokens
    return response


def install(app: Flask) -> None:
    """Headers on every response, and friendly pages for every error (never a traceback)."""
    app.after_request(_set_headers)

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError) -> tuple[str, int]:
        return message_page(
            400,
            "This form has expired",
            "The form was open too long, or your browser did not keep this site's cookie. "
            "Please go back, reload the page and try again.",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int] | HTTPException:
        code = exc.code or 500
        if code < 400:
            return exc
        title, text = _FRIENDLY.get(code, ("Something went wrong", "Please try again later."))
        return message_page(code, title, text)

    @app.errorhandler(NewsletterError)
    def newsletter_error(exc: NewsletterError) -> tuple[str, int]:
        log.error("request %s %s failed: %s", request.method, request.path, exc)
        return message_page(503, "Temporarily unavailable", "Please try again in a few minutes.")

    @app.errorhandler(500)
    def server_error(exc: Exception) -> tuple[str, int]:
        return message_page(500, "Something went wrong", "Please try again later.")
