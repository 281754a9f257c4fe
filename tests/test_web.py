"""The public pages through Flask's test client, against a real database and a real SMTP server."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.demo.sink import free_port
from newsletter.errors import ConfigError
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.tokens import CONFIRM, UNSUBSCRIBE, Tokens
from newsletter.web import create_app
from newsletter.web.security import allow_attempt
from tests.conftest import PG_ENV, SECRET, SMTPServer, add_subscribers, make_config, morning_articles
from tests.test_subscribers import config_file

BASE = "https://news.example.com/newsletter"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(config: Config, store: Store, clock: FixedClock) -> Flask:
    return create_app(config, store=store, clock=clock)


def browser(app: Flask) -> FlaskClient:
    """A client that sends the Referer a browser sends (CSRF checks it over HTTPS)."""
    client = app.test_client()
    client.environ_base["HTTP_REFERER"] = "https://localhost/subscribe"
    return client


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return browser(app)


def form_token(client: FlaskClient, path: str = "/subscribe") -> str:
    page = client.get(path)
    assert page.status_code == 200
    found = CSRF.search(page.get_data(as_text=True))
    assert found, "no CSRF token in the form"
    return found.group(1)


def subscribe(client: FlaskClient, email: str, name: str = "", **extra: str):
    data = {"csrf_token": form_token(client), "email": email, "name": name, **extra}
    return client.post("/subscribe", data=data)


def subscriber(store: Store, email: str) -> Subscriber | None:
    with store.session() as session:
        return session.scalars(select(Subscriber).where(Subscriber.email == email)).first()


def events(store: Store) -> list[tuple[str, str]]:
    with store.session() as session:
        return [(e.event, e.source) for e in session.scalars(select(SubscriberEvent).order_by(SubscriberEvent.id))]


def mails_to(sink: SMTPServer, email: str) -> list[EmailMessage]:
    return [r.message for r in sink.handler.by_recipient().get(email, [])]


def confirm_link(message: EmailMessage) -> str:
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"{re.escape(BASE)}/confirm/\S+", text)
    assert found, text
    return found.group(0)


def local(url: str) -> str:
    assert url.startswith(BASE)
    return url.removeprefix(BASE)


# --- pages and headers ----------------------------------------------------------------------


def test_subscribe_form_is_plain_accessible_html_with_strict_security_headers(client):
    page = client.get("/subscribe")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert '<html lang="en">' in html and "style=" not in html
    # One script, our own file (it guesses the reader's time zone); none inline.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/newsletter/static/timezone.js" defer>']
    assert html.count("</script>") == 1 and "defer></script>" in html
    assert '<label for="email">' in html and 'autocomplete="email"' in html
    assert 'name="website"' in html and 'tabindex="-1"' in html  # the honeypot, hidden from people
    assert "Breakfast in red" in html and "The Example Gazette" in html
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and csp.endswith("; script-src 'self'")
    assert "unsafe" not in csp and csp.count("script-src") == 1
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["Cache-Control"] == "no-store"
    css = client.get("/static/site.css")
    assert css.status_code == 200 and css.mimetype == "text/css" and "#c8102e" in css.get_data(as_text=True)
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    css.close()
    assert client.get("/").headers["Location"].endswith("/subscribe")


def test_session_cookie_is_secure_httponly_and_lax_in_production(client):
    cookie = client.get("/subscribe").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_missing_secret_key_is_a_startup_error_in_production(db_url, smtp_sink, store):
    config = make_config(db_url, smtp_sink, web={"secret_key": ""})
    with pytest.raises(ConfigError, match=r"web\.secret_key"):
        create_app(config, store=store)


def test_without_production_a_missing_key_gets_a_temporary_one_and_a_warning(db_url, smtp_sink, store, caplog):
    config = make_config(db_url, smtp_sink, web={"secret_key": "", "production": False})
    with caplog.at_level(logging.WARNING, logger="newsletter.web"):
        app = create_app(config, store=store)
    key = app.config["SECRET_KEY"]
    assert len(key) >= 32
    assert "temporary" in caplog.text and key not in caplog.text
    assert "Secure" not in app.test_client().get("/subscribe").headers["Set-Cookie"]


def test_unknown_pages_and_methods_get_friendly_pages(client):
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "Page not found" in missing.get_data(as_text=True)
    assert missing.headers["Content-Security-Policy"].startswith("default-src 'none'")
    wrong = client.put("/subscribe")
    assert wrong.status_code == 405 and "Traceback" not in wrong.get_data(as_text=True)


# --- subscribing and confirming ----------------------------------------------------------------


def test_subscribe_makes_a_pending_reader_and_mails_a_confirmation(client, store, smtp_sink, tokens):
    response = subscribe(client, "Ana@Example.org", "  Ana   García ")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/subscribe/check-your-inbox")
    page = client.get(response.headers["Location"])
    assert "Check your inbox" in page.get_data(as_text=True)
    ana = subscriber(store, "ana@example.org")
    assert ana is not None and ana.status == SubscriberStatus.PENDING and ana.name == "Ana García"
    assert ana.source == "web"
    assert events(store) == [("subscribed", "web")]
    (mail,) = mails_to(smtp_sink, "ana@example.org")
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.iter_parts()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert text.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
    assert mail["Subject"] == "Please confirm your subscription to Breakfast in red"
    assert mail["From"] == "Breakfast in red <breakfast@news.example.com>"
    assert mail["To"] == "ana@example.org" and mail["Auto-Submitted"] == "auto-generated"
    assert mail["Message-ID"].endswith("@news.example.com>")
    link = confirm_link(mail)
    assert link in html.get_content()
    claim = tokens.read(CONFIRM, link.rsplit("/", 1)[1], max_age_days=7)
    assert claim.subscriber_id == ana.id and claim.matches("ana@example.org")


def test_confirm_link_activates_once_then_says_already(client, store, smtp_sink):
    subscribe(client, "ana@example.org")
    link = local(confirm_link(mails_to(smtp_sink, "ana@example.org")[0]))
    first = client.get(link)
    assert first.status_code == 200 and "You are subscribed" in first.get_data(as_text=True)
    ana = subscriber(store, "ana@example.org")
    assert ana.status == SubscriberStatus.ACTIVE and ana.confirmed_at is not None
    again = client.get(link)
    assert again.status_code == 200 and "already confirmed" in again.get_data(as_text=True)
    assert events(store) == [("subscribed", "web"), ("confirmed", "web")]


def test_confirm_link_expires(client, store, smtp_sink, clock):
    subscribe(client, "ana@example.org")
    link = local(confirm_link(mails_to(smtp_sink, "ana@example.org")[0]))
    clock.advance(8 * 86_400)
    response = client.get(link)
    assert response.status_code == 400 and "This link has expired" in response.get_data(as_text=True)
    assert subscriber(store, "ana@example.org").status == SubscriberStatus.PENDING


@pytest.mark.parametrize(
    "token",
    ["nonsense", "1-abcdefghij.AAAAAA.forgedsignature", "x" * 300, "%E2%98%83", "1-abcdefghij"],
)
def test_bad_confirm_and_unsubscribe_tokens_get_friendly_pages(client, token):
    for path in (f"/confirm/{token}", f"/unsubscribe/{token}"):
        response = client.get(path)
        body = response.get_data(as_text=True)
        assert response.status_code in (400, 404) and "Traceback" not in body
        assert "does not work" in body or "Page not found" in body
    posted = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert posted.status_code in (400, 404)


def test_tokens_are_bound_to_purpose_and_address(client, store, clock, tokens):
    add_subscribers(store, clock, 1)
    pending = subscribe(client, "pending@example.org")
    assert pending.status_code == 303
    reader = subscriber(store, "reader0@example.org")
    waiting = subscriber(store, "pending@example.org")
    # An unsubscribe token cannot confirm, a confirm token cannot unsubscribe.
    unsub_for_pending = tokens.make(UNSUBSCRIBE, waiting.id, waiting.email)
    assert client.get(f"/confirm/{unsub_for_pending}").status_code == 400
    confirm_for_reader = tokens.make(CONFIRM, reader.id, reader.email)
    assert client.post(f"/unsubscribe/{confirm_for_reader}").status_code == 400
    # A token made for another address does not touch this row.
    wrong_address = tokens.make(UNSUBSCRIBE, reader.id, "someone.else@example.org")
    assert "not on the list" in client.post(f"/unsubscribe/{wrong_address}").get_data(as_text=True)
    assert client.get(f"/confirm/{tokens.make(CONFIRM, waiting.id, 'other@example.org')}").status_code == 400
    # Signed with another key: rejected.
    forged = Tokens("another-secret-key-0123456789-abcdefghijk", clock).make(UNSUBSCRIBE, reader.id, reader.email)
    assert client.post(f"/unsubscribe/{forged}").status_code == 400
    assert subscriber(store, "reader0@example.org").status == SubscriberStatus.ACTIVE
    assert subscriber(store, "pending@example.org").status == SubscriberStatus.PENDING


def test_the_answer_is_the_same_whether_or_not_the_address_is_listed(client, store, clock, smtp_sink):
    add_subscribers(store, clock, 1, prefix="active")
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    add_subscribers(store, clock, 1, SubscriberStatus.BOUNCED, prefix="dead")
    subscribe(client, "waiting@example.org")
    answers = set()
    for email in (
        "new@example.org",
        "active0@example.org",
        "gone0@example.org",
        "dead0@example.org",
        "waiting@example.org",
    ):
        response = subscribe(client, email)
        followed = client.get(response.headers["Location"])
        answers.add((response.status_code, response.headers["Location"], followed.get_data(as_text=True)))
    assert len(answers) == 1
    got = smtp_sink.handler.by_recipient()
    # Every request costs one mail, so the time the form takes gives nothing away either.
    (notice,) = got["active0@example.org"]  # nothing to confirm: a note saying so
    assert notice.message["Subject"] == "You already get Breakfast in red"
    text = notice.message.get_body(("plain",)).get_content()
    assert "/confirm/" not in text and "/unsubscribe/" in text
    assert len(got["waiting@example.org"]) == 2  # the link again
    # Someone who left gets a link, but stays out until they follow it.
    assert subscriber(store, "gone0@example.org").status == SubscriberStatus.UNSUBSCRIBED
    assert subscriber(store, "dead0@example.org").status == SubscriberStatus.BOUNCED
    response = client.get(local(confirm_link(got["gone0@example.org"][0].message)))
    assert "welcome back" in response.get_data(as_text=True)
    assert subscriber(store, "gone0@example.org").status == SubscriberStatus.ACTIVE
    assert ("reactivated", "web") in events(store)


def test_an_old_confirm_link_does_not_bring_back_someone_who_left(client, store, smtp_sink):
    subscribe(client, "ana@example.org")
    link = local(confirm_link(mails_to(smtp_sink, "ana@example.org")[0]))
    client.get(link)
    ana = subscriber(store, "ana@example.org")
    tokens = client.application.extensions["newsletter"].tokens
    assert client.post(f"/unsubscribe/{tokens.make(UNSUBSCRIBE, ana.id, ana.email)}").status_code == 200
    stale = client.get(link)  # e.g. a link scanner re-reading the old email
    assert stale.status_code == 400 and "before you unsubscribed" in stale.get_data(as_text=True)
    assert subscriber(store, "ana@example.org").status == SubscriberStatus.UNSUBSCRIBED


def test_a_link_from_before_leaving_stays_dead_after_anyone_signs_the_address_up_again(client, store, smtp_sink, clock):
    subscribe(client, "ana@example.org")
    old_link = local(confirm_link(mails_to(smtp_sink, "ana@example.org")[0]))  # T1
    assert client.get(old_link).status_code == 200
    ana = subscriber(store, "ana@example.org")
    assert ana.status == SubscriberStatus.ACTIVE
    clock.advance(3600)
    tokens = client.application.extensions["newsletter"].tokens
    one_click = client.post(f"/unsubscribe/{tokens.make(UNSUBSCRIBE, ana.id, ana.email)}")
    assert one_click.status_code == 200
    clock.advance(3600)
    # Anyone at all fills in the form for the address: it is a new request, so a new link goes out.
    stranger = browser(client.application)
    assert subscribe(stranger, "ana@example.org").status_code == 303
    first, new = mails_to(smtp_sink, "ana@example.org")
    assert confirm_link(new) != confirm_link(first)
    before = events(store)

    stale = client.get(old_link)  # the old email, kept, forwarded or re-read by a link scanner
    page = stale.get_data(as_text=True)
    assert stale.status_code == 400 and "This link has expired" in page and "newer one has been sent" in page
    assert "You are subscribed" not in page
    assert subscriber(store, "ana@example.org").status == SubscriberStatus.UNSUBSCRIBED
    assert events(store) == before

    clock.advance(60)
    fresh = client.get(local(confirm_link(new)))  # the link sent after the new sign-up still works
    assert fresh.status_code == 200 and "welcome back" in fresh.get_data(as_text=True)
    assert subscriber(store, "ana@example.org").status == SubscriberStatus.ACTIVE
    assert events(store)[-1] == ("reactivated", "web")


def test_link_pages_follow_the_error_class_not_its_wording(client, store, smtp_sink, clock, monkeypatch):
    from newsletter.errors import TokenError, TokenExpiredError

    subscribe(client, "ana@example.org")
    link = local(confirm_link(mails_to(smtp_sink, "ana@example.org")[0]))
    token = link.rsplit("/", 1)[1]
    tokens = client.application.extensions["newsletter"].tokens

    def refuse(error: TokenError):
        def read(purpose: str, value: str, max_age_days: int):
            raise error

        return read

    # Reworded messages: an old link still reads as expired, a forged one as broken.
    monkeypatch.setattr(tokens, "read", refuse(TokenExpiredError("too late for this one")))
    for path in (link, f"/unsubscribe/{token}"):
        assert "This link has expired" in client.get(path).get_data(as_text=True)
    monkeypatch.setattr(tokens, "read", refuse(TokenError("this link has expired (not really)")))
    forged = client.get(link).get_data(as_text=True)
    assert "This link does not work" in forged and "has expired" not in forged
    assert subscriber(store, "ana@example.org").status == SubscriberStatus.PENDING


def test_form_messages_come_from_the_errors_attributes_not_their_text(client, store, smtp_sink, monkeypatch):
    from newsletter.subscribers import InvalidAddressError, InvalidTextError
    from newsletter.web import public

    def bad_address(reason: str, detail: str = ""):
        def normalise(raw: str) -> str:
            raise InvalidAddressError("worded any way at all: x: y", reason=reason, detail=detail)

        return normalise

    expected = {
        InvalidAddressError.EMPTY: "Please enter your email address.",
        InvalidAddressError.LINE_BREAK: "An email address cannot contain line breaks.",
        InvalidAddressError.TOO_LONG: "An email address has at most 254 characters.",
    }
    for reason, message in expected.items():
        monkeypatch.setattr(public, "normalise_email", bad_address(reason))
        body = subscribe(client, "ana@example.org").get_data(as_text=True)
        assert message in body and "worded any way" not in body
    monkeypatch.setattr(public, "normalise_email", bad_address(InvalidAddressError.MALFORMED, "no @-sign: none"))
    body = subscribe(client, "ana@example.org").get_data(as_text=True)
    assert "That is not a valid email address: no @-sign: none" in body

    def bad_name(raw: str) -> str:
        raise InvalidTextError("the reader's name", "is worded differently now")

    monkeypatch.undo()
    monkeypatch.setattr(public, "clean_name", bad_name)
    body = subscribe(client, "ana@example.org", "Ana").get_data(as_text=True)
    assert "Your name is worded differently now." in body
    assert subscriber(store, "ana@example.org") is None


def test_the_honeypot_answers_like_a_success_and_does_nothing(client, store, smtp_sink):
    response = subscribe(client, "bot@example.org", website="https://spam.example")
    assert response.status_code == 303 and response.headers["Location"].endswith("/check-your-inbox")
    assert subscriber(store, "bot@example.org") is None
    assert smtp_sink.handler.received == []


def test_subscribe_without_a_valid_csrf_token_is_refused(app, client, store):
    no_token = client.post("/subscribe", data={"email": "ana@example.org"})
    assert no_token.status_code == 400 and "This form has expired" in no_token.get_data(as_text=True)
    token = form_token(client)
    stranger = browser(app)  # another browser: no session cookie for that token
    assert stranger.post("/subscribe", data={"csrf_token": token, "email": "ana@example.org"}).status_code == 400
    tampered = client.post("/subscribe", data={"csrf_token": token + "x", "email": "ana@example.org"})
    assert tampered.status_code == 400
    assert subscriber(store, "ana@example.org") is None


@pytest.mark.parametrize(
    ("email", "name", "message"),
    [
        ("", "", "Please enter your email address."),
        ("ana@example.org\r\nBcc: victim@example.org", "", "cannot contain line breaks"),
        ("ana@example.org\nX", "", "cannot contain line breaks"),
        ("not an address", "", "That is not a valid email address"),
        ("ana@@example.org", "", "That is not a valid email address"),
        ("a" * 250 + "@example.org", "", "at most 254 characters"),
        ("ana@example.org", "Ana\r\nBcc: x@example.org", "cannot contain line breaks"),
        ("ana@example.org", "A" * 201, "at most 200 characters"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(client, store, smtp_sink, email, name, message):
    response = subscribe(client, email, name)
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in body and 'aria-invalid="true"' in body and 'role="alert"' in body
    with store.session() as session:
        assert session.scalar(select(Subscriber.id)) is None
    assert smtp_sink.handler.received == []


def test_what_was_typed_comes_back_escaped(client):
    body = subscribe(client, '"><script>alert(1)</script>', "<b>Ana</b>").get_data(as_text=True)
    assert "<script>alert" not in body and "&lt;script&gt;" in body and "&lt;b&gt;Ana&lt;/b&gt;" in body


def test_an_oversized_request_is_refused(client):
    response = client.post("/subscribe", data={"email": "a@example.org", "name": "x" * 100_000})
    assert response.status_code == 413 and "larger than this site accepts" in response.get_data(as_text=True)


def test_rate_limit_per_client_holds_across_app_instances(db_url, smtp_sink, store, clock):
    config = make_config(db_url, smtp_sink, web={"subscribe_per_hour": 3})
    first = browser(create_app(config, store=store, clock=clock))
    for i in range(3):
        assert subscribe(first, f"r{i}@example.org").status_code == 303
    assert subscribe(first, "r3@example.org").status_code == 429
    # Another worker process (another app, its own store) on the same database agrees.
    other_store = Store(db_url)
    try:
        second = browser(create_app(config, store=other_store, clock=clock))
        refused = subscribe(second, "r4@example.org")
        assert refused.status_code == 429 and "Too many sign-ups" in refused.get_data(as_text=True)
        # Another client address is not affected; the limit lifts after an hour.
        elsewhere = second.post(
            "/subscribe",
            data={"csrf_token": form_token(second), "email": "r5@example.org"},
            environ_base={"REMOTE_ADDR": "192.0.2.7"},
        )
        assert elsewhere.status_code == 303
    finally:
        other_store.dispose()
    clock.advance(3601)
    assert subscribe(first, "r6@example.org").status_code == 303
    assert subscriber(store, "r3@example.org") is None and subscriber(store, "r6@example.org") is not None


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(db_url, smtp_sink, store, clock):
    def attempts(config: Config) -> list[int]:
        client = browser(create_app(config, store=store, clock=clock))
        codes = []
        for i in range(3):
            data = {"csrf_token": form_token(client), "email": f"p{i}@example.org"}
            response = client.post("/subscribe", data=data, headers={"X-Forwarded-For": f"198.51.100.{i}"})
            codes.append(response.status_code)
        return codes

    assert attempts(make_config(db_url, smtp_sink, web={"subscribe_per_hour": 1})) == [303, 429, 429]
    trusting = make_config(db_url, smtp_sink, web={"subscribe_per_hour": 1, "trusted_proxies": 1})
    assert attempts(trusting) == [303, 303, 303]


def test_one_address_gets_at_most_three_sign_up_mails_an_hour(db_url, smtp_sink, store, clock):
    config = make_config(db_url, smtp_sink, web={"subscribe_per_hour": 100})
    client = browser(create_app(config, store=store, clock=clock))
    add_subscribers(store, clock, 1, prefix="active")
    for _ in range(5):
        for email in ("victim@example.org", "active0@example.org"):
            assert subscribe(client, email).status_code == 303
    got = smtp_sink.handler.by_recipient()
    assert len(got["victim@example.org"]) == 3 and len(got["active0@example.org"]) == 3
    clock.advance(3601)
    subscribe(client, "victim@example.org")
    assert len(smtp_sink.handler.by_recipient()["victim@example.org"]) == 4


def test_an_ipv6_client_is_counted_by_its_64_block(db_url, smtp_sink, store, clock):
    config = make_config(db_url, smtp_sink, web={"subscribe_per_hour": 2})
    client = browser(create_app(config, store=store, clock=clock))

    def attempt(address: str, email: str) -> int:
        data = {"csrf_token": form_token(client), "email": email}
        return client.post("/subscribe", data=data, environ_base={"REMOTE_ADDR": address}).status_code

    codes = [attempt(f"2001:db8:1:2::{i:x}", f"v6-{i}@example.org") for i in range(1, 4)]
    assert codes == [303, 303, 429]  # a new address per try does not help
    assert attempt("2001:db8:1:3::1", "v6-next@example.org") == 303  # the next /64 is someone else


def test_a_head_request_on_a_confirm_link_confirms_nothing(client, store, smtp_sink):
    subscribe(client, "ana@example.org")
    link = local(confirm_link(mails_to(smtp_sink, "ana@example.org")[0]))
    assert client.head(link).status_code == 200  # what a link scanner sends
    assert subscriber(store, "ana@example.org").status == SubscriberStatus.PENDING
    assert client.get(link).status_code == 200
    assert subscriber(store, "ana@example.org").status == SubscriberStatus.ACTIVE


def test_behind_a_proxy_the_mount_point_comes_from_base_url_not_a_header(db_url, smtp_sink, store, clock):
    config = make_config(db_url, smtp_sink, web={"trusted_proxies": 1})
    client = browser(create_app(config, store=store, clock=clock))
    for headers in ({}, {"X-Forwarded-Prefix": "//evil.example"}):
        response = client.get("/", headers=headers)
        assert response.status_code == 302 and response.headers["Location"] == "/newsletter/subscribe"
        page = client.get("/subscribe", headers=headers).get_data(as_text=True)
        assert 'action="/newsletter/subscribe"' in page and "evil.example" not in page  # (Africa/Libreville is fine)
        login = client.get("/admin/subscribers", headers=headers)
        assert login.headers["Location"].startswith("/newsletter/admin/login")
    # A proxy that passes the prefix through instead of stripping it works the same.
    assert client.get("/newsletter/subscribe").status_code == 200


def test_a_mail_server_failure_does_not_change_the_answer(db_url, store, clock, caplog):
    config = make_config(db_url, None, smtp={"port": free_port(), "timeout": 2})
    client = browser(create_app(config, store=store, clock=clock))
    with caplog.at_level(logging.ERROR, logger="newsletter.web"):
        response = subscribe(client, "ana@example.org")
    assert response.status_code == 303 and response.headers["Location"].endswith("/check-your-inbox")
    assert "sign-up email to subscriber" in caplog.text and SECRET not in caplog.text
    assert subscriber(store, "ana@example.org").status == SubscriberStatus.PENDING


def test_confirmations_can_go_to_a_maildir(db_url, store, clock, tmp_path: Path):
    config = make_config(db_url, None, delivery={"transport": "maildir", "maildir": str(tmp_path / "outbox")})
    client = browser(create_app(config, store=store, clock=clock))
    subscribe(client, "ana@example.org")
    (stored,) = (tmp_path / "outbox" / "new").iterdir()
    assert b"Please confirm your subscription to Breakfast in red" in stored.read_bytes()


# --- unsubscribing ----------------------------------------------------------------------------


def _reader_token(store: Store, clock: FixedClock, tokens: Tokens, email: str = "reader0@example.org") -> str:
    if subscriber(store, email) is None:
        add_subscribers(store, clock, 1)
    found = subscriber(store, email)
    return tokens.make(UNSUBSCRIBE, found.id, found.email)


def test_unsubscribe_page_names_the_list_and_changes_nothing(client, store, clock, tokens):
    token = _reader_token(store, clock, tokens)
    for _ in range(3):  # link scanners, previews, the reader
        page = client.get(f"/unsubscribe/{token}")
        assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Unsubscribe from Breakfast in red?" in html and "reader0@example.org" in html
    assert '<form method="post">' in html and '<button type="submit">Unsubscribe</button>' in html
    assert "csrf_token" not in html and "Set-Cookie" not in page.headers
    assert page.headers["X-Robots-Tag"] == "noindex"
    assert subscriber(store, "reader0@example.org").status == SubscriberStatus.ACTIVE
    assert events(store) == []


def test_one_click_post_exactly_as_a_mailbox_provider_sends_it_urlencoded(app, store, clock, tokens):
    token = _reader_token(store, clock, tokens)
    provider = app.test_client(use_cookies=False)
    for _ in range(2):  # idempotent: a retry answers the same
        response = provider.post(
            f"/unsubscribe/{token}",
            data=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "MailboxProvider/1.0"},
        )
        assert response.status_code == 200 and "Location" not in response.headers
        assert "Set-Cookie" not in response.headers
        assert "You are unsubscribed" in response.get_data(as_text=True)
    reader = subscriber(store, "reader0@example.org")
    assert reader.status == SubscriberStatus.UNSUBSCRIBED and reader.unsubscribed_at == clock.now()
    assert events(store).count(("unsubscribed", "one-click")) == 1


def test_one_click_post_as_multipart_form_data(app, store, clock, tokens):
    token = _reader_token(store, clock, tokens)
    boundary = "----=_Part_17_1234567890.1732430000000"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        "One-Click\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    response = app.test_client(use_cookies=False).post(
        f"/unsubscribe/{token}", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 200 and "Location" not in response.headers
    assert subscriber(store, "reader0@example.org").status == SubscriberStatus.UNSUBSCRIBED


def test_the_page_button_unsubscribes_and_says_so(client, store, clock, tokens):
    token = _reader_token(store, clock, tokens)
    done = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click", "via": "page"})
    assert done.status_code == 200 and "You are unsubscribed" in done.get_data(as_text=True)
    assert ("unsubscribed", "web") in events(store)
    after = client.get(f"/unsubscribe/{token}")
    assert "already unsubscribed" in after.get_data(as_text=True) and "<button" not in after.get_data(as_text=True)


def test_unsubscribe_link_of_a_sent_edition_works_in_one_click(app, store, clock, ctx, smtp_sink):
    morning_articles(store, clock)
    add_subscribers(store, clock, 2)
    assert send_edition(ctx).outcome == "sent"
    (received,) = smtp_sink.handler.by_recipient()["reader1@example.org"]
    url = re.findall(r"<([^>]+)>", received.message["List-Unsubscribe"])[0]
    response = app.test_client(use_cookies=False).post(local(url), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert subscriber(store, "reader1@example.org").status == SubscriberStatus.UNSUBSCRIBED
    assert subscriber(store, "reader0@example.org").status == SubscriberStatus.ACTIVE


def test_a_test_copy_link_changes_nothing(client, store, clock, tokens):
    add_subscribers(store, clock, 1)
    token = tokens.make(UNSUBSCRIBE, 0, "reader0@example.org")  # what `send --to` signs
    for response in (client.get(f"/unsubscribe/{token}"), client.post(f"/unsubscribe/{token}")):
        assert response.status_code == 200 and "This was a test copy" in response.get_data(as_text=True)
    assert subscriber(store, "reader0@example.org").status == SubscriberStatus.ACTIVE
    assert events(store) == []


def test_expired_and_removed_unsubscribe_links(client, store, clock, tokens):
    token = _reader_token(store, clock, tokens)
    clock.advance(366 * 86_400)
    expired = client.post(f"/unsubscribe/{token}")
    assert expired.status_code == 400 and "expired" in expired.get_data(as_text=True)
    fresh = _reader_token(store, clock, tokens)
    with store.session() as session:
        session.delete(session.scalars(select(Subscriber)).one())
    gone = client.post(f"/unsubscribe/{fresh}")
    assert gone.status_code == 200 and "not on the list" in gone.get_data(as_text=True)


# --- the web version of an edition -------------------------------------------------------------


def test_edition_web_version_has_no_personal_parts(client, store, clock, ctx):
    morning_articles(store, clock)
    add_subscribers(store, clock, 1)
    send_edition(ctx)
    page = client.get("/editions/2026-11-24")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Story story-0" in html
    assert "NLGREET" not in html and "NLUNSUB" not in html and "/unsubscribe/" not in html
    assert "reader0" not in html and f"{BASE}/subscribe" in html
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize("day", ["2026-11-25", "2026-13-45", "yesterday", "2026-11-24x", "20261124"])
def test_missing_or_malformed_edition_dates_are_404_pages(client, day):
    response = client.get(f"/editions/{day}")
    assert response.status_code == 404 and "Page not found" in response.get_data(as_text=True)


def test_skipped_editions_have_no_web_version(client, ctx):
    assert send_edition(ctx, day=date(2026, 11, 24)).outcome == "skipped"
    assert client.get("/editions/2026-11-24").status_code == 404


# --- newsletter serve -------------------------------------------------------------------------


def test_serve_refuses_to_start_without_a_key_in_production(runner, tmp_path, db_url, store):
    cfg = Path(config_file(tmp_path, db_url))
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(f'secret_key = "{SECRET}"', ""), encoding="utf-8")
    result = runner.invoke(cli, ["--config", str(cfg), "serve", "--port", str(free_port())])
    assert result.exit_code == 2
    assert result.output == f"error: {cfg}: web.secret_key: missing: set it in the file or in $NEWSLETTER_SECRET_KEY\n"


def test_serve_answers_on_the_port_it_was_given(tmp_path, db_url, store):
    port = free_port()
    cfg = config_file(tmp_path, db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_") or k == PG_ENV}
    code = "from newsletter.cli import main; main()"
    command = [sys.executable, "-c", code, "--config", cfg, "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/subscribe", timeout=2) as response:
                    page = response.read().decode()
                    cookie = response.headers["Set-Cookie"]
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
                assert time.monotonic() < deadline, "newsletter serve did not start"
                time.sleep(0.1)
        assert "Get Breakfast in red every morning" in page
        assert "Secure" not in cookie  # plain HTTP on this machine: a Secure cookie would never come back
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout:
            process.stdout.close()


def test_a_burst_of_parallel_sign_ups_cannot_pass_the_limit_together(store, clock):
    barrier = threading.Barrier(12)
    allowed: list[bool] = []

    def attempt() -> None:
        barrier.wait()
        with store.session() as session:
            verdict = allow_attempt(session, "subscribe", "one-client", clock.now(), 5)
        allowed.append(verdict)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(allowed) == [False] * 7 + [True] * 5


def test_without_a_proxy_the_app_serves_under_base_urls_path_too(db_url, smtp_sink, store, clock):
    """`newsletter serve` on its own: the links in mails (base_url/...) must work as they are."""
    client = browser(create_app(make_config(db_url, smtp_sink), store=store, clock=clock))
    page = client.get("/newsletter/subscribe")
    assert page.status_code == 200 and 'action="/newsletter/subscribe"' in page.get_data(as_text=True)
    assert client.get("/newsletter/").headers["Location"] == "/newsletter/subscribe"
    assert client.get("/newsletter/unsubscribe/forged-token").status_code in (200, 400, 404)
