"""The admin's charts in a real browser, at a phone's width and a desktop's: drawn, inside the page, legible.

Debian's chromium (never a downloaded browser) driven by Playwright against a real WSGI
server, under the admin's real Content-Security-Policy: a chart that needed a script or
an inline style would show up here as a console error or as nothing drawn. Boxes are
measured, not guessed: each chart fits its column, no label sticks out of its chart, and
no two date labels overlap, at 375 and at 1,200 pixels. Screenshots go to the test's
temporary folder (the path is printed).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright
from werkzeug.security import generate_password_hash

from newsletter.clock import FixedClock
from newsletter.store import Store
from newsletter.store.models import DeliveryStatus, StaffUser, Subscriber, SubscriberStatus
from newsletter.web import create_app
from tests.conftest import SMTPServer, make_config, open_chromium, require_chromium
from tests.test_report import LINKS, seed_edition

PASSWORD = "correct horse battery staple"
PHONE, DESKTOP = 375, 1200
CHARTS = 5

pytestmark = pytest.mark.slow


def _seed(store: Store, today: date) -> None:
    """90 days of sign-ups from several sources, some leaving, and an edition on 30 of the last 40 days."""
    sources = ["web", "import", "article:/2026/11/bridge", "article:/2026/10/flood", "admin:ana", "cli", "api"]
    with store.session() as session:
        for i in range(240):
            joined = datetime.combine(today, datetime.min.time(), UTC) - timedelta(hours=9 * i + 3)
            status = [SubscriberStatus.ACTIVE] * 6 + [SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.PENDING]
            chosen = status[i % len(status)]
            session.add(
                Subscriber(
                    email=f"reader{i}@example.org",
                    status=chosen,
                    source=sources[(i * i) % len(sources)],
                    created_at=joined,
                    updated_at=joined + timedelta(days=2),
                    confirmed_at=None if chosen == SubscriberStatus.PENDING else joined,
                    unsubscribed_at=joined + timedelta(days=2) if chosen == SubscriberStatus.UNSUBSCRIBED else None,
                )
            )
    sent, failed = DeliveryStatus.SENT, DeliveryStatus.FAILED
    for n, days_ago in enumerate(d for d in range(40, 0, -1) if d % 4):
        readers = 150 + 3 * n
        seed_edition(
            store,
            today - timedelta(days=days_ago),
            statuses=[sent] * (readers - 2) + [failed] * 2,
            links=LINKS,
            clicks=[(1 + k % 3, 1 + (k * 7 + n) % readers) for k in range(5 + (n * 7) % 23)],
            events=[("unsubscribed", 1 + k) for k in range(n % 5)],
        )


def _shot(page: Page, folder: Path, name: str) -> Path:
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    assert path.stat().st_size > 1000
    return path


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def _check_charts(page: Page, width: int) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width}px wide at a {width}px viewport"
    charts = page.locator("svg.chart")
    assert charts.count() == CHARTS
    main = page.locator("main").bounding_box()
    assert main is not None
    for i in range(CHARTS):
        chart = charts.nth(i)
        assert chart.is_visible()
        box = chart.bounding_box()
        assert box is not None
        name = chart.locator("title").text_content()
        assert box["x"] >= main["x"] and box["x"] + box["width"] <= main["x"] + main["width"] + 0.5, (name, box)
        assert box["width"] >= 0.7 * main["width"], (name, box, main)  # uses the column
        assert box["height"] >= 150, (name, box)
        drawn = chart.locator("rect, circle")
        assert drawn.count() > 0, name
        labels = []
        for text in chart.locator("text").all():
            if not text.is_visible():
                continue  # a wide-screen-only date label on a phone
            label = text.bounding_box()
            assert label is not None
            # Inside the chart, with a pixel for anti-aliasing, and legible (at least 11 px tall).
            assert label["x"] >= box["x"] - 1 and label["x"] + label["width"] <= box["x"] + box["width"] + 1, (
                name,
                text.text_content(),
                label,
                box,
            )
            assert label["y"] >= box["y"] - 1 and label["y"] + label["height"] <= box["y"] + box["height"] + 1
            assert label["height"] >= 11, (name, text.text_content(), label)
            if "x-label" in (text.get_attribute("class") or ""):
                labels.append((text.text_content(), label))
        assert len(labels) >= 2, name
        for k, (first, a) in enumerate(labels):
            for second, b in labels[k + 1 :]:
                assert not _overlap(a, b), (name, first, second, a, b)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the browser part is the same on both databases
def test_admin_home_charts_at_phone_and_desktop_widths(
    db_url: str, store: Store, smtp_sink: SMTPServer, server: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    require_chromium()
    base, slot = server
    clock = FixedClock(datetime(2026, 11, 24, 9, 30, tzinfo=UTC))
    config = make_config(db_url, smtp_sink, web={"base_url": base, "production": False})
    with store.session() as session:
        cheap = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
        session.add(StaffUser(username="ana", password_hash=cheap, created_at=clock.now()))
    _seed(store, date(2026, 11, 24))
    slot["app"] = create_app(config, store=store, clock=clock)
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
            page.goto(f"{base}/admin/")
            page.get_by_label("User name").fill("ana")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/admin/")
            assert page.get_by_role("heading", name="Overview").is_visible()
            assert page.get_by_role("img", name="Click-through rate per edition").is_visible()

            _check_charts(page, DESKTOP)
            _shot(page, shots, "overview-1200.png")
            wide_labels = page.locator("svg.chart text.x-label.wide").first
            assert wide_labels.is_visible()  # room for more dates on a wide screen

            page.set_viewport_size({"width": PHONE, "height": 800})
            page.reload()
            _check_charts(page, PHONE)
            assert not wide_labels.is_visible()
            _shot(page, shots, "overview-375.png")

            # The numbers behind a chart open below it, without a script.
            page.get_by_text("The numbers").first.click()
            assert page.locator("details.chart-data table").first.is_visible()
            _check_charts(page, PHONE)

            # The latest edition's page: its figures and links, long URLs wrapped, nothing sideways.
            page.get_by_role("link", name="2026-11-23").click()
            page.wait_for_url(f"{base}/admin/editions/2026-11-23")
            assert page.get_by_role("heading", name="Links, most clicked first").is_visible()
            assert page.locator("table.links td.wrap a").first.is_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE
            _shot(page, shots, "edition-375.png")
        finally:
            context.close()
    assert problems == [], problems
