"""Cleaning article HTML and text for email: what must go, what must stay exactly as written."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest

from newsletter.cleaning import (
    STANDFIRST_MAX,
    absolute_url,
    clean_html,
    date_in_range,
    html_to_text,
    parse_date,
    squash,
    text_to_html,
    trim_standfirst,
)

ARTICLE = "https://news.example.com/news/harbour-bridge"
LONDON = ZoneInfo("Europe/London")

# Each of these once got past some sanitiser; none may leave a way to run code or load a page.
HOSTILE = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    '<img src=x onerror="alert(1)">',
    '<img src="javascript:alert(1)">',
    '<a href="javascript:alert(1)">a</a>',
    '<a href="JaVaScRiPt:alert(1)">a</a>',
    '<a href="java\tscript:alert(1)">a</a>',
    '<a href="javascript&#58;alert(1)">a</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">a</a>',
    '<a href=" javascript:alert(1)">a</a>',
    '<a href="vbscript:msgbox(1)">a</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">a</a>',
    '<img src="data:image/svg+xml,<svg onload=alert(1)>">',
    "<svg><script>alert(1)</script></svg>",
    "<svg onload=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<iframe src="https://evil.example"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<object data="https://evil.example/x.swf"></object>',
    '<embed src="https://evil.example/x.swf">',
    '<form action="https://evil.example"><input type=submit></form>',
    '<body onload="alert(1)">',
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<p style="behavior:url(x.htc)">x</p>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<base href="https://evil.example/">',
    "<style>@import 'https://evil.example/x.css';</style>",
    '<a href="https://news.example.com" onclick="alert(1)" onmouseover="alert(2)">ok</a>',
    "<p><<script>script>alert(1)</script></p>",
    "<!--<script>alert(1)</script>-->",
    '<img src="x" alt="&quot; onerror=&quot;alert(1)">',
    '<details open ontoggle="alert(1)">',
    '<video><source onerror="alert(1)"></video>',
    '<a href="https://ok.example/" target="_blank" rel="opener">x</a>',
]


class _Elements(HTMLParser):
    """Every tag and attribute as a browser would see them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += [(name, value or "") for name, value in attrs]


@pytest.mark.parametrize("payload", HOSTILE)
def test_nothing_hostile_survives(payload: str) -> None:
    html = clean_html(f"<p>Before</p>{payload}<p>After</p>", ARTICLE).html
    found = _Elements(html)
    assert found.tags <= {"p", "a", "img", "b", "div", "table"}, html
    for name, value in found.attributes:
        assert name in {"href", "src", "alt", "title"}, html
        if name in ("href", "src"):
            assert value.startswith("https://"), html
    assert html.startswith("<p>Before</p>")


def test_dangerous_elements_go_with_their_content_but_harmless_text_stays() -> None:
    cleaned = clean_html(
        "<p>Read <span class='x'>this</span>.</p><script>steal()</script><style>p{}</style>"
        "<iframe>frame text</iframe><form><label>Password</label><input></form><custom-tag>custom text</custom-tag>",
        ARTICLE,
    )
    assert cleaned.html == "<p>Read this.</p>\ncustom text"
    assert "steal" not in cleaned.text and "frame text" not in cleaned.text and "Password" not in cleaned.text


def test_links_and_images_are_made_absolute_against_the_article_url() -> None:
    cleaned = clean_html(
        '<p><a href="/news/other">root</a> <a href="sibling">sibling</a> <a href="../up">up</a> '
        '<a href="#comments">here</a> <a href="//cdn.example.net/x">scheme-relative</a> '
        '<a href="mailto:desk@news.example.com">mail</a> <img src="img/a.jpg" alt="A"></p>'
        '<blockquote cite="/sources/1"><p>Quoted</p></blockquote>',
        ARTICLE,
    )
    hrefs = re.findall(r'(?:href|src|cite)="([^"]+)"', cleaned.html)
    assert hrefs == [
        "https://news.example.com/news/other",
        "https://news.example.com/news/sibling",
        "https://news.example.com/up",
        "https://news.example.com/news/harbour-bridge#comments",
        "https://cdn.example.net/x",
        "mailto:desk@news.example.com",
        "https://news.example.com/news/img/a.jpg",
        "https://news.example.com/sources/1",
    ]


