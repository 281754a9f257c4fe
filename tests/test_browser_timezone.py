"""The sign-up form guesses the reader's time zone in a real phone-sized browser.

Debian's Chromium, told it is on the Chatham Islands (+12:45) and 375 px wide: the page's
own script fills in the field (the page's CSP allows that one file and nothing inline),
the reader sends the form, and the zone is stored with the pending sign-up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, sync_playwright
from sqlalchemy import select

from newsletter.clock import FixedClock
from newsletter.store import Store
from newsletter.store.models import Subscriber
from newsletter.web import create_app
from tests.conftest import SMTPServer, make_config, open_chromium, require_chromium

pytestmark = pytest.mark.slow

ZONE = "Pacific/Chatham"  # one name in every ICU and tz release: no legacy alias to come back instead


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the browser part is the same on both databases
def test_the_browsers_zone_fills_the_field_at_375_px(
    db_url: str, store: Store, smtp_sink: SMTPServer, server: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    require_chromium()
    base, slot = server
    config = make_config(db_url, smtp_sink, web={"base_url": base, "production": False})
    slot["app"] = create_app(config, store=store, clock=FixedClock(datetime(2026, 11, 23, 20, 0, tzinfo=UTC)))
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error" and "favicon" not in message.location.get("url", ""):
            problems.append(message.text)  # a CSP refusal shows up here

    with sync_playwright() as playwright:
        context = open_chromium(
            playwright, tmp_path / "profile", viewport={"width": 375, "height": 812}, timezone_id=ZONE
        )
        try:
            context.set_default_timeout(10_000)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", watch)
            page.goto(f"{base}/subscribe")
            field = page.get_by_label("Your time zone")
            page.wait_for_function("document.getElementById('timezone').value !== ''")
            assert field.input_value() == ZONE
            box = field.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
            widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert widths[0] <= widths[1], f"the page scrolls sideways at 375 px: {widths}"
            page.screenshot(path=str(tmp_path / "subscribe-375.png"), full_page=True)
            page.get_by_label("Email address").fill("ana@example.org")
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_url(f"{base}/subscribe/check-your-inbox")
        finally:
            context.close()
    with store.session() as session:
        assert session.scalars(select(Subscriber.timezone)).one() == ZONE
    assert problems == []
