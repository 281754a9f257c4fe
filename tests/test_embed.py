"""Sign-up from article pages: `newsletter embed`, cross-site posts from [web] embed_origins, and the source.

Through the real app against a real database (SQLite and PostgreSQL) and a real SMTP
server; the last test pastes the printed snippet into a page served from another site
and submits it in Debian's Chromium.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.embed import Snippet, form_html, link_html, origin_of, page_path, signup_source
from newsletter.store import Store
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.subscribers import InvalidTextError
from newsletter.web import create_app
from tests.conftest import SECRET, SMTPServer, make_config, open_chromium, require_chromium

BASE = "https://news.example.com/newsletter"
ARTICLES = "https://articles.example.com"
ARTICLE = f"{ARTICLES}/news/bridge-reopens"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# The test client's requests go to https://localhost (production's scheme): our own page's
# headers, as a browser sends them; over HTTPS, CSRF also wants a same-origin Referer.
OWN = {"Origin": "https://localhost", "Referer": "https://localhost/subscribe"}


@pytest.fixture
def config(db_url: str, smtp_sink: SMTPServer) -> Config:
    return make_config(db_url, smtp_sink, web={"embed_origins": [ARTICLES]})


@pytest.fixture
def app(config: Config, store: Store, clock: FixedClock) -> Flask:
    return create_app(config, store=store, clock=clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def embedded(
    client: FlaskClient,
    email: str,
    *,
    source: str = "article:",
    origin: str | None = ARTICLES,
    referer: str | None = ARTICLE,
    **fields: str,
) -> TestResponse:
    """The form `newsletter embed` prints, posted by a browser on an article page: no cookie, no token."""
    headers = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    if origin is not None:
        headers["Origin"] = origin
    if referer is not None:
        headers["Referer"] = referer
    data = {"email": email, "name": "", "source": source, "website": "", **fields}
    return client.post("/subscribe", data=data, headers=headers)


def own_form(client: FlaskClient, email: str, **fields: str) -> TestResponse:
    """Our own sign-up page, as a browser fills it in: its token, its cookie, our origin."""
    page = client.get("/subscribe")
    token = CSRF.search(page.get_data(as_text=True))
    assert token
    return client.post("/subscribe", data={"csrf_token": token.group(1), "email": email, **fields}, headers=OWN)


def reader(store: Store, email: str) -> Subscriber | None:
    with store.session() as session:
        return session.scalars(select(Subscriber).where(Subscriber.email == email)).first()


def event_sources(store: Store) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(SubscriberEvent.source).order_by(SubscriberEvent.id)))


def count_readers(store: Store) -> int:
    with store.session() as session:
        return len(session.scalars(select(Subscriber.id)).all())


# --- the source convention, pure ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "page", "recorded"),
    [
        ("", "", "web"),
        ("web", "/news/x", "web"),
        ("article:", "/news/bridge", "article:/news/bridge"),
        ("article", "/news/bridge", "article:/news/bridge"),
        ("article:", "", "article:"),
        ("article:/politics/vote?utm_source=x&email=a@b.c#top", "/other", "article:/politics/vote"),
        ("article:https://news.example.com/sport/final?x=1", "", "article:/sport/final"),
        ("article:sport/final", "", "article:/sport/final"),
        ("article:?utm=1", "/from/referer", "article:/from/referer"),
        ("sidebar:/a", "", "sidebar:/a"),
        ("article:/" + "long-path/" * 20, "", ("article:/" + "long-path/" * 20)[:50]),
        ("  article:/x  ", "", "article:/x"),
    ],
)
def test_sources_are_prefix_and_path_cleaned_and_cut_to_the_column(raw, page, recorded):
    assert signup_source(raw, page) == recorded
    assert len(recorded) <= 50


@pytest.mark.parametrize(
    "raw",
    [
        "article:/a\x00b",
        "article:/a\nb",
        "article:/a\x1bb",
        "article:/a b",
        "article:/a\ud800",
        "Article:/x",
        "<script>:/x",
        ":/x",
        "a" * 21 + ":/x",
        "article:/" + "x" * 3000,
        'article:/"><script>',
        "admin:/a na",
    ],
)
def test_sources_that_no_honest_form_sends_are_refused(raw):
    with pytest.raises(InvalidTextError):
        signup_source(raw, "")


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://articles.example.com", "https://articles.example.com"),
        ("https://Articles.Example.COM:443/news/x?y=1", "https://articles.example.com"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("http://[::1]:8000/x", "http://[::1]:8000"),
        ("https://user:pw@articles.example.com/", "https://articles.example.com"),
        ("null", None),
        ("ftp://articles.example.com", None),
        ("https://[::1", None),
        ("https://a.example:99999", None),
        ("https://a.example:port", None),
        ("", None),
        (None, None),
        ("https://é.example", None),
        ("x" * 5000, None),
    ],
)
def test_origins_are_compared_in_one_form(url, origin):
    assert origin_of(url) == origin


def test_a_referer_that_is_odd_gives_no_path():
    assert page_path("https://a.example/news/x?email=a@b.c") == "/news/x"
    assert page_path("https://a.example/a b") == ""
    assert page_path("https://a.example/" + "x" * 5000) == ""
    assert page_path(None) == ""
    assert page_path("https://a.example/") == page_path("https://a.example") == ""  # the site, not a page


# --- the command -----------------------------------------------------------------------------


def config_file(tmp_path: Path, base_url: str = BASE, origins: tuple[str, ...] = (ARTICLES,)) -> str:
    path = tmp_path / "newsletter.toml"
    listed = ", ".join(f'"{o}"' for o in origins)
    path.write_text(
        f"""
