"""The next-edition page in a real browser: log in, pin and hide stories, watch the framed preview follow.

Debian's chromium (never a downloaded browser) driven by Playwright against a real WSGI
server, at a desktop width and at a phone's. The preview is framed by the page, so the
framing headers (and the page's CSP, which must let it frame its own preview and nothing
else) are tested for real here: a refused frame is a console error and an empty frame.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, FrameLocator, Page, sync_playwright
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from newsletter.clock import FixedClock
from newsletter.store import Store
from newsletter.store.models import Article, StaffUser
from newsletter.web import create_app
from tests.conftest import SMTPServer, make_config, morning_articles, open_chromium, require_chromium

PASSWORD = "correct horse battery staple"
PHONE, DESKTOP = 375, 1200

pytestmark = pytest.mark.slow


def _article_id(store: Store, guid: str) -> int:
    with store.session() as session:
        return session.scalars(select(Article.id).where(Article.guid == guid)).one()


def _preview(page: Page) -> FrameLocator:
    return page.frame_locator("iframe.preview")


def _lead(page: Page) -> str:
    return _preview(page).locator(".lead-headline").inner_text().strip()


def _no_sideways_scrolling(page: Page, width: int) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width}px wide at a {width}px viewport"


def _box(page: Page, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not displayed"
    return box


def _shot(page: Page, folder: Path, name: str) -> Path:
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    assert path.stat().st_size > 1000
    return path


def test_pin_and_hide_with_the_preview_following_at_desktop_and_phone_widths(
    db_url: str, store: Store, smtp_sink: SMTPServer, server: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    require_chromium()
    base, slot = server
    clock = FixedClock(datetime(2026, 11, 24, 6, 30, tzinfo=UTC))
    config = make_config(db_url, smtp_sink, web={"base_url": base, "production": False})
    with store.session() as session:
        cheap = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
        session.add(StaffUser(username="ana", password_hash=cheap, created_at=clock.now()))
    slot["app"] = create_app(config, store=store, clock=clock)
    morning_articles(store, clock, count=4)  # story-0 leads; Sport: 1, 3; News: 2
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error" and "favicon" not in message.location.get("url", ""):
            problems.append(message.text)

    with sync_playwright() as playwright:
        context = open_chromium(playwright, tmp_path / "profile", viewport={"width": DESKTOP, "height": 900})
        try:
            context.set_default_timeout(10_000)
            page: Page = context.pages[0] if context.pages else context.new_page()
            page.on("console", watch)

            # 1. The page is behind the login, which leads back to it.
            page.goto(f"{base}/admin/next")
            page.get_by_label("User name").fill("ana")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/admin/next")
            assert page.get_by_role("heading", name="Next edition: Tuesday 24 November 2026").is_visible()
            assert page.locator(".state").inner_text().strip().lower() == "not made"

            # 2. Desktop: the preview, at most 640 px wide, beside the controls.
            assert _lead(page) == "Story story-0"
            frame = _box(page, "iframe.preview")
            controls = _box(page, ".next-controls")
            assert 600 <= frame["width"] <= 640, frame
            assert controls["x"] + controls["width"] <= frame["x"], (controls, frame)
            _no_sideways_scrolling(page, DESKTOP)
            _shot(page, shots, "next-edition-1200.png")

            # 3. Pin a story: the page says so, and the framed preview has a new lead.
            story = page.locator(f'li[data-article="{_article_id(store, "story-2")}"]')
            story.get_by_role("button", name="Pin as lead").click()
            page.wait_for_url(f"{base}/admin/next?date=2026-11-24")
            assert "leads the edition of 2026-11-24" in page.locator(".notice").inner_text()
            assert _lead(page) == "Story story-2"
            assert story.get_by_role("button", name="Unpin").is_visible()
            _shot(page, shots, "next-edition-1200-pinned.png")

            # 4. A phone: one column, nothing wider than the screen, the preview still there.
            page.set_viewport_size({"width": PHONE, "height": 800})
            page.reload()
            _no_sideways_scrolling(page, PHONE)
            frame = _box(page, "iframe.preview")
            controls = _box(page, ".next-controls")
            assert frame["width"] <= PHONE - 30 and frame["x"] >= 0, frame
            assert controls["y"] >= frame["y"] + frame["height"], "the controls are not under the preview"
            assert _lead(page) == "Story story-2"
            _shot(page, shots, "next-edition-375.png")

            # 5. Hide a story on the phone: gone from the preview, listed under the hidden ones.
            hidden_id = _article_id(store, "story-1")
            assert _preview(page).get_by_text("Story story-1").count() == 1
            page.locator(f'li[data-article="{hidden_id}"]').get_by_role("button", name="Hide").click()
            page.wait_for_url(f"{base}/admin/next?date=2026-11-24")
            assert "hidden" in page.locator(".notice").inner_text()
            _preview(page).locator(".lead-headline").wait_for()
            assert _preview(page).get_by_text("Story story-1").count() == 0
            assert _preview(page).get_by_text("Story story-3").count() == 1
            hidden_list = page.locator("section", has=page.get_by_role("heading", name="Hidden stories"))
            assert hidden_list.get_by_text("Story story-1", exact=True).is_visible()
            assert hidden_list.get_by_role("button", name="Unhide").is_visible()
            _no_sideways_scrolling(page, PHONE)
            _shot(page, shots, "next-edition-375-hidden.png")

            # 6. And back at the desktop width after the changes.
            page.set_viewport_size({"width": DESKTOP, "height": 900})
            page.reload()
            _no_sideways_scrolling(page, DESKTOP)
            assert _lead(page) == "Story story-2"
            _shot(page, shots, "next-edition-1200-after.png")
        finally:
            context.close()

    assert problems == []  # no CSP violations, refused frames or failed requests
