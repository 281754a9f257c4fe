"""The public addresses: mails build their links from the same rules the web app serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import routes
from newsletter.clock import FixedClock
from newsletter.store import Store
from newsletter.web import create_app
from tests.conftest import make_config

BASE = "https://news.example.com/newsletter"
RULES = [routes.SUBSCRIBE, routes.CONFIRM, routes.UNSUBSCRIBE, routes.ARCHIVE, routes.EDITION]
RULES += [routes.FEED, routes.CLICK, routes.OPEN]


def test_url_fills_each_variable_inside_its_own_segment() -> None:
    assert routes.url(BASE, routes.UNSUBSCRIBE, token="abc.DEF_12-3") == f"{BASE}/unsubscribe/abc.DEF_12-3"
    assert routes.url(BASE + "/", routes.SUBSCRIBE) == f"{BASE}/subscribe"
    assert routes.url(BASE, routes.EDITION, day="2026-12-01") == f"{BASE}/editions/2026-12-01"
    # A value cannot reach another path or add a query: it is percent-encoded.
    assert routes.url(BASE, routes.CONFIRM, token="../admin?x=1") == f"{BASE}/confirm/..%2Fadmin%3Fx%3D1"
    # A path variable keeps its slashes and nothing else.
    assert routes.url(BASE, routes.CLICK, code="a/b c") == f"{BASE}/c/a/b%20c"
    with pytest.raises(KeyError):
        routes.url(BASE, routes.UNSUBSCRIBE)


def test_prefix_is_the_address_up_to_the_first_variable() -> None:
    assert routes.prefix(BASE, routes.UNSUBSCRIBE) == f"{BASE}/unsubscribe/"
    assert routes.prefix(BASE + "/", routes.CLICK) == f"{BASE}/c/"
    assert routes.prefix(BASE, routes.FEED) == f"{BASE}/editions/feed.xml"


@pytest.mark.parametrize("rule", RULES)
def test_the_web_app_serves_every_rule_mails_link_to(rule: str, tmp_path: Path, clock: FixedClock) -> None:
    config = make_config(f"sqlite:///{tmp_path / 'newsletter.db'}")
    store = Store(config.store.url)
    store.upgrade()
    try:
        app = create_app(config, store=store, clock=clock)
        served = {r.rule for r in app.url_map.iter_rules()}
        prefix = app.config.get("APPLICATION_ROOT", "/").rstrip("/")
        assert rule in served or prefix + rule in served, sorted(served)
    finally:
        store.dispose()