def test_a_link_that_is_removed_keeps_its_words() -> None:
    cleaned = clean_html('<p>Win <a href="javascript:void(0)">a <b>prize</b></a> today</p>', ARTICLE)
    assert cleaned.html == "<p>Win a <b>prize</b> today</p>"


@pytest.mark.parametrize(
    "image",
    [
        '<img src="https://news.example.com/p.gif" width="1" height="1">',
        '<img src="https://news.example.com/p.gif" width="1px">',
        '<img src="https://news.example.com/p.gif" height="0">',
        '<img src="https://news.example.com/p.gif" style="width: 1px; height: 1px">',
        '<img src="https://news.example.com/p.gif" style="display:none">',
        '<img src="https://news.example.com/p.gif" style="visibility: hidden">',
        '<img src="https://feeds.feedburner.com/~r/gazette/~4/abc">',
        '<img src="https://pixel.wp.com/b.gif?blog=1">',
        '<img src="https://www.google-analytics.com/collect?v=1">',
        '<img alt="no source at all">',
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">',
    ],
)
def test_tracking_pixels_and_unloadable_images_are_dropped(image: str) -> None:
    cleaned = clean_html(f"<p>Text {image}</p>", ARTICLE)
    assert cleaned.html == "<p>Text</p>"
    assert cleaned.image_url == ""


def test_real_images_keep_their_size_and_alt_but_not_their_style() -> None:
    cleaned = clean_html('<img src="/a.jpg" width="600" height="400" alt="Boats" style="float:left">', ARTICLE)
    assert cleaned.html == '<img src="https://news.example.com/a.jpg" alt="Boats" width="600" height="400">'


def test_whitespace_noise_goes_and_typography_stays() -> None:
    body = (
        "<p>  “Quotes”  and — dashes,\n  naïve   café&nbsp;&nbsp;crème brûlée.   </p>"
        "<p>&nbsp;</p><p> </p><p><br></p>"
        "<p>10&nbsp;km  <b>bold </b> text <br>  next line  </p>"
        "<pre>  keep   this\n    as it is  </pre>"
    )
    cleaned = clean_html(body, ARTICLE)
    assert cleaned.html == (
        "<p>“Quotes” and — dashes, naïve café crème brûlée.</p>\n"
        "<p>10\u00a0km <b>bold </b>text<br>next line</p>\n"
        "<pre>  keep   this\n    as it is  </pre>"
    )


def test_the_first_paragraph_image_and_caption_are_found() -> None:
    cleaned = clean_html(
        '<figure><img src="/a.jpg" alt=" The  quay "><figcaption>The quay.  Photograph: Ana</figcaption></figure>'
        "<blockquote><p>Not this one.</p></blockquote>"
        "<p>  </p><p>This  one, with <a href='/x'>a link</a>.</p><p>Not the second.</p>"
        '<figure><img src="/b.jpg"><figcaption>Another caption</figcaption></figure>',
        ARTICLE,
    )
    assert cleaned.first_paragraph == "This one, with a link."
    assert cleaned.image_url == "https://news.example.com/a.jpg"
    assert cleaned.image_alt == "The quay"
    assert cleaned.image_caption == "The quay. Photograph: Ana"


def test_a_line_break_separates_words_in_the_standfirst_and_caption() -> None:
    cleaned = clean_html(
        '<figure><img src="/a.jpg"><figcaption>Photograph: Ana<br>Agency</figcaption></figure>'
        "<p>Line one<br>Line two</p>",
        ARTICLE,
    )
    assert cleaned.first_paragraph == "Line one Line two"
    assert cleaned.image_caption == "Photograph: Ana Agency"


def test_a_caption_belongs_to_its_own_figure_only() -> None:
    cleaned = clean_html(
        '<figure><img src="/a.jpg"></figure><figure><img src="/b.jpg"><figcaption>B</figcaption></figure>', ARTICLE
    )
    assert cleaned.image_url == "https://news.example.com/a.jpg"
    assert cleaned.image_caption == ""


