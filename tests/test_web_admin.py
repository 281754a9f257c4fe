"""The staff admin: nothing without a login, CSRF on every form, paging, status changes, editions."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.demo.sink import free_port
from newsletter.store import Store
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    OutboxMessage,
    OutboxStatus,
    StaffUser,
    Subscriber,
    SubscriberEvent,
    SubscriberStatus,
)
from newsletter.web import create_app
from newsletter.web.auth import add_staff_user
from tests.conftest import SMTPServer, add_subscribers, make_config

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(config: Config, store: Store, clock: FixedClock) -> Flask:
    # A cheap hash keeps these tests fast; `staff add` itself uses werkzeug's default (scrypt).
    cheap = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
    with store.session() as session:
        session.add(StaffUser(username="ana", password_hash=cheap, created_at=clock.now()))
    return create_app(config, store=store, clock=clock)


def browser(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_REFERER"] = "https://localhost/admin/"
    return client


def token_on(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    return CSRF.search(page.get_data(as_text=True)).group(1)


def log_in(client: FlaskClient, password: str = PASSWORD, next_path: str = "", username: str = "ana"):
    data = {"csrf_token": token_on(client, "/admin/login"), "username": username, "password": password}
    if next_path:
        data["next"] = next_path
    return client.post("/admin/login", data=data)


@pytest.fixture
def staff(app: Flask) -> FlaskClient:
    client = browser(app)
    assert log_in(client).status_code == 302
    return client


def status_of(store: Store, email: str) -> SubscriberStatus:
    with store.session() as session:
        return session.scalars(select(Subscriber.status).where(Subscriber.email == email)).one()


ADMIN_PAGES = [
    "/admin/",
    "/admin/subscribers",
    "/admin/subscribers?q=x",
    "/admin/editions",
    "/admin/editions/2026-11-24",
]


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_nothing_under_admin_without_a_login(app, path):
    response = browser(app).get(path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    # The mount point is base_url's path (/newsletter); ``next`` is relative to it.
    assert location.path == "/newsletter/admin/login" and parse_qs(location.query)["next"] == [path.rstrip("?")]


def test_posts_under_admin_need_a_login_and_a_csrf_token(app, store, clock):
    add_subscribers(store, clock, 1)
    client = browser(app)
    assert client.post("/admin/subscribers/1/status", data={"status": "unsubscribed"}).status_code == 400
    token = token_on(client, "/admin/login")  # a valid form token, but nobody logged in
    refused = client.post("/admin/subscribers/1/status", data={"csrf_token": token, "status": "unsubscribed"})
    assert refused.status_code == 302 and "/admin/login" in refused.headers["Location"]
    assert status_of(store, "reader0@example.org") == SubscriberStatus.ACTIVE


def test_login_and_logout(app, store):
    client = browser(app)
    wrong = log_in(client, "not the password")
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.get_data(as_text=True)
    nobody = log_in(client, username="nobody")
    assert nobody.status_code == 401 and "Wrong user name or password" in nobody.get_data(as_text=True)
    for odd in ("an\x00a", "a" * 500, "an a"):  # answered like any wrong name, on every database
        assert log_in(client, username=odd).status_code == 401
    right = log_in(client)
    assert right.status_code == 302 and right.headers["Location"].endswith("/admin/subscribers")
    cookie = right.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    with store.session() as session:
        assert session.scalars(select(StaffUser)).one().last_login_at is not None
    page = client.get("/admin/subscribers")
    assert page.status_code == 200 and "Log out" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    out = client.post("/admin/logout", data={"csrf_token": CSRF.search(page.get_data(as_text=True)).group(1)})
    assert out.status_code == 302
    assert client.get("/admin/subscribers").status_code == 302


@pytest.mark.parametrize(
    ("next_path", "lands_on"),
    [
        ("/admin/editions", "/admin/editions"),
        ("https://evil.example/phish", "/admin/subscribers"),
        ("//evil.example/phish", "/admin/subscribers"),
        ("/\\evil.example", "/admin/subscribers"),
        ("javascript:alert(1)", "/admin/subscribers"),
        ("/admin/\r\nSet-Cookie: x=1", "/admin/subscribers"),
    ],
)
def test_login_next_is_only_ever_a_local_path(app, next_path, lands_on):
    response = log_in(browser(app), next_path=next_path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.netloc in ("", "localhost") and location.path == "/newsletter" + lands_on


def test_failed_logins_are_rate_limited_in_the_database(app, config, store, clock):
    client = browser(app)
    for _ in range(20):
        assert log_in(client, "guess").status_code == 401
    assert log_in(client).status_code == 429  # even the right password, for the next hour
    other = browser(create_app(config, store=store, clock=clock))
    assert log_in(other).status_code == 429
    clock.advance(3601)
    assert log_in(client).status_code == 302


def test_a_new_password_ends_older_sessions(app, staff, store, clock):
    assert staff.get("/admin/subscribers").status_code == 200
    with store.session() as session:
        add_staff_user(session, "ana", "another long password", clock, replace=True)
    assert staff.get("/admin/subscribers").status_code == 302


def test_search_and_keyset_paging(staff, store, clock):
    add_subscribers(store, clock, 120)
    add_subscribers(store, clock, 3, SubscriberStatus.BOUNCED, prefix="dead")
    first = staff.get("/admin/subscribers").get_data(as_text=True)
    assert first.count('<tr>\n    <td class="num">') == 50
    assert "reader0@example.org" in first and "reader50@example.org" not in first
    assert "120 active" in first and "3 bounced" in first
    next_link = re.search(r'href="([^"]*after=\d+[^"]*)"', first).group(1).replace("&amp;", "&")
    second = staff.get(next_link).get_data(as_text=True)
    assert "reader50@example.org" in second and "reader49@example.org" not in second
    back = re.search(r'href="([^"]*before=\d+[^"]*)"', second).group(1).replace("&amp;", "&")
    assert "reader0@example.org" in staff.get(back).get_data(as_text=True)
    found = staff.get("/admin/subscribers?q=READER11&status=active").get_data(as_text=True)
    assert "reader11@example.org" in found and "reader110@example.org" in found
    assert "reader12@example.org" not in found and "after=" not in found
    bounced = staff.get("/admin/subscribers?status=bounced").get_data(as_text=True)
    assert "dead0@example.org" in bounced and "reader0@example.org" not in bounced
    assert "No subscribers match" in staff.get("/admin/subscribers?q=%25").get_data(as_text=True)
    assert staff.get("/admin/subscribers?status=nonsense").status_code == 400
    assert staff.get("/admin/subscribers?after=-1").status_code == 400
    # Odd digits, ids beyond the database's integers and control characters: 400, never a 500.
    for query in ("after=%C2%B2", "before=99999999999", "q=%00", "q=a%0Ab"):
        assert staff.get(f"/admin/subscribers?{query}").status_code == 400, query
    escaped = staff.get("/admin/subscribers?q=%3Cscript%3E").get_data(as_text=True)
    assert "<script>" not in escaped and "&lt;script&gt;" in escaped


def test_change_a_status_with_csrf(staff, store, clock):
    add_subscribers(store, clock, 2)
    with store.session() as session:
        reader_id = session.scalars(select(Subscriber.id).where(Subscriber.email == "reader1@example.org")).one()
    page = staff.get("/admin/subscribers?q=reader")
    token = CSRF.search(page.get_data(as_text=True)).group(1)
    url = f"/admin/subscribers/{reader_id}/status"
    assert staff.post(url, data={"status": "unsubscribed"}).status_code == 400  # no CSRF token
    done = staff.post(url, data={"csrf_token": token, "status": "unsubscribed", "back": "/admin/subscribers?q=reader"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/admin/subscribers?q=reader")
    assert "is now unsubscribed" in staff.get("/admin/subscribers?q=reader").get_data(as_text=True)
    assert status_of(store, "reader1@example.org") == SubscriberStatus.UNSUBSCRIBED
    with store.session() as session:
        event = session.scalars(select(SubscriberEvent)).one()
        assert (event.event, event.source, event.subscriber_id) == ("unsubscribed", "admin:ana", reader_id)
    evil_back = staff.post(
        url, data={"csrf_token": token, "status": "active", "consent": "yes", "back": "https://evil.example/"}
    )
    assert evil_back.headers["Location"].endswith("/admin/subscribers")
    assert status_of(store, "reader1@example.org") == SubscriberStatus.ACTIVE
    assert staff.post(url, data={"csrf_token": token, "status": "pending"}).status_code == 400
    assert staff.post(url, data={"csrf_token": token, "status": "gone"}).status_code == 400
    for absent in (9999, 99999999999):
        missing = staff.post(f"/admin/subscribers/{absent}/status", data={"csrf_token": token, "status": "active"})
        assert missing.status_code == 404


def test_editions_with_delivery_counts_and_failures(staff, store, clock):
    add_subscribers(store, clock, 3)
    now = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    with store.session() as session:
        edition = Edition(
            date=date(2026, 11, 24),
            window_start=now,
            window_end=now,
            subject="Breakfast in red: Tuesday 24 November 2026",
            status=EditionStatus.SENDING,
            html="<p>x</p>",
            web_html="<p>x</p>",
            nonce="abc123",
            created_at=now,
        )
        session.add(edition)
        session.flush()
        ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
        session.add_all(
            [
                Delivery(edition_id=edition.id, subscriber_id=ids[0], status=DeliveryStatus.SENT, attempts=1),
                Delivery(
                    edition_id=edition.id,
                    subscriber_id=ids[1],
                    status=DeliveryStatus.FAILED,
                    attempts=1,
                    last_error="rcpt: 550 5.1.1 <reader1@example.org>: no such user",
                ),
                Delivery(
                    edition_id=edition.id,
                    subscriber_id=ids[2],
                    status=DeliveryStatus.DEFERRED,
                    attempts=3,
                    last_error="data: 451 4.3.0 try again later",
                ),
            ]
        )
    listing = staff.get("/admin/editions").get_data(as_text=True)
    assert "2026-11-24" in listing and "Breakfast in red: Tuesday 24 November 2026" in listing
    assert re.search(r'<td class="num">1</td>\s*<td class="num">1</td>\s*<td class="num">1</td>', listing)
    detail = staff.get("/admin/editions/2026-11-24").get_data(as_text=True)
    assert "550 5.1.1 &lt;reader1@example.org&gt;: no such user" in detail
    assert "451 4.3.0 try again later" in detail and "/editions/2026-11-24" in detail
    assert staff.get("/admin/editions/2026-11-25").status_code == 404
    assert staff.get("/admin/editions?before=garbage").status_code == 400


# --- readers who left, and fresh confirmation links ------------------------------------------


def subscriber_id(store: Store, email: str) -> int:
    with store.session() as session:
        return session.scalars(select(Subscriber.id).where(Subscriber.email == email)).one()


def events_of(store: Store) -> list[tuple[str, str]]:
    with store.session() as session:
        return [(e.event, e.source) for e in session.scalars(select(SubscriberEvent).order_by(SubscriberEvent.id))]


def flashed(client: FlaskClient) -> list[str]:
    page = client.get("/admin/subscribers").get_data(as_text=True)
    return re.findall(r'<p class="notice" role="status">([^<]*)</p>', page)


@pytest.mark.parametrize("left", [SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED])
def test_a_reader_who_left_becomes_active_only_with_their_consent_ticked(staff, store, clock, left):
    add_subscribers(store, clock, 1, left, prefix="gone")
    add_subscribers(store, clock, 1)
    reader = subscriber_id(store, "gone0@example.org")
    page = staff.get("/admin/subscribers").get_data(as_text=True)
    # The box is offered for the reader who left, and only for them.
    assert page.count('name="consent"') == 1 and f'id="consent-{reader}"' in page
    assert "They asked to come back" in page
    token = CSRF.search(page).group(1)
    url = f"/admin/subscribers/{reader}/status"
    back = "/admin/subscribers?q=gone"

    refused = staff.post(url, data={"csrf_token": token, "status": "active", "back": back})
    assert refused.status_code == 303 and refused.headers["Location"].endswith(back)
    (message,) = flashed(staff)
    assert "gone0@example.org" in message and "nothing changed" in message and "\n" not in message
    assert status_of(store, "gone0@example.org") == left
    assert events_of(store) == []

    done = staff.post(url, data={"csrf_token": token, "status": "active", "consent": "yes", "back": back})
    assert done.status_code == 303
    assert flashed(staff) == [f"Subscriber {reader} is now active."]
    assert status_of(store, "gone0@example.org") == SubscriberStatus.ACTIVE
    assert events_of(store) == [("reactivated", "admin:ana")]


@pytest.mark.parametrize(
    "forged",
    [
        {"consent": "no"},
        {"consent": "YES"},
        {"consent": "yes\x00"},
        {"consent": "y" * 5000},
        {"consent": ["yes", "yes"]},
        {"consent": "yes", "status": ["active", "unsubscribed"]},
        {"status": "active\r\n"},
        {"status": ""},
    ],
)
def test_forged_status_forms_change_nothing(staff, store, clock, forged):
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    token = token_on(staff, "/admin/subscribers")
    data = {"csrf_token": token, "status": "active", **forged}
    response = staff.post(f"/admin/subscribers/{subscriber_id(store, 'gone0@example.org')}/status", data=data)
    assert response.status_code == 400 and "Traceback" not in response.get_data(as_text=True)
    assert status_of(store, "gone0@example.org") == SubscriberStatus.UNSUBSCRIBED
    assert events_of(store) == []


def test_a_pending_reader_can_still_be_made_active_without_the_box(staff, store, clock):
    add_subscribers(store, clock, 1, SubscriberStatus.PENDING, prefix="waiting")
    token = token_on(staff, "/admin/subscribers")
    url = f"/admin/subscribers/{subscriber_id(store, 'waiting0@example.org')}/status"
    assert staff.post(url, data={"csrf_token": token, "status": "active"}).status_code == 303
    assert status_of(store, "waiting0@example.org") == SubscriberStatus.ACTIVE
    assert events_of(store) == [("confirmed", "admin:ana")]


def outbox_rows(store: Store) -> list[OutboxMessage]:
    with store.session() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_resend_confirmation_for_a_pending_reader(staff, store, clock, smtp_sink: SMTPServer):
    add_subscribers(store, clock, 1, SubscriberStatus.PENDING, prefix="waiting")
    add_subscribers(store, clock, 1)
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    pending, active, gone = (
        subscriber_id(store, e) for e in ("waiting0@example.org", "reader0@example.org", "gone0@example.org")
    )
    page = staff.get("/admin/subscribers").get_data(as_text=True)
    assert page.count("Resend confirmation") == 1 and f"/admin/subscribers/{pending}/resend-confirmation" in page
    token = CSRF.search(page).group(1)
    url = f"/admin/subscribers/{pending}/resend-confirmation"
    assert staff.post(url).status_code == 400  # no CSRF token
    assert staff.post(url, data={"csrf_token": token + "x"}).status_code == 400
    assert outbox_rows(store) == []

    done = staff.post(url, data={"csrf_token": token, "back": "/admin/subscribers?status=pending"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/admin/subscribers?status=pending")
    assert flashed(staff) == ["A new confirmation link went to waiting0@example.org."]
    (mail,) = smtp_sink.handler.by_recipient()["waiting0@example.org"]
    link = re.search(
        r"https://news.example.com/newsletter(/confirm/\S+)", mail.message.get_body(("plain",)).get_content()
    )
    assert staff.get(link.group(1)).status_code == 200
    assert status_of(store, "waiting0@example.org") == SubscriberStatus.ACTIVE
    assert [r.status for r in outbox_rows(store)] == [OutboxStatus.SENT]

    for other, words in ((active, "already active"), (gone, "sign up again")):
        refused = staff.post(f"/admin/subscribers/{other}/resend-confirmation", data={"csrf_token": token})
        assert refused.status_code == 303
        (message,) = flashed(staff)
        assert message.startswith("No confirmation sent:") and words in message
    for absent in (9999, 99999999999):
        assert (
            staff.post(f"/admin/subscribers/{absent}/resend-confirmation", data={"csrf_token": token}).status_code
            == 404
        )
    assert len(smtp_sink.handler.received) == 1 and len(outbox_rows(store)) == 1


def test_resend_confirmation_while_the_mail_server_is_down_says_it_is_queued(db_url, store, clock):
    config = make_config(db_url, None, smtp={"port": free_port(), "timeout": 2})
    cheap = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
    with store.session() as session:
        session.add(StaffUser(username="ana", password_hash=cheap, created_at=clock.now()))
    client = browser(create_app(config, store=store, clock=clock))
    assert log_in(client).status_code == 302
    add_subscribers(store, clock, 1, SubscriberStatus.PENDING, prefix="waiting")
    token = token_on(client, "/admin/subscribers")
    reader = subscriber_id(store, "waiting0@example.org")
    response = client.post(f"/admin/subscribers/{reader}/resend-confirmation", data={"csrf_token": token})
    assert response.status_code == 303
    (message,) = flashed(client)
    assert "is queued but not sent yet" in message and "cannot connect" in message
    (row,) = outbox_rows(store)
    assert row.status == OutboxStatus.PENDING and row.attempts == 1 and row.last_error


def test_a_failed_login_keeps_the_user_name_but_never_the_password(app):
    client = browser(app)
    wrong = log_in(client, "not the password at all")
    html = wrong.get_data(as_text=True)
    assert wrong.status_code == 401
    assert re.search(r'<input id="username"[^>]* value="ana"', html)
    assert "not the password at all" not in html
    assert not re.search(r'<input id="password"[^>]* value=', html)
    odd = log_in(client, "guess", username='"><script>x</script>')
    assert "<script>x" not in odd.get_data(as_text=True) and "&#34;&gt;&lt;script&gt;" in odd.get_data(as_text=True)
    control = log_in(client, "guess", username="an\x1ba")
    assert re.search(r'<input id="username"[^>]* value=""', control.get_data(as_text=True))
