"""A reader's whole life on the list, in a real browser against a real WSGI server and SMTP server.

Debian's chromium (never a downloaded browser) driven by Playwright: subscribe through the
form, follow the link in the confirmation email the SMTP server caught, receive the next
edition, leave through the unsubscribe link in it, and miss the edition after that.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from newsletter.clock import FixedClock
from newsletter.context import Context
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.models import StaffUser, Subscriber, SubscriberStatus
from newsletter.tokens import Tokens
from newsletter.web import create_app
from tests.conftest import (
    CHROMIUM,
    SECRET,
    SMTPServer,
    add_article,
    add_subscribers,
    make_config,
    morning_articles,
    open_chromium,
    require_chromium,
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
READER = "ana.garcia@example.org"

pytestmark = pytest.mark.slow


def _status(store: Store, email: str) -> SubscriberStatus | None:
    with store.session() as session:
        return session.scalars(select(Subscriber.status).where(Subscriber.email == email)).first()


def _link(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, f"no link matching {pattern} in:\n{text}"
    return found.group(0)


def test_subscribe_confirm_receive_unsubscribe_in_a_real_browser(
    db_url: str, store: Store, smtp_sink: SMTPServer, server: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    require_chromium()
    base, slot = server
    clock = FixedClock(datetime(2026, 11, 23, 20, 0, tzinfo=UTC))  # the evening before
    config = make_config(db_url, smtp_sink, web={"base_url": base, "production": False})
    tokens = Tokens(SECRET, clock)
    slot["app"] = create_app(config, store=store, clock=clock)
    morning_articles(store, clock)
    add_subscribers(store, clock, 1)  # someone else, so every edition has a reader
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error" and "favicon" not in message.location.get("url", ""):
            problems.append(message.text)

    with sync_playwright() as playwright:
        context = open_chromium(playwright, tmp_path / "profile")
        try:
            context.set_default_timeout(10_000)
            page: Page = context.pages[0] if context.pages else context.new_page()
            page.on("console", watch)

            # 1. Subscribe through the form, found by its labels as a screen reader would.
            page.goto(f"{base}/subscribe")
            assert page.title() == "Subscribe · Breakfast in red"
            page.get_by_label("Email address").fill(READER)
            page.get_by_label("Your name").fill("Ana García")
            page.screenshot(path=str(ARTIFACTS / "subscribe.png"), full_page=True)
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_url(f"{base}/subscribe/check-your-inbox")
            assert page.get_by_role("heading", name="Check your inbox").is_visible()
            assert _status(store, READER) == SubscriberStatus.PENDING

            # 2. The confirmation email reached the SMTP server; follow its link.
            (confirmation,) = smtp_sink.handler.by_recipient()[READER]
            text = confirmation.message.get_body(("plain",)).get_content()
            page.goto(_link(rf"{re.escape(base)}/confirm/\S+", text))
            assert page.get_by_role("heading", name="You are subscribed").is_visible()
            assert _status(store, READER) == SubscriberStatus.ACTIVE

            # 3. The next morning's edition reaches the reader.
            clock.set(datetime(2026, 11, 24, 6, 30, tzinfo=UTC))
            first = send_edition(Context(config, store, clock, tokens), day=date(2026, 11, 24))
            assert first.outcome == "sent", first.message
            confirmation_then_edition = smtp_sink.handler.by_recipient()[READER]
            assert len(confirmation_then_edition) == 2
            edition = confirmation_then_edition[-1]
            html = edition.message.get_body(("html",)).get_content()
            assert "Good morning, Ana" in html and "Story story-0" in html

            # 4. The unsubscribe link in that email: a page that changes nothing, then the button.
            page.goto(_link(rf"{re.escape(base)}/unsubscribe/[^\"<\s]+", html))
            assert page.get_by_role("heading", name="Unsubscribe from Breakfast in red?").is_visible()
            assert page.get_by_text(READER).is_visible()
            page.screenshot(path=str(ARTIFACTS / "unsubscribe.png"), full_page=True)
            assert _status(store, READER) == SubscriberStatus.ACTIVE
            page.get_by_role("button", name="Unsubscribe").click()
            page.get_by_role("heading", name="You are unsubscribed").wait_for()
            assert _status(store, READER) == SubscriberStatus.UNSUBSCRIBED
            page.screenshot(path=str(ARTIFACTS / "unsubscribed.png"), full_page=True)
        finally:
            context.close()

    # 5. The following edition goes out, but not to them.
    clock.set(datetime(2026, 11, 25, 6, 30, tzinfo=UTC))
    add_article(store, clock, "next-day", datetime(2026, 11, 25, 5, 0, tzinfo=UTC))
    second = send_edition(Context(config, store, clock, tokens), day=date(2026, 11, 25))
    assert second.outcome == "sent" and second.stats is not None and second.stats.sent == 1, second.message
    received = smtp_sink.handler.by_recipient()
    assert len(received[READER]) == 2  # the confirmation and the first edition only
    assert len(received["reader0@example.org"]) == 2
    assert problems == []  # no CSP violations or failed requests in the pages
    assert (ARTIFACTS / "subscribe.png").stat().st_size > 1000
    assert (ARTIFACTS / "unsubscribe.png").stat().st_size > 1000


STAFF_PASSWORD = "correct horse battery staple"
LONG_ADDRESS = "a-rather-long-address-of-someone-who-left@subdomain.of.an.example.org"


def test_admin_fits_a_phone_lines_up_on_a_desktop_and_keeps_a_mistyped_login(
    db_url: str, store: Store, smtp_sink: SMTPServer, server: tuple[str, dict[str, Any]]
) -> None:
    """At 375 px the page never scrolls sideways (the table scrolls in its own box); at 1200 px the filter
    labels share one line; a failed login keeps the user name and never the password."""
    require_chromium()
    base, slot = server
    clock = FixedClock(datetime(2026, 11, 23, 20, 0, tzinfo=UTC))
    config = make_config(db_url, smtp_sink, web={"base_url": base, "production": False})
    slot["app"] = create_app(config, store=store, clock=clock)
    with store.session() as session:
        cheap = generate_password_hash(STAFF_PASSWORD, method="pbkdf2:sha256:1000")
        session.add(StaffUser(username="ana", password_hash=cheap, created_at=clock.now()))
    add_subscribers(store, clock, 8)
    add_subscribers(store, clock, 2, SubscriberStatus.PENDING, prefix="waiting")
    with store.session() as session:
        session.add(
            Subscriber(
                email=LONG_ADDRESS,
                name="Someone With A Rather Long Name Indeed",
                status=SubscriberStatus.UNSUBSCRIBED,
                source="test",
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        expected = "favicon" in message.location.get("url", "") or "status of 401" in message.text  # the wrong password
        if message.type == "error" and not expected:
            problems.append(message.text)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
        )
        try:
            for width, height in ((375, 812), (1200, 900)):
                context = browser.new_context(viewport={"width": width, "height": height})
                context.set_default_timeout(10_000)
                page = context.new_page()
                page.on("console", watch)

                # A failed login keeps what was typed as the user name, and never the password.
                page.goto(f"{base}/admin/login")
                page.get_by_label("User name").fill("ana")
                page.get_by_label("Password").fill("not the password")
                page.get_by_role("button", name="Log in").click()
                page.get_by_role("alert").filter(has_text="Wrong user name or password").wait_for()
                assert page.get_by_label("User name").input_value() == "ana"
                assert page.get_by_label("Password").input_value() == ""
                page.get_by_label("Password").fill(STAFF_PASSWORD)
                page.get_by_role("button", name="Log in").click()
                page.wait_for_url(f"{base}/admin/subscribers")

                sizes = page.evaluate(
                    """() => {
                        const box = document.querySelector('.table-scroll');
                        return {page: document.documentElement.scrollWidth, view: document.documentElement.clientWidth,
                                box: box.scrollWidth, boxView: box.clientWidth};
                    }"""
                )
                assert sizes["page"] <= sizes["view"], f"the page scrolls sideways at {width} px: {sizes}"
                if width == 375:
                    assert sizes["box"] > sizes["boxView"], sizes  # the table scrolls inside its own box
                    page.screenshot(path=str(ARTIFACTS / "admin-subscribers-375.png"), full_page=True)
                    context.close()
                    continue

                query, status = (
                    page.locator("label[for=q]").bounding_box(),
                    page.locator("label[for=status]").bounding_box(),
                )
                fields = [page.locator(s).bounding_box() for s in ("#q", "#status", "form.filters button")]
                assert query and status and all(fields)
                assert status["x"] > query["x"] and abs(status["y"] - query["y"]) < 1, (query, status)
                bottoms = {round(f["y"] + f["height"]) for f in fields if f}
                assert len(bottoms) == 1, fields  # the search box, the list and the button end on one line
                page.screenshot(path=str(ARTIFACTS / "admin-subscribers-1200.png"), full_page=True)

                # Making a reader who left active again: refused until the consent box is ticked.
                page.get_by_label(f"New status for {LONG_ADDRESS}").select_option("active")
                page.get_by_role("button", name=f"Save the status of {LONG_ADDRESS}").click()
                page.get_by_role("status").filter(has_text="nothing changed").wait_for()
                assert _status(store, LONG_ADDRESS) == SubscriberStatus.UNSUBSCRIBED
                page.get_by_label(f"New status for {LONG_ADDRESS}").select_option("active")
                page.get_by_label(f"They asked to come back ({LONG_ADDRESS})").check()
                page.get_by_role("button", name=f"Save the status of {LONG_ADDRESS}").click()
                page.get_by_role("status").filter(has_text="is now active").wait_for()
                assert _status(store, LONG_ADDRESS) == SubscriberStatus.ACTIVE
                context.close()
        finally:
            browser.close()
    assert problems == []
    assert (ARTIFACTS / "admin-subscribers-375.png").stat().st_size > 1000
    assert (ARTIFACTS / "admin-subscribers-1200.png").stat().st_size > 1000