[newsletter]
publication = "The Example Gazette & Sons"
[store]
url = "sqlite:///{tmp_path / "newsletter.db"}"
[smtp]
host = "127.0.0.1"
[sender]
from_address = "breakfast@news.example.com"
[web]
base_url = "{base_url}"
secret_key = "{SECRET}"
embed_origins = [{listed}]
""",
        encoding="utf-8",
    )
    return str(path)


def embed(tmp_path: Path, *args: str, **kwargs: Any) -> Any:
    return CliRunner().invoke(cli, ["--config", config_file(tmp_path, **kwargs), "embed", *args])


def test_embed_prints_a_form_that_parses_and_posts_here_with_its_source(tmp_path):
    result = embed(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    document = lxml.html.fragment_fromstring(result.stdout, create_parent="div")
    [form] = document.findall(".//form")
    assert form.get("action") == f"{BASE}/subscribe" and form.get("method") == "post"
    fields = {i.get("name"): i for i in form.iter("input")}
    assert set(fields) == {"email", "name", "source", "website"}
    assert fields["email"].get("type") == "email" and fields["email"].get("required") is not None
    assert fields["source"].get("type") == "hidden" and fields["source"].get("value") == "article:"
    honeypot = fields["website"]
    assert honeypot.get("tabindex") == "-1" and any(a.get("hidden") is not None for a in honeypot.iterancestors("p"))
    assert "csrf_token" not in fields
    assert form.find(".//button").get("type") == "submit"
    assert "The Example Gazette &amp; Sons" in result.stdout
    lowered = result.stdout.lower()
    for loads_something in ("<script", "src=", "<link", "@import", "url(", "<iframe", "<img", "javascript:"):
        assert loads_something not in lowered


def test_embed_link_only_is_one_unstyled_link(tmp_path):
    result = embed(tmp_path, "--link-only", "--source-prefix", "sidebar")
    assert result.exit_code == 0
    [link] = lxml.html.fragment_fromstring(result.stdout, create_parent="div").findall(".//a")
    assert link.get("href") == f"{BASE}/subscribe?source=sidebar%3A"
    assert link.get("style") is None and "<form" not in result.stdout


def test_embed_takes_the_cms_code_for_the_path_as_it_is(tmp_path):
    result = embed(tmp_path, "--path", "{{ page.url_path }}")
    assert result.exit_code == 0
    assert '<input type="hidden" name="source" value="article:{{ page.url_path }}">' in result.stdout
    link = embed(tmp_path, "--link-only", "--path", "<?= $path ?>")
    assert f'href="{BASE}/subscribe?source=article%3A<?= $path ?>"' in link.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--source-prefix", "Article"],
        ["--source-prefix", "web page"],
        ["--source-prefix", "x" * 21],
        ["--source-prefix", ""],
        ["--path", 'x" onmouseover="alert(1)'],
        ["--path", "x\x1b]0;owned\x07"],
    ],
)
def test_embed_refuses_options_that_would_break_the_form(tmp_path, args):
    result = embed(tmp_path, *args)
    assert result.exit_code == 2
    assert result.stdout == "" and result.stderr.startswith("error: --") and "\x1b" not in result.stderr


def test_embed_says_when_no_origin_may_post_it(tmp_path):
    result = embed(tmp_path, origins=())
    assert result.exit_code == 0 and "<form" in result.stdout
    assert "[web] embed_origins is empty" in result.stderr
    assert embed(tmp_path, "--link-only", origins=()).stderr == ""


def test_the_snippets_escape_what_the_configuration_says():
    snippet = Snippet(base_url='https://n.example/x"y', name="<b>Daily</b>", publication="A & B")
    form, link = form_html(snippet), link_html(snippet)
    assert "<b>Daily" not in form and "&lt;b&gt;Daily" in form and "A &amp; B" in form
    assert 'x&quot;y/subscribe"' in form and "x&quot;y/subscribe?" in link


# --- cross-site posts --------------------------------------------------------------------------


def test_a_form_on_a_listed_origin_signs_up_with_double_opt_in_and_its_source(client, store, smtp_sink):
    response = embedded(client, "ana@example.org")
    assert response.status_code == 303 and response.headers["Location"].endswith("/subscribe/check-your-inbox")
    found = reader(store, "ana@example.org")
    assert found is not None and found.status == SubscriberStatus.PENDING  # only the mailed link activates
    assert found.source == "article:/news/bridge-reopens" and event_sources(store) == ["article:/news/bridge-reopens"]
    [mail] = [r.message for r in smtp_sink.handler.received]
    assert mail["To"] == "ana@example.org" and "/confirm/" in mail.get_body(("plain",)).get_content()
    page = client.get(response.headers["Location"])
    assert page.status_code == 200 and "<h1>Check your inbox</h1>" in page.get_data(as_text=True)


def test_the_path_the_form_gives_wins_over_the_referer_and_loses_its_query(client, store):
    embedded(client, "ana@example.org", source="article:/politics/vote?utm_source=nl&email=x@y.z#c")
    embedded(client, "ben@example.org", referer=None)  # the page's Referrer-Policy hid it
    embedded(client, "cy@example.org", referer=f"{ARTICLES}/")  # strict-origin-when-cross-origin: no page
    assert reader(store, "ana@example.org").source == "article:/politics/vote"
    assert reader(store, "ben@example.org").source == "article:"
    assert reader(store, "cy@example.org").source == "article:"


def test_without_an_origin_header_the_referer_decides(client, store):
    assert embedded(client, "ana@example.org", origin=None).status_code == 303
    assert reader(store, "ana@example.org").source == "article:/news/bridge-reopens"
    refused = embedded(client, "ben@example.org", origin=None, referer="https://elsewhere.example/page")
    assert refused.status_code == 403 and reader(store, "ben@example.org") is None


@pytest.mark.parametrize(
    "origin",
    [
        "https://elsewhere.example",
        "http://articles.example.com",  # the same host without TLS is another origin
        "https://articles.example.com.elsewhere.example",
        "https://articles.example.com@elsewhere.example",
        "https://articles.example.com:8443",
        "null",  # a sandboxed frame, a file, or a page with Referrer-Policy: no-referrer
        "https://[::1",
        "https://a.example:99999",
        "x" * 5000,
        "https://é.example",
        "",
    ],
)
def test_a_form_from_any_other_origin_is_refused_with_a_page_that_says_why(client, store, smtp_sink, origin):
    response = embedded(client, "ana@example.org", origin=origin)
    html = response.get_data(as_text=True)
    assert response.status_code == 403
    assert "cannot be used from that page" in html and "[web] embed_origins" in html
    assert 'href="/newsletter/subscribe"' in html
    assert "<script" not in html and "x" * 200 not in html
    assert reader(store, "ana@example.org") is None and smtp_sink.handler.received == []


def test_the_refusal_names_the_origin_to_list(client):
    html = embedded(client, "ana@example.org", origin="https://sport.example.com").get_data(as_text=True)
    assert "https://sport.example.com" in html and 'embed_origins = ["https://sport.example.com"]' in html


def test_a_cross_site_post_that_names_no_page_at_all_is_refused(client, store):
    assert embedded(client, "ana@example.org", origin=None, referer=None).status_code == 403
    bare = client.post("/subscribe", data={"email": "ben@example.org"})  # not a browser at all
    assert bare.status_code == 403
    token = CSRF.search(client.get("/subscribe").get_data(as_text=True))
    assert token
    cross = client.post(
        "/subscribe",
        data={"csrf_token": token.group(1), "email": "cy@example.org"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    assert count_readers(store) == 0


def test_our_own_form_still_needs_its_csrf_token(client, app, store):
    no_token = client.post(
        "/subscribe", data={"email": "ana@example.org"}, headers={"Origin": "https://news.example.com"}
    )
    assert no_token.status_code == 400 and "This form has expired" in no_token.get_data(as_text=True)
    by_referer = client.post("/subscribe", data={"email": "ana@example.org"}, headers={"Referer": f"{BASE}/subscribe"})
    assert by_referer.status_code == 400
    forged = client.post(
        "/subscribe",
        data={"csrf_token": "forged", "email": "ana@example.org"},
        headers={"Origin": "https://news.example.com"},
    )
    assert forged.status_code == 400
    assert reader(store, "ana@example.org") is None
    assert own_form(client, "ana@example.org").status_code == 303
    assert reader(store, "ana@example.org").source == "web"


def test_a_token_does_not_let_another_origin_in(client, store):
    token = CSRF.search(client.get("/subscribe").get_data(as_text=True))
    assert token
    response = embedded(client, "ana@example.org", origin="https://elsewhere.example", csrf_token=token.group(1))
    assert response.status_code == 403 and reader(store, "ana@example.org") is None


def test_the_honeypot_holds_cross_site(client, store, smtp_sink):
    response = embedded(client, "bot@example.org", website="https://spam.example")
    assert response.status_code == 303 and response.headers["Location"].endswith("/check-your-inbox")
    assert reader(store, "bot@example.org") is None and smtp_sink.handler.received == []


def test_the_per_client_limit_holds_cross_site(db_url, smtp_sink, store, clock):
    config = make_config(db_url, smtp_sink, web={"embed_origins": [ARTICLES], "subscribe_per_hour": 2})
    client = create_app(config, store=store, clock=clock).test_client()
    assert embedded(client, "a@example.org").status_code == 303
    assert own_form(client, "b@example.org").status_code == 303  # one count for both ways in
    refused = embedded(client, "c@example.org")
    html = refused.get_data(as_text=True)
    assert refused.status_code == 429 and "Too many sign-ups" in html
    assert 'name="source" value="article:/news/bridge-reopens"' in html  # kept for the retry
    assert reader(store, "c@example.org") is None


def test_one_address_gets_at_most_three_mails_however_it_is_asked(db_url, smtp_sink, store, clock):
    config = make_config(db_url, smtp_sink, web={"embed_origins": [ARTICLES], "subscribe_per_hour": 100})
    client = create_app(config, store=store, clock=clock).test_client()
    for _ in range(3):
        assert embedded(client, "victim@example.org").status_code == 303
        assert own_form(client, "victim@example.org").status_code == 303
    assert len(smtp_sink.handler.by_recipient()["victim@example.org"]) == 3


def test_a_mistake_shows_our_form_which_then_posts_with_its_token_and_keeps_the_source(client, store):
    response = embedded(client, "not an address")
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and "That is not a valid email address" in html
    assert 'name="source" value="article:/news/bridge-reopens"' in html
    token = CSRF.search(html)
    assert token  # the page set our cookie: a top-level navigation may, even cross-site
    retry = client.post(
        "/subscribe",
        data={"csrf_token": token.group(1), "email": "ana@example.org", "source": "article:/news/bridge-reopens"},
        headers=OWN,
    )
    assert retry.status_code == 303 and reader(store, "ana@example.org").source == "article:/news/bridge-reopens"


def test_a_newsroom_on_our_own_origin_lists_itself(db_url, smtp_sink, store, clock):
    """The usual deployment: articles and the newsletter both on news.example.com."""
    config = make_config(db_url, smtp_sink, web={"embed_origins": ["https://news.example.com"]})
    client = create_app(config, store=store, clock=clock).test_client()
    article = "https://news.example.com/politics/council-vote"
    response = embedded(client, "ana@example.org", origin="https://news.example.com", referer=article)
    assert response.status_code == 303 and reader(store, "ana@example.org").source == "article:/politics/council-vote"
    # Our own page is not an article: its path is never recorded as one.
    own = embedded(client, "ben@example.org", origin="https://news.example.com", referer=f"{BASE}/subscribe")
    assert own.status_code == 303 and reader(store, "ben@example.org").source == "article:"
    assert own_form(client, "cy@example.org").status_code == 303  # with its token, as ever


# --- the sign-up page, filled in by a link ------------------------------------------------------


def test_a_link_fills_in_the_form_and_subscribes_nobody(client, store, smtp_sink):
    page = client.get("/subscribe?email=ana@example.org&source=article:/news/x")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'value="ana@example.org"' in html and 'name="source" value="article:/news/x"' in html
    assert count_readers(store) == 0 and smtp_sink.handler.received == []


def test_a_link_from_a_listed_page_records_that_page(client):
    html = client.get("/subscribe?source=article%3A", headers={"Referer": f"{ARTICLE}?utm=x"}).get_data(as_text=True)
    assert 'name="source" value="article:/news/bridge-reopens"' in html
    elsewhere = client.get("/subscribe?source=article%3A", headers={"Referer": "https://elsewhere.example/x"})
    assert 'name="source" value="article:"' in elsewhere.get_data(as_text=True)
    assert 'name="source"' not in client.get("/subscribe").get_data(as_text=True)


def test_prefilled_values_come_back_escaped(client):
    html = client.get('/subscribe?email="><script>alert(1)</script>&source=article:/"><script>x</script>').get_data(
        as_text=True
    )
    assert "<script>" not in html and "&#34;&gt;&lt;script&gt;alert(1)" in html
    assert 'name="source"' not in html  # a path with spaces or quotes-and-markup is no path: dropped


@pytest.mark.parametrize(
    "query",
    [
        "source=" + "a" * 100_000,
        "source=article:/" + "x" * 100_000,
        "email=" + "a" * 100_000 + "@example.org",
        "email=ana%00@example.org&source=article:/a%0Ab",
        "email=%FF%FE%FD&source=%FF%FE",
        "email=ana@example.org&email=ben@example.org&source=x&source=article:/y",
        "source=%F0%9F%92%A5:/x",
        "source=web:/%1b[2J",
    ],
)
def test_hostile_prefills_are_dropped_or_cut_never_an_error(client, store, query):
    response = client.get(f"/subscribe?{query}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "a" * 300 not in html and "x" * 300 not in html and "\x00" not in html and "\x1b" not in html
    assert count_readers(store) == 0


# --- hostile posts -----------------------------------------------------------------------------


def test_a_100_kb_source_is_refused_not_an_error(client, store):
    assert embedded(client, "ana@example.org", source="article:/" + "x" * 100_000).status_code == 413
    big = embedded(client, "ana@example.org", source="article:/" + "x" * 60_000)  # under the 64 KB cap
    assert big.status_code == 400 and "sign up here instead" in big.get_data(as_text=True)
    assert reader(store, "ana@example.org") is None


@pytest.mark.parametrize(
    "source", ["article:/a\x00b", "article:/a\r\nSet-Cookie: x=1", "article:/\x1b]0;owned\x07", "<b>:/x", "a b:/c"]
)
def test_control_characters_and_odd_sources_are_400_with_our_form(client, store, source):
    response = embedded(client, "ana@example.org", source=source)
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and "sign up here instead" in html
    assert 'name="source"' not in html and "\x1b" not in html and "\x00" not in html
    assert reader(store, "ana@example.org") is None


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"email=\xff\xfe@example.org&name=\xc3\x28&source=article:/\xe2\x28\xa1", "application/x-www-form-urlencoded"),
        (b"email=%FF%FE&name=%C3%28&source=article%3A%2F%E2%28%A1", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\n\xff\xfe@example.org\r\n'
            b'--b\r\nContent-Disposition: form-data; name="source"\r\n\r\narticle:/\xc3\x28\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
)
def test_invalid_utf8_in_the_form_is_400_not_an_error(client, store, body, content_type):
    headers = {"Origin": ARTICLES, "Referer": ARTICLE}
    response = client.post("/subscribe", data=body, content_type=content_type, headers=headers)
    assert response.status_code == 400
    assert count_readers(store) == 0


def test_percent_encoded_bytes_that_are_not_utf8_stay_percent_encoded(client, store):
    """Werkzeug keeps undecodable %XX as they are, and "%ff%fe" is legal in an address's local part."""
    body = b"email=%FF%FEana%40example.org&source=article%3A%2Fnews%2F%FF"
    headers = {"Origin": ARTICLES, "Referer": ARTICLE}
    response = client.post("/subscribe", data=body, content_type="application/x-www-form-urlencoded", headers=headers)
    assert response.status_code == 303
    found = reader(store, "%ff%feana@example.org")
    assert found is not None and found.source == "article:/news/%FF"