def test_a_body_without_paragraphs_offers_all_its_text_as_the_first_paragraph() -> None:
    assert clean_html("Just  words,<br>no paragraphs.", ARTICLE).first_paragraph == "Just words, no paragraphs."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Fish &amp;amp; chips: <em>the</em> verdict", "Fish &amp; chips: the verdict"),
        ("Fish &amp; chips", "Fish & chips"),
        ("  Zoë’s   “café” — <b>open</b>&nbsp;late  ", "Zoë’s “café” — open\u00a0late"),
        ("Two<br>lines", "Two lines"),
        ("<p>One.</p><p>Two.</p>", "One. Two."),
        ("x < y and y > z", "x < y and y > z"),
        ("<script>alert(1)</script>Headline", "Headline"),
        ("tab\there, nul\x00 gone", "tab here, nul gone"),
    ],
)
def test_html_to_text(raw: str, expected: str) -> None:
    assert html_to_text(raw) == expected


def test_squash_keeps_a_single_non_breaking_space_and_collapses_runs() -> None:
    assert squash(" a \u00a0 b\u00a0c\n\n d \u00a0") == "a b\u00a0c d"


def test_standfirst_is_cut_at_a_word_boundary_with_an_ellipsis() -> None:
    words = "The council’s harbour committee met — again — to discuss the ferry’s winter timetable, "
    text = words * 5
    cut = trim_standfirst(text)
    assert len(cut) <= STANDFIRST_MAX
    assert cut.endswith("…") and not cut.endswith(" …") and not cut.endswith(",…")
    assert text.startswith(cut[:-1])
    assert text[len(cut) - 1] == " "  # the cut falls between words
    assert trim_standfirst("Short and sweet.") == "Short and sweet."
    assert trim_standfirst("x" * 300).endswith("…") and len(trim_standfirst("x" * 300)) == STANDFIRST_MAX


def test_text_to_html_makes_paragraphs_and_escapes() -> None:
    assert text_to_html("One <b>\n\n  Two & three\n") == "<p>One &lt;b&gt;</p><p>Two &amp; three</p>"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/x", "https://news.example.com/x"),
        ("https://other.example/y", "https://other.example/y"),
        ("ftp://files.example/z", ""),
        ("javascript:alert(1)", ""),
        ("http://", ""),
        ("https://exa mple.com/", ""),
        ("", ""),
    ],
)
def test_absolute_url(url: str, expected: str) -> None:
    assert absolute_url(url, ARTICLE) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Tue, 24 Nov 2026 05:30:00 +0100", datetime(2026, 11, 24, 4, 30, tzinfo=UTC)),
        ("Tue, 24 Nov 2026 05:30:00 GMT", datetime(2026, 11, 24, 5, 30, tzinfo=UTC)),
        ("Tue, 24 Nov 2026 05:30:00 -0000", datetime(2026, 11, 24, 5, 30, tzinfo=UTC)),
        ("2026-11-24T05:30:00Z", datetime(2026, 11, 24, 5, 30, tzinfo=UTC)),
        ("2026-11-24T05:30:00-05:00", datetime(2026, 11, 24, 10, 30, tzinfo=UTC)),
        # No zone: the newsroom's own clock. London is on BST in June, an hour ahead of UTC.
        ("Mon, 15 Jun 2026 07:00:00", datetime(2026, 6, 15, 6, 0, tzinfo=UTC)),
        ("2026-06-15T07:00:00", datetime(2026, 6, 15, 6, 0, tzinfo=UTC)),
        ("2026-06-15 07:00", datetime(2026, 6, 15, 6, 0, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
    ],
)
def test_parse_date(raw: str, expected: datetime | None) -> None:
    parsed = parse_date(raw, LONDON)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() is not None


