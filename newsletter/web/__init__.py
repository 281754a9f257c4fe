"""The web app: public subscribe / confirm / unsubscribe / view-in-browser pages and the staff admin.

``create_app(config)`` builds everything from the one configuration handed to it: the
store, the clock and the token signer, which with it make the app's ``Context`` (views
ask ``context()``), and beside that the way single mails leave (``transport_factory()``).
Nothing lives at module level, so tests build as many apps as they like, and a WSGI server calls
``load_app()`` (which reads the configuration the usual way) once per worker process.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import Flask, current_app
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from newsletter.clock import Clock, SystemClock
from newsletter.config import Config, load_config
from newsletter.context import Context
from newsletter.render import PACKAGE_TEMPLATES
from newsletter.store import Store
from newsletter.tokens import Tokens
from newsletter.transports import Transport

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
CONTEXT = "newsletter"  # app.extensions' keys: the app's Context, and its single-message transport factory
TRANSPORT_FACTORY = "newsletter.transport_factory"


def context() -> Context:
    """The current app's ``Context``, built once per app (views call this instead of reaching for globals)."""
    found: Context = current_app.extensions[CONTEXT]
    return found


def transport_factory() -> Callable[[], Transport]:
    """How the current app's single mails leave (confirmations, test copies): one new connection per call."""
    found: Callable[[], Transport] = current_app.extensions[TRANSPORT_FACTORY]
    return found


def _with_secret_key(config: Config) -> Config:
    """Production refuses to start without a key; a local run gets a throwaway one and a warning."""
    if config.web.secret_key:
        return config
    if config.web.production:
        config.require_secret_key()  # raises ConfigError naming the key and how to set it
    log.warning(
        "no [web] secret_key: using a temporary one for this process; confirm and unsubscribe links "
        "it signs stop working when it exits (set web.secret_key or $NEWSLETTER_SECRET_KEY)"
    )
    return dataclasses.replace(config, web=dataclasses.replace(config.web, secret_key=secrets.token_urlsafe(32)))


def create_app(
    config: Config,
    store: Store | None = None,
    clock: Clock | None = None,
    transport_factory: Callable[[], Transport] | None = None,
) -> Flask:
    """Build the web app; ``ConfigError`` when production mode has no secret key."""
    from newsletter.publish import transport_factory as configured_transport
    from newsletter.web import admin, archive, clicks, public, security

    config = _with_secret_key(config)
    if store is None:
        store = Store(config.store.url, application_name="newsletter-web")
        store.check_schema()
    the_clock = clock or SystemClock()
    app = Flask(
        __name__,
        template_folder=str(PACKAGE_TEMPLATES),
        static_folder=str(PACKAGE_TEMPLATES / "web" / "static"),
        static_url_path="/static",
    )
    app.config.update(
        SECRET_KEY=config.web.secret_key,
        SESSION_COOKIE_NAME="newsletter_session",
        SESSION_COOKIE_SECURE=config.web.production,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        MAX_FORM_PARTS=50,
        WTF_CSRF_TIME_LIMIT=8 * 3600,
        PREFERRED_URL_SCHEME="https" if config.web.production else "http",
    )
    if config.web.trusted_proxies:
        # Client address and scheme as the reverse proxy saw them; only as many hops as are
        # really ours, or anyone could claim any address. The mount point is never taken
        # from a header (a proxy that passes X-Forwarded-Prefix through would let a
        # visitor point every link and redirect elsewhere): it is base_url's path.
        n = config.web.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]  # Flask's documented way to add WSGI middleware
            app.wsgi_app, x_for=n, x_proto=n, x_host=0, x_prefix=0
        )
    prefix = urlsplit(config.web.base_url).path.rstrip("/")
    if prefix:
        # Links in mails carry base_url's path: serve there with or without a proxy in front.
        app.wsgi_app = _MountPoint(app.wsgi_app, prefix)  # type: ignore[method-assign]  # as ProxyFix above
    app.extensions[CONTEXT] = Context(config, store, the_clock, Tokens(config.web.secret_key, the_clock))
    app.extensions[TRANSPORT_FACTORY] = transport_factory or configured_transport(config)
    csrf = CSRFProtect(app)
    app.register_blueprint(public.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(archive.bp)
    clicks.install(app)  # /c/ and /o/, with the recorder that writes clicks in batches (flushed at exit)
    csrf.exempt(public.unsubscribe)  # RFC 8058 one-click: mailbox providers POST without cookies
    csrf.exempt(public.subscribe_post)  # checks CSRF itself: forms embedded on [web] embed_origins have no token
    security.install(app)
    app.jinja_env.globals.update(newsletter=config.newsletter)
    return app


def load_app(config_path: str | None = None) -> Flask:
    """For a WSGI server: ``gunicorn 'newsletter.web:load_app()'`` (config from $NEWSLETTER_CONFIG)."""
    return create_app(load_config(config_path))


class _MountPoint:
    """Serve the app under ``prefix`` whether the proxy strips that prefix from the path or not."""

    def __init__(self, app: WSGIApplication, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            environ["PATH_INFO"] = path[len(self.prefix) :] or "/"
        environ["SCRIPT_NAME"] = self.prefix
        return self.app(environ, start_response)
