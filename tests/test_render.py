"""Rendering: inlined CSS done once per edition, the design's parts present, text from the wild intact."""

from __future__ import annotations

import html
import logging
import re
from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import newsletter.render
from newsletter.context import Context
from newsletter.editions import EditionPlan, Section, Story, window_for
from newsletter.errors import RenderError
from newsletter.publish import send_edition
from newsletter.render import (
    GMAIL_CLIP_BYTES,
    Branding,
    Links,
    Markers,
    RenderedEdition,
    build_environment,
    fill_markers,
    render_edition,
)
from tests.conftest import add_article, add_subscribers, make_config, morning_articles

DAY = date(2026, 11, 24)
WINDOW = window_for(DAY, time(6), ZoneInfo("Europe/London"), None)
BRANDING = Branding("Breakfast in red", "The Example Gazette", "The Example Gazette\n1 Quay Street, Portside PS1 2AB")
LINKS = Links(
    view_in_browser="https://news.example.com/newsletter/editions/2026-11-24",
    subscribe="https://news.example.com/newsletter/subscribe",
)
WILD_TITLE = "Zoë & José: “Cafés” <open> late — 東京 too"
UNSUBSCRIBE = "https://news.example.com/newsletter/unsubscribe/TOKEN-1?x=1&y=2"


def story(title: str, section: str = "", **fields: object) -> Story:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "story"
    return Story(title=title, url=f"https://news.example.com/{slug}", section=section, **fields)  # type: ignore[arg-type]


LEAD = story(
    "Bridge reopens after two years",
    "News",
    standfirst="Traffic flows again from Monday, the council says.",
    image_url="https://img.example.com/bridge.jpg",
    image_alt="The new bridge at dawn",
    image_caption="The bridge at dawn on Monday. Photo: Siobhán Ní Bhriain",
    author="Łukasz Kowalski",
)
PLAN = EditionPlan(
    date=DAY,
    window=WINDOW,
    subject="Breakfast in red: Tuesday 24 November 2026",
    lead=LEAD,
    sections=(
        Section("News", (story("Council votes on the budget", "News", standfirst="A tight vote."),)),
        Section(
            "Sport",
            (
                story(WILD_TITLE, "Sport", standfirst="Crème brûlée, naïve façades & <b>bold</b> claims."),
                story("Harbour regatta", "Sport", author="中村 太郎"),
            ),
        ),
        Section("", (story("Letters to the editor"),)),
    ),
)


@pytest.fixture(scope="module")
def rendered() -> RenderedEdition:
    return render_edition(PLAN, BRANDING, LINKS, "nonce42", build_environment())


def personal_html(rendered: RenderedEdition, greeting: str = "Good morning, Zoë") -> str:
    return fill_markers(rendered.html, rendered.markers, greeting=greeting, unsubscribe_url=UNSUBSCRIBE)


def personal_text(rendered: RenderedEdition, greeting: str = "Good morning, Zoë") -> str:
    return fill_markers(rendered.text, rendered.markers, greeting=greeting, unsubscribe_url=UNSUBSCRIBE, escape=False)


# --- the HTML ------------------------------------------------------------------------------


def test_css_is_inlined_and_media_queries_stay_in_a_style_block(rendered: RenderedEdition) -> None:
    page = rendered.html
    assert page.count('style="') + page.count("style='") > 30
    assert re.search(r'<td class="masthead" style="[^"]*background-color:#c8102e', page)
    styles = re.findall(r"<style[^>]*>(.*?)</style>", page, re.S)
    assert styles and all("@media" in block for block in styles)  # only what cannot be inlined remains
    assert "max-width: 620px" in "".join(styles)
    assert not re.search(r"<link[^>]+stylesheet", page, re.I)
    assert "@import" not in page and "fonts.googleapis" not in page and "@font-face" not in page
    assert 'width="600"' in page and 'role="presentation"' in page


def test_lead_story_has_image_with_alt_text_and_caption(rendered: RenderedEdition) -> None:
    page = rendered.html
    img = re.search(r"<img[^>]*>", page)
    assert img is not None
    assert 'src="https://img.example.com/bridge.jpg"' in img.group()
    assert 'alt="The new bridge at dawn"' in img.group()
    assert "The bridge at dawn on Monday. Photo: Siobhán Ní Bhriain" in page
    assert "Bridge reopens after two years" in page and "Traffic flows again from Monday" in page
    assert 'href="https://news.example.com/bridge-reopens-after-two-years"' in page
    assert "By Łukasz Kowalski" in page