def test_parse_date_reads_a_zoneless_time_in_the_given_zone() -> None:
    parsed = parse_date("2026-11-24T00:30:00", ZoneInfo("America/New_York"))
    assert parsed is not None and parsed.utcoffset() == timedelta(hours=-5)
    assert parsed.astimezone(UTC) == datetime(2026, 11, 24, 5, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Red\x1b[31m alert\x1b[0m", "Red[31m alert[0m"),  # ESC (C0)
        ("Bell\x07 rings", "Bell rings"),
        ("Delete\x7f me", "Delete me"),  # DEL
        ("CSI\x9b2J clears", "CSI2J clears"),  # the one-byte C1 form of ESC [
        ("OSC\x9d0;title\x9c here", "OSC0;title here"),
        ("All of C1: " + "".join(map(chr, range(0x80, 0x85))) + "".join(map(chr, range(0x86, 0xA0))), "All of C1:"),
        ("Next\x85line", "Next line"),  # NEL is a line break: a space, not glued words
        ("Half \ud83d an emoji\udfff", "Half an emoji"),  # lone surrogates: nothing can encode them
        ("Keep é, ß, ©,\u00a0and —", "Keep é, ß, ©,\u00a0and —"),
    ],
)
def test_squash_removes_every_control_character(raw: str, expected: str) -> None:
    assert squash(raw) == expected
    assert html_to_text(raw) == expected


def test_control_characters_go_from_preformatted_text_and_attributes_too() -> None:
    cleaned = clean_html('<pre>a\x1b[2J\tb\x9b\nc</pre><a href="/x" title="t\x07\x9bx">l</a>', ARTICLE)
    assert cleaned.html == '<pre>a[2J\tb\nc</pre>\n<a href="https://news.example.com/x" title="tx">l</a>'


@pytest.mark.parametrize("tag", ["div", "b", "x", "blockquote", "span", "ul", "table", "a", "p", "li", "td"])
def test_html_nested_100000_deep_is_cleaned_quickly_and_keeps_its_words(tag: str) -> None:
    started = time.monotonic()
    cleaned = clean_html(f"<{tag}>" * 100_000 + "Deep words" + f"</{tag}>" * 100_000 + "<p>After</p>", ARTICLE)
    assert time.monotonic() - started < 5
    assert "Deep words" in cleaned.text and "After" in cleaned.text


def test_ordinary_html_is_not_flattened() -> None:
    nested = "<div>" * 40 + "<p>Deep</p>" + "</div>" * 40
    assert clean_html(nested, ARTICLE).html.count("<div>") == 40
    sloppy = "<ul>" + "<li>item" * 500 + "</ul>" + "<p>para" * 500  # unclosed, as old CMSes write it
    cleaned = clean_html(sloppy, ARTICLE)
    assert cleaned.html.count("<li>") == 500 and cleaned.html.count("<p>") == 500


@pytest.mark.parametrize(
    ("raw", "year"),
    [
        ("9999-12-31T23:59:59-12:00", 9999),
        ("0001-01-01T00:00:00+14:00", 1),
        ("Fri, 31 Dec 9999 23:59:59 -1200", 9999),
        ("1969-12-31T23:59:59Z", 1969),
        ("2101-01-01T00:00:00Z", 2101),
    ],
)
def test_dates_outside_the_supported_years_are_read_but_not_in_range(raw: str, year: int) -> None:
    parsed = parse_date(raw, LONDON)
    assert parsed is not None and parsed.year == year
    assert not date_in_range(parsed)


@pytest.mark.parametrize("raw", ["1970-01-01T00:00:00Z", "2100-12-31T23:59:59Z", "2026-11-24T05:30:00+14:00"])
def test_dates_inside_the_supported_years(raw: str) -> None:
    parsed = parse_date(raw, LONDON)
    assert parsed is not None and date_in_range(parsed)


@pytest.mark.parametrize(
    "raw",
    ["Fri, 31 Dec 99999999999999999999 23:59:59 +0000", "Fri, 31 Dec 2026 23:59:59 +9999", "9" * 5000, "\x00"],
)
def test_dates_that_cannot_be_read_are_none_never_an_exception(raw: str) -> None:
    assert parse_date(raw, LONDON) is None


def test_formatting_left_open_in_each_paragraph_is_not_copied_into_every_later_one() -> None:
    # An HTML parser re-opens an unclosed <b> in every later paragraph, attributes and all:
    # output (and time) grow with the square of the input unless the end tags are written out.
    html = "".join(f'<p>x<b title="{i:04}{"t" * 40}"></p>' for i in range(4000))
    started = time.monotonic()
    cleaned = clean_html(html, ARTICLE)
    assert time.monotonic() - started < 5
    assert len(cleaned.html) < 2 * len(html)
    assert cleaned.text == " ".join(["x"] * 4000)
