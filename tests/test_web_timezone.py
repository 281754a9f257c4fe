"""The reader's time zone on the web: the sign-up form's optional field, and the admin's list.

SQLite only: the store's zone functions are tested on both databases in test_subscribers.py.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.store import Store
from newsletter.store.models import StaffUser, Subscriber, SubscriberStatus
from newsletter.web import create_app
from tests.conftest import add_subscribers
from tests.test_web import browser, confirm_link, form_token, local, mails_to, subscribe

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(config: Config, store: Store, clock: FixedClock) -> Flask:
    return create_app(config, store=store, clock=clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return browser(app)


def zones(store: Store) -> dict[str, str]:
    with store.session() as session:
        return dict(session.execute(select(Subscriber.email, Subscriber.timezone)).all())


def test_the_form_has_an_optional_zone_field_the_script_may_fill(client):
    page = client.get("/subscribe")
    html = page.get_data(as_text=True)
    field = re.search(r'<input id="timezone"[^>]*>', html)
    assert field and 'name="timezone"' in field.group() and 'list="timezones"' in field.group()
    assert "data-guess" in field.group() and 'value=""' in field.group() and "required" not in field.group()
    assert '<label for="timezone">Your time zone' in html and "optional" in html
    options = re.findall(r'<option value="([^"]+)">', html)
    assert len(options) > 400 and "Asia/Kathmandu" in options and "localtime" not in options
    assert page.headers["Content-Security-Policy"].endswith("; script-src 'self'")
    script = client.get("/static/timezone.js")
    body = script.get_data(as_text=True)
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert "resolvedOptions().timeZone" in body and "data-guess" in body
    script.close()


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("asia/kolkata", "Asia/Kolkata"),
        ("UTC", "UTC"),
        ("Etc/GMT+5", "Etc/GMT+5"),
        ("US/Eastern", "US/Eastern"),
        (" Pacific/Chatham ", "Pacific/Chatham"),
        ("", ""),
    ],
)
def test_a_zone_travels_from_the_form_through_the_confirmation(client, store, smtp_sink, typed, stored):
    response = subscribe(client, "ana@example.org", "Ana", timezone=typed)
    assert response.status_code == 303
    assert zones(store) == {"ana@example.org": stored}
    (mail,) = mails_to(smtp_sink, "ana@example.org")
    assert client.get(local(confirm_link(mail))).status_code == 200
    with store.session() as session:
        reader = session.scalars(select(Subscriber)).one()
        assert (reader.status, reader.timezone) == (SubscriberStatus.ACTIVE, stored)


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("Mars/Olympus_Mons", "We do not know that time zone"),
        ("Europe/Londn", "We do not know that time zone"),
        ("../../etc/passwd", "That is not a time zone name"),
        ("localtime", "That is not a time zone name"),
        ("Europe/London\n", "no line breaks or special characters"),
        ("Europe/\x1b]0;owned\x07London", "no line breaks or special characters"),
        ("x" * 10_000, "That is not a time zone name"),
    ],
)
def test_a_bad_zone_reshows_the_form_with_a_message_on_that_field(client, store, smtp_sink, typed, words):
    response = subscribe(client, "ana@example.org", "Ana", timezone=typed)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    error = re.search(r'<p class="error" id="([^"]+)" role="alert">([^<]*)</p>', html)
    assert error and error.group(1) == "timezone-error" and words in error.group(2)
    assert len(re.findall(r'class="error"', html)) == 1  # only that field
    field = re.search(r'<input id="timezone"[^>]*>', html, re.S)
    assert field and 'aria-invalid="true"' in field.group() and "timezone-error" in field.group()
    assert "data-guess" not in field.group()  # the reader's value stays as they left it
    assert 'value="ana@example.org"' in html and "x" * 100 not in html and "\x1b" not in html
    assert zones(store) == {} and smtp_sink.handler.received == []


def test_a_returning_readers_empty_field_keeps_their_zone(client, store, smtp_sink, clock):
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED)
    with store.session() as session:
        session.execute(
            Subscriber.__table__.update().values(timezone="Asia/Kathmandu")  # they had one before they left
        )
    clock.advance(60)
    assert subscribe(client, "reader0@example.org", timezone="").status_code == 303
    (mail,) = mails_to(smtp_sink, "reader0@example.org")
    assert client.get(local(confirm_link(mail))).status_code == 200
    with store.session() as session:
        reader = session.scalars(select(Subscriber)).one()
        assert (reader.status, reader.timezone) == (SubscriberStatus.ACTIVE, "Asia/Kathmandu")


def test_staff_see_and_set_a_zone_in_the_admin_list(app, store, clock):
    add_subscribers(store, clock, 2)
    cheap = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
    with store.session() as session:
        session.add(StaffUser(username="ana", password_hash=cheap, created_at=clock.now()))
    staff = app.test_client()
    staff.environ_base["HTTP_REFERER"] = "https://localhost/admin/"
    login = {"csrf_token": form_token(staff, "/admin/login"), "username": "ana", "password": PASSWORD}
    assert staff.post("/admin/login", data=login).status_code == 302
    token = form_token(staff, "/admin/subscribers")
    url = "/admin/subscribers/1/timezone"
    done = staff.post(url, data={"csrf_token": token, "timezone": "america/new_york"}, follow_redirects=True)
    html = done.get_data(as_text=True)
    assert "reader0@example.org now has the time zone America/New_York." in html
    assert re.search(r'id="timezone-1" name="timezone" type="text" value="America/New_York"', html)
    assert "<td>America/New_York</td>" in html and "newsletter’s</span></td>" in html  # reader 1 has none
    refused = staff.post(url, data={"csrf_token": token, "timezone": "Mars/X"}, follow_redirects=True)
    assert "Time zone not changed: &#39;Mars/X&#39; is not a time zone we know" in refused.get_data(as_text=True)
    cleared = staff.post(url, data={"csrf_token": token, "timezone": "none"}, follow_redirects=True)
    assert "now has the time zone of the newsletter." in cleared.get_data(as_text=True)
    assert (
        staff.post("/admin/subscribers/99/timezone", data={"csrf_token": token, "timezone": "UTC"}).status_code == 404
    )
    assert staff.post(url, data={"csrf_token": token}).status_code == 400
    assert zones(store) == {"reader0@example.org": "", "reader1@example.org": ""}