def test_lead_image_without_alt_text_falls_back_to_the_headline() -> None:
    lead = story("Harbour at night", image_url="https://img.example.com/h.jpg")
    plan = EditionPlan(date=DAY, window=WINDOW, subject="s", lead=lead)
    out = render_edition(plan, BRANDING, LINKS, "n1", build_environment())
    assert 'alt="Harbour at night"' in out.html


def test_stories_are_grouped_by_section_in_order(rendered: RenderedEdition) -> None:
    page = rendered.html
    positions = [page.index(s) for s in (">News</h3>", "Council votes", ">Sport</h3>", "Harbour regatta")]
    assert positions == sorted(positions)
    assert page.index("Harbour regatta") < page.index(">More stories</h3>") < page.index("Letters to the editor")
    text = rendered.text
    positions = [text.index(s) for s in ("\nNEWS\n", "Council votes", "\nSPORT\n", "\nMORE STORIES\n", "Letters")]
    assert positions == sorted(positions)


def test_masthead_has_names_and_date(rendered: RenderedEdition) -> None:
    for part in ("Breakfast in red", "The Example Gazette", "Tuesday 24 November 2026"):
        assert part in rendered.html and part in rendered.text
    assert "<title>Breakfast in red: Tuesday 24 November 2026</title>" in rendered.html


def test_footer_says_why_and_links_to_browser_and_unsubscribe_with_the_address(rendered: RenderedEdition) -> None:
    page = personal_html(rendered)
    footer = page[page.index('class="footer"') :]
    assert "You are getting Breakfast in red because you subscribed" in footer
    assert f'href="{LINKS.view_in_browser}"' in footer
    assert f'href="{html.escape(UNSUBSCRIBE)}"' in footer and ">Unsubscribe</a>" in footer
    assert "The Example Gazette, 1 Quay Street, Portside PS1 2AB" in footer
    text = personal_text(rendered)
    footer_text = text[text.index("You are getting") :]
    assert f"View in your browser: {LINKS.view_in_browser}" in footer_text
    assert f"Unsubscribe: {UNSUBSCRIBE}" in footer_text
    assert "1 Quay Street, Portside PS1 2AB" in footer_text


def test_web_version_has_no_personal_parts(rendered: RenderedEdition) -> None:
    web = rendered.web_html
    assert rendered.markers.greeting not in web and rendered.markers.unsubscribe_url not in web
    assert f'href="{LINKS.subscribe}"' in web and "Unsubscribe" not in web
    assert 'style="' in web


# --- the text part ------------------------------------------------------------------------


def test_text_part_is_built_from_the_same_data(rendered: RenderedEdition) -> None:
    text = personal_text(rendered)
    everything = [PLAN.lead, *(s for sec in PLAN.sections for s in sec.stories)]
    for item in everything:
        assert item is not None
        assert item.url in text and item.url in rendered.html
        assert " ".join(item.title.split()) in " ".join(text.split())
        if item.standfirst:
            assert " ".join(item.standfirst.split()) in " ".join(text.split())
    assert "[Picture: The bridge at dawn on Monday. Photo: Siobhán Ní Bhriain]" in " ".join(text.split("\n"))
    assert text.startswith("BREAKFAST IN RED\nThe Example Gazette\nTuesday 24 November 2026\n")
    assert "Good morning, Zoë. Here are 5 stories from The Example Gazette" in " ".join(text.split())
    assert "<" not in text.replace("<open>", "").replace("<b>bold</b>", "")  # no markup leaks into text
    assert not any(line != line.rstrip() for line in text.splitlines())
    assert "\n\n\n" not in text


# --- text from the wild ------------------------------------------------------------------


def test_wild_text_is_escaped_in_html_and_literal_in_text(rendered: RenderedEdition) -> None:
    assert "Zoë &amp; José: “Cafés” &lt;open&gt; late — 東京 too" in rendered.html
    assert "Crème brûlée, naïve façades &amp; &lt;b&gt;bold&lt;/b&gt; claims." in rendered.html
    assert "<open>" not in rendered.html and "<b>bold" not in rendered.html
    assert "By 中村 太郎" in rendered.html
    one_line = " ".join(rendered.text.split())
    assert WILD_TITLE in one_line
    assert "Crème brûlée, naïve façades & <b>bold</b> claims." in one_line
    assert "&amp;" not in rendered.text and "&lt;" not in rendered.text


def test_personal_values_are_escaped_in_html_only(rendered: RenderedEdition) -> None:
    greeting = "Good morning, <Zoë & “Jo”>"
    assert "Good morning, &lt;Zoë &amp; “Jo”&gt;." in personal_html(rendered, greeting)
    assert "Good morning, <Zoë & “Jo”>." in " ".join(personal_text(rendered, greeting).split())


