"""A reader clicks a tracked link in the edition they received and lands on the story.

Everything is real: the edition is sent through the pipeline to an SMTP server, the
received HTML part is opened in Debian's Chromium, the click goes to the Flask app on a
real WSGI server, which redirects to the story served by ``http.server``. Then the admin's
overview shows the click in its charts. Screenshots are saved in the test's folder.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from newsletter.clock import FixedClock
from newsletter.context import Context
from newsletter.publish import send_edition
from newsletter.store.models import Click, StaffUser
from newsletter.web import create_app
from newsletter.web.clicks import recorder_of
from tests.conftest import add_article, add_subscribers, make_config, open_chromium, require_chromium

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery staple"


@pytest.fixture
def newsroom(tmp_path: Path) -> Iterator[str]:
    """The newsroom's site: the stories the edition links to, on a server of their own."""
    site = tmp_path / "site"
    site.mkdir()
    for i in range(3):
        (site / f"story-{i}.html").write_text(
            f"<!doctype html><title>Story {i}</title><h1 id='headline'>Story {i} on the newsroom's site</h1>",
            encoding="utf-8",
        )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the browser part is the same on both databases
def test_a_reader_clicks_a_story_and_the_admin_sees_it(db_url, store, smtp_sink, server, newsroom, tmp_path) -> None:
    require_chromium()
    base, slot = server
    clock = FixedClock(datetime(2026, 11, 24, 6, 30, tzinfo=UTC))
    config = make_config(db_url, smtp_sink, web={"base_url": base, "production": False})
    cutoff = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    for i in range(3):
        add_article(store, clock, f"s{i}", cutoff - timedelta(hours=1 + i), url=f"{newsroom}/story-{i}.html")
    add_subscribers(store, clock, 2)
    from newsletter.tokens import Tokens

    assert send_edition(Context(config, store, clock, Tokens(config.web.secret_key, clock))).outcome == "sent"
    (received,) = smtp_sink.handler.by_recipient()["reader1@example.org"]
    html = received.message.get_body(("html",)).get_content()
    assert f"{base}/c/" in html and f"{newsroom}/story-0.html" not in html  # tracked, not direct

    clock.set(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))  # hours after delivery: a reader, not a scanner
    app = create_app(config, store=store, clock=clock)
    slot["app"] = app
    with store.session() as session:
        session.add(StaffUser(username="desk", password_hash=generate_password_hash(PASSWORD), created_at=clock.now()))
    try:
        with sync_playwright() as playwright:
            browser = open_chromium(playwright, tmp_path / "profile", viewport={"width": 1200, "height": 900})
            page = browser.new_page()
            mail = tmp_path / "received.html"
            mail.write_text(html, encoding="utf-8")
            page.goto(mail.as_uri())
            page.screenshot(path=str(tmp_path / "received.png"), full_page=True)
            with page.expect_navigation():
                page.locator(".lead-headline a").click()
            assert page.url == f"{newsroom}/story-0.html"
            assert page.locator("#headline").inner_text() == "Story 0 on the newsroom's site"
            page.screenshot(path=str(tmp_path / "story.png"))
            recorder_of(app).flush()
            with store.session() as session:
                clicks = session.scalars(select(Click)).all()
            assert [(c.position, c.at) for c in clicks] == [(1, clock.now())]

            page.goto(f"{base}/admin/login")
            page.fill("input[name=username]", "desk")
            page.fill("input[name=password]", PASSWORD)
            with page.expect_navigation():
                page.locator("form button[type=submit], form input[type=submit]").first.click()
            page.goto(f"{base}/admin/")
            chart = page.locator("svg.chart").first
            chart.wait_for(state="visible")
            box = chart.bounding_box()
            assert box is not None and box["width"] > 200
            shot = tmp_path / "admin.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshots: {tmp_path}/received.png story.png admin.png")
            browser.close()
    finally:
        recorder_of(app).close()