@pytest.mark.parametrize("multipart", [False, True])
def test_ten_thousand_fields_are_refused_not_an_error(client, store, multipart):
    headers = {"Origin": ARTICLES, "Referer": ARTICLE}
    if multipart:
        parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n\r\n' for _ in range(10_000))
        body, kind = parts + b"--b--\r\n", "multipart/form-data; boundary=b"
    else:
        body, kind = b"email=ana%40example.org" + b"&f=" * 10_000, "application/x-www-form-urlencoded"
    response = client.post("/subscribe", data=body, content_type=kind, headers=headers)
    assert response.status_code == 413 and "larger than this site accepts" in response.get_data(as_text=True)
    assert count_readers(store) == 0


def test_a_cross_site_post_answers_with_the_same_security_headers(client):
    for response in (embedded(client, "ana@example.org"), embedded(client, "x", origin="https://elsewhere.example")):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src" not in csp and "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"


# --- in a real browser --------------------------------------------------------------------------


@pytest.fixture
def article_site() -> Iterator[tuple[int, dict[str, tuple[str, dict[str, str]]]]]:
    """A newsroom's site on its own port: path -> (HTML, headers), served by another WSGI server."""
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    pages: dict[str, tuple[str, dict[str, str]]] = {}

    @Request.application
    def site(request: Request) -> Response:
        if request.path not in pages:
            return Response("not here", status=404)
        html, headers = pages[request.path]
        return Response(html, mimetype="text/html", headers=headers)

    httpd = make_server("127.0.0.1", 0, site, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="articles", daemon=True)
    thread.start()
    try:
        yield httpd.server_port, pages
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the browser part is the same on both databases
def test_the_pasted_form_and_link_work_cross_site_in_chromium(
    db_url: str,
    store: Store,
    smtp_sink: SMTPServer,
    clock: FixedClock,
    server: tuple[str, dict[str, Any]],
    article_site: tuple[int, dict[str, tuple[str, dict[str, str]]]],
    tmp_path: Path,
) -> None:
    """The article site is http://localhost:PORT and the newsletter http://127.0.0.1:PORT: two sites,
    so the browser sends no cookie of ours with the form (SameSite=Lax), and the article page's own
    CSP allows the form to post to the newsletter (form-action) but nothing else."""
    from playwright.sync_api import ConsoleMessage, sync_playwright

    require_chromium()
    base, slot = server
    port, pages = article_site
    articles = f"http://localhost:{port}"
    config = make_config(db_url, smtp_sink, web={"base_url": base, "production": False, "embed_origins": [articles]})
    slot["app"] = create_app(config, store=store, clock=clock)
    cfg = config_file(tmp_path, base_url=base, origins=(articles,))
    form = CliRunner().invoke(cli, ["--config", cfg, "embed"]).stdout
    link = CliRunner().invoke(cli, ["--config", cfg, "embed", "--link-only"]).stdout
    policy = {
        "Content-Security-Policy": f"default-src 'none'; style-src 'unsafe-inline'; form-action {base}",
        "Referrer-Policy": "no-referrer-when-downgrade",  # so the newsletter sees which article
    }

    def article(title: str, snippet: str) -> str:
        return f'<!doctype html><html lang="en"><title>{title}</title><h1>{title}</h1><p>Story.</p>{snippet}</html>'

    pages["/news/bridge-reopens"] = (article("Bridge reopens", form), policy)
    pages["/news/ferry-fares"] = (article("Ferry fares frozen", link), policy)
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error" and "favicon" not in message.location.get("url", ""):
            problems.append(message.text)

    with sync_playwright() as playwright:
        context = open_chromium(playwright, tmp_path / "profile")
        try:
            context.set_default_timeout(10_000)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", watch)

            # 1. The form on an article page: a cross-site POST, then our "check your inbox" page.
            page.goto(f"{articles}/news/bridge-reopens")
            assert not page.get_by_label("Leave this empty").is_visible()  # the honeypot
            page.get_by_label("Email address").fill("ana@example.org")
            page.get_by_label("Your name (optional)").fill("Ana García")
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_url(f"{base}/subscribe/check-your-inbox")
            assert page.get_by_role("heading", level=1).inner_text() == "Check your inbox"
            ana = reader(store, "ana@example.org")
            assert ana is not None and ana.status == SubscriberStatus.PENDING and ana.name == "Ana García"
            assert ana.source == "article:/news/bridge-reopens"

            # 2. The link: our page, filled in with the source; our form then posts with its token.
            page.goto(f"{articles}/news/ferry-fares")
            page.get_by_role("link", name=re.compile("sign up")).click()
            page.wait_for_url(re.compile(re.escape(f"{base}/subscribe?")))
            page.get_by_label("Email address").fill("ben@example.org")
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_url(f"{base}/subscribe/check-your-inbox")
            ben = reader(store, "ben@example.org")
            assert ben is not None and ben.source == "article:/news/ferry-fares"

            assert problems == []  # no CSP violation on either site, nothing blocked
            # 3. The same form on a site not listed: refused, and the page says why.
            page.goto(f"http://127.0.0.1:{port}/news/bridge-reopens")
            page.get_by_label("Email address").fill("cy@example.org")
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_url(f"{base}/subscribe")
            assert "[web] embed_origins" in page.content() and f"http://127.0.0.1:{port}" in page.content()
            assert reader(store, "cy@example.org") is None
        finally:
            context.close()
    assert [r.rcpt_tos for r in smtp_sink.handler.received] == [["ana@example.org"], ["ben@example.org"]]
    assert problems == ["Failed to load resource: the server responded with a status of 403 (FORBIDDEN)"]