# --- premailer once per edition -------------------------------------------------------------


def test_premailer_runs_twice_per_edition_and_never_per_reader(store, clock, tokens, smtp_sink, db_url, monkeypatch):
    calls: list[int] = []
    original = newsletter.render.inline_css

    def counting(page: str) -> str:
        calls.append(len(page))
        return original(page)

    monkeypatch.setattr(newsletter.render, "inline_css", counting)
    config = make_config(db_url, smtp_sink)
    ctx = Context(config, store, clock, tokens)
    morning_articles(store, clock, 3)
    add_subscribers(store, clock, 7)
    report = send_edition(ctx)
    assert report.outcome == "sent" and len(smtp_sink.handler.received) == 7
    assert len(calls) == 2  # the email and the web version

    # the next morning: again twice, for an edition to the same seven readers
    add_article(store, clock, "next-day", datetime(2026, 11, 25, 5, 0, tzinfo=UTC))
    clock.set(datetime(2026, 11, 25, 6, 30, tzinfo=UTC))
    assert send_edition(ctx).outcome == "sent"
    assert len(calls) == 4 and len(smtp_sink.handler.received) == 14


# --- size warning ----------------------------------------------------------------------------


def test_an_edition_too_big_for_gmail_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    many = tuple(
        story(f"Story number {i} with a headline of ordinary length", "News", standfirst="Words. " * 60)
        for i in range(120)
    )
    plan = EditionPlan(date=DAY, window=WINDOW, subject="s", lead=LEAD, sections=(Section("News", many),))
    with caplog.at_level(logging.WARNING, logger="newsletter.render"):
        out = render_edition(plan, BRANDING, LINKS, "big1", build_environment())
    assert out.too_big_for_gmail and out.html_bytes > GMAIL_CLIP_BYTES
    (record,) = [r for r in caplog.records if r.name == "newsletter.render"]
    assert record.levelno == logging.WARNING
    assert "2026-11-24" in record.getMessage() and "Gmail clips" in record.getMessage()


def test_a_normal_edition_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="newsletter.render"):
        out = render_edition(PLAN, BRANDING, LINKS, "small1", build_environment())
    assert not out.too_big_for_gmail
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- templates: override and failure ---------------------------------------------------------

PACKAGE_HTML = (Path(newsletter.render.__file__).parent / "templates" / "email" / "edition.html").read_text()


def override(tmp_path: Path, name: str, content: str) -> Path:
    folder = tmp_path / "templates"
    (folder / "email").mkdir(parents=True, exist_ok=True)
    (folder / "email" / name).write_text(content, encoding="utf-8")
    return folder


def test_override_directory_replaces_only_the_templates_it_has(tmp_path: Path) -> None:
    custom = PACKAGE_HTML.replace('<h1 class="masthead-name">', '<h1 class="masthead-name">Custom: ')
    folder = override(tmp_path, "edition.html", custom)
    out = render_edition(PLAN, BRANDING, LINKS, "ovr1", build_environment(folder))
    assert "Custom: Breakfast in red</h1>" in out.html
    assert 'style="' in out.html  # the built-in style.css it includes is still found, and inlined
    assert out.text.startswith("BREAKFAST IN RED")  # the built-in text template still applies


def test_override_directory_from_the_config(tmp_path: Path, store, clock, tokens, smtp_sink, db_url) -> None:
    folder = override(
        tmp_path, "edition.txt", "{{ reader.greeting }}! {{ edition.story_count }}\n{{ reader.unsubscribe_url }}\n"
    )
    config = make_config(db_url, smtp_sink, newsletter={"templates": str(folder)})
    morning_articles(store, clock, 2)
    add_subscribers(store, clock, 1)
    assert send_edition(Context(config, store, clock, tokens)).outcome == "sent"
    (received,) = smtp_sink.handler.received
    plain = received.message.get_body(("plain",)).get_content()
    assert plain.startswith("Good morning, Reader! 2")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{% if %}", "template error"),
        ("{{ edition.no_such_thing }} {{ reader.greeting }} {{ reader.unsubscribe_url }}", "template error"),
        ("{{ 1 // 0 }}", "template"),
        ("{% include 'email/missing.html' %}", "template error"),
        ("<p>No personal parts at all</p>", "must use reader.greeting and reader.unsubscribe_url"),
    ],
    ids=["syntax", "undefined", "zero division", "missing include", "no markers"],
)
def test_a_broken_template_is_a_render_error(tmp_path: Path, content: str, words: str) -> None:
    folder = override(tmp_path, "edition.html", content)
    with pytest.raises(RenderError, match=words):
        render_edition(PLAN, BRANDING, LINKS, "bad1", build_environment(folder))


def test_a_missing_override_directory_is_a_render_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="does not exist"):
        build_environment(tmp_path / "nowhere")


def test_markers_are_letters_and_digits() -> None:
    markers = Markers.for_nonce("ab12")
    assert markers.greeting.isalnum() and markers.unsubscribe_url.isalnum()
    with pytest.raises(ValueError, match="letters and digits"):
        Markers.for_nonce("ab-12")


def test_design_options_are_off_by_default(rendered: RenderedEdition) -> None:
    assert "masthead-logo" not in rendered.html and 'class="thumb"' not in rendered.html
    assert "lead-label" not in rendered.html


def test_design_options_add_a_logo_thumbnails_and_a_lead_label() -> None:
    from newsletter.config import DesignConfig

    design = DesignConfig(
        logo_url="https://news.example.com/logo.png",
        logo_alt="The Example Gazette",
        logo_width=180,
        thumbnails=True,
        lead_section_label=True,
    )
    pictured = story("Harbour regatta", "Sport", image_url="https://img.example.com/regatta.jpg")
    plan = EditionPlan(
        date=DAY,
        window=WINDOW,
        subject="s",
        lead=LEAD,
        sections=(Section("Sport", (pictured, story("No picture", "Sport"))), Section("", (story("Letters"),), "Also")),
    )
    out = render_edition(plan, BRANDING, LINKS, "design1", build_environment(), design)
    page = out.html
    assert re.search(r'<img class="masthead-logo" src="https://news.example.com/logo.png" width="180" '
                     r'alt="The Example Gazette"', page)  # fmt: skip
    assert page.count('class="thumb"') == 1  # only the secondary story that has a picture
    thumb = r'<img class="thumb" src="https://img.example.com/regatta.jpg" width="96" alt="Harbour regatta"'
    assert re.search(thumb, page)
    assert page.index('class="lead-label"') < page.index("Bridge reopens after two years")
    assert ">Also</h3>" in page and "\nALSO\n" in out.text  # a configured heading for unsectioned stories
    assert out.text.index("\nNEWS\n") < out.text.index("Bridge reopens")  # the label in the text part too
    assert 'width="96"' in page and "@media" in page  # phones get the smaller thumbnail from the media query


def test_markup_survives_clients_that_drop_body_styles_and_spam_filters(rendered: RenderedEdition) -> None:
    page = rendered.html
    assert 'height="auto"' not in page  # not a valid attribute value
    wrapper = re.search(r'<table role="presentation" class="page"[^>]*>', page).group(0)
    assert 'bgcolor="#f4efe9"' in wrapper and "color:#1d1d1b" in wrapper.replace(" ", "")
    preheader = re.search(r'<div class="preheader"[^>]*>', page).group(0)
    assert "display:none" in preheader.replace(" ", "") and "color" not in preheader  # no low-contrast trick


def test_the_web_copy_does_not_link_to_itself(rendered: RenderedEdition) -> None:
    assert LINKS.view_in_browser not in rendered.web_html and LINKS.subscribe in rendered.web_html
    assert LINKS.view_in_browser in rendered.html


@pytest.mark.parametrize(
    ("address", "footer"),
    [
        ("The Example Gazette\n1 Quay Street", "The Example Gazette, 1 Quay Street"),
        ("1 Quay Street, Portside", "The Example Gazette · 1 Quay Street, Portside"),
        ("", "The Example Gazette"),
    ],
)
def test_the_sign_up_mail_footer_names_the_publication_once(tmp_path: Path, address: str, footer: str) -> None:
    from newsletter.web import create_app
    from newsletter.web.mail import notice_message

    config = make_config(f"sqlite:///{tmp_path / 'x.db'}", newsletter={"address": address})
    app = create_app(config, store=object())  # type: ignore[arg-type] - rendering needs no database
    with app.app_context():
        message = notice_message(
            config, "ana@example.org", "confirm", datetime(2026, 11, 24, tzinfo=UTC), confirm_url="u"
        )
    page = message.get_body(("html",)).get_content()
    last_cell = page.rsplit("<td", 1)[1]
    assert " ".join(last_cell.split(">", 1)[1].split("</td>")[0].split()) == footer


def test_a_word_longer_than_the_screen_wraps(rendered: RenderedEdition) -> None:
    sheet = re.search(r'<table role="presentation" class="sheet"[^>]*>', rendered.html).group(0)
    assert "overflow-wrap:anywhere" in sheet.replace(" ", "")  # inherited by every story in it
