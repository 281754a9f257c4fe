"""Importing articles from feed and JSON Lines files into the store, and on into an edition.

The files under tests/data/ are written for these tests: an RSS feed with hostile HTML and
its later version, an Atom feed, a CMS export in JSON Lines, a truncated feed, an HTML
error page where a feed should be, bylines in RSS and Atom, and Media RSS pictures.
Files built to attack the import are in test_articles_hostile.py.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.articles import ImportSummary, import_source
from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.context import Context
from newsletter.editions import EditionPlan
from newsletter.errors import ArticleImportError
from newsletter.preparation import plan_for, render_plan
from newsletter.store import Store
from newsletter.store.models import Article
from newsletter.tokens import Tokens
from tests.conftest import make_config, replace


@pytest.fixture
def ctx(db_url: str, store: Store, clock: FixedClock, tokens: Tokens) -> Context:
    """Importing sends no mail: the test configuration without the SMTP server the shared ``ctx`` starts."""
    return Context(make_config(db_url), store, clock, tokens)


DATA = Path(__file__).with_name("data")
RSS = str(DATA / "gazette.rss")
RSS_LATER = str(DATA / "gazette-updated.rss")
ATOM = str(DATA / "culture.atom")
JSONL = str(DATA / "cms-export.jsonl")
REFUSED_TITLE = "Refused by the database"


def stored(store: Store) -> dict[str, Article]:
    with store.session() as session:
        return {a.guid: a for a in session.scalars(select(Article))}


def count_articles(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Article)) or 0


def story_titles(plan: EditionPlan) -> list[str]:
    stories = ([plan.lead] if plan.lead else []) + [s for section in plan.sections for s in section.stories]
    return [s.title for s in stories]


def write_config(tmp_path: Path, db_url: str, feeds: Sequence[tuple[str, str]] = (), **fetch: object) -> Path:
    """A minimal configuration file for running the command line against ``db_url``."""
    lines = [
        "[newsletter]",
        'publication = "The Example Gazette"',
        "[store]",
        f'url = "{db_url}"',
        "[sender]",
        'from_address = "breakfast@news.example.com"',
        "[web]",
        'base_url = "https://news.example.com/newsletter"',
        "[fetch]",
        *(f"{key} = {value}" for key, value in fetch.items()),
    ]
    for url, section in feeds:
        lines += ["[[feeds]]", f'url = "{url}"', f'section = "{section}"']
    path = tmp_path / "newsletter.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- RSS ---------------------------------------------------------------------------------


def test_rss_items_are_cleaned_and_stored(store, clock, ctx) -> None:
    summary = import_source(ctx, RSS)

    assert (summary.new, summary.updated, summary.unchanged, summary.rejected) == (5, 0, 0, 1)
    assert summary.rejections == ["item 5 “An item with no link at all”: no link to the article"]
    assert summary.warnings == [
        "item 3 “Late-night council vote on the ferry timetable”: no publication date; using the time of import",
        "item 4 “Tomorrow’s tide tables, a day early”: dated 2026-11-25T05:30+00:00, in the future; "
        "it waits for the edition after that",
    ]
    articles = stored(store)
    bridge = articles["gazette-1001"]
    assert bridge.title == "Harbour bridge reopens — “at last”, say café owners"
    assert bridge.url == "https://news.example.com/news/harbour-bridge"
    assert bridge.standfirst == "Engineers say the 1930s swing bridge passed its final load test overnight."
    assert bridge.author == "Siobhán O’Connell"
    assert bridge.section == "News"
    assert bridge.issue_number == "48,213"
    assert bridge.published_at == datetime(2026, 11, 24, 5, 15, tzinfo=UTC)
    assert bridge.image_url == "https://news.example.com/images/harbour-bridge.jpg"
    assert bridge.image_alt == "The bridge at dawn"
    assert bridge.image_caption == "Scaffolding comes down. Photograph:\u00a0Tomás Ferreira"
    assert bridge.body == (
        "<p>The swing bridge that links the old town with the ferry terminal will carry traffic again from 6am "
        "on Monday.</p>\n"
        '<figure><img src="https://news.example.com/images/harbour-bridge.jpg" alt="The bridge at dawn" width="800">'
        "<figcaption>Scaffolding comes down. Photograph:\u00a0Tomás Ferreira</figcaption>\n</figure>\n"
        "<p>“We found more corrosion than the survey showed,” said Zoë Lindqvist — the chief engineer. "
        '<a href="https://news.example.com/news/bridge-history">Read the history</a>.</p>\n'
        "<p>Click for a prize or here</p>\n"
        '<p>Photo gallery: <a href="https://news.example.com/news/gallery/bridge">see the pictures</a></p>'
    )

    # No id: the link is the guid, resolved against the site like the picture.
    derby = articles["https://news.example.com/sport/derby-report"]
    assert derby.url == "https://news.example.com/sport/derby-report"
    assert derby.image_url == "https://news.example.com/images/derby.jpg"
    assert derby.published_at == datetime(2026, 11, 23, 21, 40, tzinfo=UTC)  # no zone: London, GMT in November
    assert derby.standfirst.startswith("The visitors led for almost the whole of a bruising, rain-soaked evening")
    assert derby.standfirst.endswith(" Ingrid Sørensen, drove…") and len(derby.standfirst) <= 240
    assert "second paragraph" not in derby.standfirst

    assert articles["https://news.example.com/news/ferry-vote"].published_at == clock.now()
    assert articles["https://news.example.com/weather/tides"].published_at == datetime(2026, 11, 25, 5, 30, tzinfo=UTC)
    chips = articles["https://news.example.com/food/fish-and-chips"]
    assert chips.title == "Fish & chips: the verdict"
    assert chips.author == "Night Desk"  # the address in <author> stays out of the byline
    assert chips.image_url == "https://news.example.com/images/chips.jpg"


def test_a_later_import_updates_changed_items_and_never_duplicates(store, clock, ctx) -> None:
    import_source(ctx, RSS)
    first = stored(store)
    clock.advance(3600)

    later = import_source(ctx, RSS_LATER)

    assert (later.new, later.updated, later.unchanged, later.rejected) == (1, 1, 4, 2)
    assert later.rejections == [
        "item 6 “An item with no link at all”: no link to the article",
        "item 8 “Night buses return to three routes (duplicate)”: same guid as item 1 "
        "“Night buses return to three routes”; ignored",
    ]
    assert later.warnings == []  # the dateless and future items were already known
    now = stored(store)
    assert len(now) == 6 == count_articles(store)
    bridge = now["gazette-1001"]
    assert bridge.title == "Harbour bridge reopens on Monday — “at last”, say café owners"
    assert bridge.id == first["gazette-1001"].id
    assert bridge.updated_at == clock.now() and bridge.created_at == first["gazette-1001"].created_at
    # An item without a date keeps the time it was first seen, so it does not look new every hour.
    ferry = now["https://news.example.com/news/ferry-vote"]
    assert ferry.published_at == first["https://news.example.com/news/ferry-vote"].published_at
    assert ferry.updated_at == first["https://news.example.com/news/ferry-vote"].updated_at

    again = import_source(ctx, RSS_LATER)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 6)


def test_the_section_of_the_source_wins_over_each_items_category(store, ctx) -> None:
    import_source(ctx, RSS, section="Morning briefing")
    assert {a.section for a in stored(store).values()} == {"Morning briefing"}


def test_a_zoneless_date_is_read_in_the_configured_timezone(store, db_url, ctx) -> None:
    config = make_config(db_url, newsletter={"timezone": "America/New_York"})
    import_source(replace(ctx, config=config), RSS)
    derby = stored(store)["https://news.example.com/sport/derby-report"]
    assert derby.published_at == datetime(2026, 11, 24, 2, 40, tzinfo=UTC)  # 21:40 EST


# --- Atom --------------------------------------------------------------------------------


def test_atom_entries_with_xml_base_html_titles_and_plain_text_content(store, ctx) -> None:
    summary = import_source(ctx, ATOM)
    assert (summary.new, summary.rejected, summary.warnings) == (2, 0, [])
    articles = stored(store)
    session = articles["tag:news.example.com,2026:culture-7"]
    assert session.title == "Ceol agus craic: Siobhán’s sessions & the Tōkyō connection"
    assert session.url == "https://news.example.com/culture/sessions"
    assert session.published_at == datetime(2026, 11, 24, 3, 10, tzinfo=UTC)
    assert session.author == "Aoife Ní Bhriain, Yuki Nakamura"
    assert session.section == "Culture"
    assert session.standfirst == "Traditional music returns to the Quay Street pubs — with guests from 東京."
    assert session.image_url == "https://news.example.com/images/session.jpg"
    assert session.image_alt == "Fiddlers in the snug"
    assert session.image_caption == "Friday night at the Anchor. Photograph: Björn Ødegård"
    assert '<a href="https://news.example.com/culture/anchor">the Anchor</a>' in session.body
    choir = articles["tag:news.example.com,2026:culture-8"]
    assert choir.title == "Eisteddfod choir sings “Calon Lân” in Llanfair"
    assert choir.published_at == datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    assert choir.body == "<p>Sixty voices, one hymn.</p>\n<p>The choir’s next concert is on Saturday.</p>"
    assert choir.standfirst == "Sixty voices, one hymn."


# --- JSON Lines ------------------------------------------------------------------------------


def test_json_lines_rejects_bad_lines_by_number_and_keeps_the_good_ones(store, clock, ctx) -> None:
    summary = import_source(ctx, JSONL)

    assert (summary.new, summary.updated, summary.unchanged) == (3, 0, 0)
    assert summary.rejections == [
        "line 3: not valid JSON: Unterminated string starting at (column 53)",
        "line 4: expected a JSON object {...}",
        "line 5: title is missing",
        "line 6: title must be a string, not int",
        "line 7: url '/news/relative-only' is not an http(s) URL",
        "line 9: same guid as line 1; ignored",
        "line 10: published_at 'yesterday' is not a date like 2026-11-24T05:30:00Z",
    ]
    assert summary.warnings == [
        f"{JSONL}: unknown field 'tags' ignored (first on line 1)",
        "line 2: no published_at; using the time of import",
    ]
    articles = stored(store)
    lighthouse = articles["cms-5001"]
    assert lighthouse.title == "Lighthouse keeper’s cottage opens as a museum"
    assert lighthouse.published_at == datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
    assert lighthouse.issue_number == "48213"
    assert lighthouse.image_url == "https://news.example.com/images/lighthouse.jpg"
    assert (lighthouse.image_alt, lighthouse.image_caption) == (
        "The cottage at dusk",
        "The cottage, restored. Photograph: Mei Chen",
    )
    assert lighthouse.standfirst == (
        "After forty years empty, the cottage at Point Bay opens its doors on Saturday — with the original lamp."
    )
    assert lighthouse.body == (
        "<p>After forty years empty, the cottage at Point Bay opens its doors on Saturday — with the original "
        "lamp.</p>\n"
        '<p>See <a href="https://news.example.com/visit/point-bay">how to get there</a>.</p>'
    )
    jobs = articles["cms-5003"]
    assert jobs.title == "Harbour & ferry firm to hire 120"
    assert jobs.standfirst == "The biggest recruitment drive in a decade."
    assert (jobs.author, jobs.section) == ("Priya Raghunathan", "Business")
    school = articles["https://news.example.com/news/school-run"]
    assert school.published_at == clock.now()


def test_json_lines_from_windows_with_a_bom_and_a_bad_byte(store, ctx, tmp_path) -> None:
    export = tmp_path / "export.jsonl"
    export.write_bytes(
        b'\xef\xbb\xbf{"url": "https://news.example.com/a", "title": "Caf\xc3\xa9\xe2\x80\xa8opens", '
        b'"issue_number": null}\r\n'
        b'{"url": "https://news.example.com/b", "title": "Bad \xff byte"}\r\n'
        b'{"url": "https://news.example.com/c", "title": "Third"}\r\n'
    )
    summary = import_source(ctx, str(export))
    assert (summary.new, summary.rejections) == (2, ["line 2: not UTF-8 text"])
    # A raw U+2028 is a line break to str.splitlines, but not to JSON Lines; in a title it is a space.
    assert stored(store)["https://news.example.com/a"].title == "Café opens"


@pytest.mark.parametrize("name", ["export.jsonl", "export.txt"])
def test_json_lines_whose_first_line_is_bad_keeps_the_rest(ctx, tmp_path, name) -> None:
    export = tmp_path / name
    export.write_text('not json\n[1]\n{"url": "https://news.example.com/a", "title": "Kept"}\n', encoding="utf-8")
    summary = import_source(ctx, str(export))
    assert summary.new == 1 and [r.split(":")[0] for r in summary.rejections] == ["line 1", "line 2"]


def test_json_lines_duplicates_across_two_imports_are_one_article(store, clock, ctx, tmp_path) -> None:
    import_source(ctx, JSONL)
    edited = tmp_path / "edited.jsonl"
    lines = Path(JSONL).read_text(encoding="utf-8").splitlines()
    edited.write_text("\n".join([lines[0].replace("opens as a museum", "opens as a museum on Saturday"), *lines[1:]]))
    clock.advance(600)
    summary = import_source(ctx, str(edited))
    assert (summary.new, summary.updated, summary.unchanged) == (0, 1, 2)
    assert count_articles(store) == 3
    assert stored(store)["cms-5001"].title == "Lighthouse keeper’s cottage opens as a museum on Saturday"


# --- bylines and pictures --------------------------------------------------------------------


def test_rss_bylines_keep_the_name_and_never_the_address(store, ctx) -> None:
    summary = import_source(ctx, str(DATA / "bylines.rss"))
    assert (summary.new, summary.rejections) == (8, [])
    bylines = {a.title: a.author for a in stored(store).values()}
    assert bylines == {
        "Spec form": "Priya Shah",  # RSS 2.0: "email (Name)"
        "Mail header form": "Priya Shah",
        "Bare address": "",
        "Plain name": "Priya Shah",
        "Quoted name in a mail header form": "Shah, Priya",
        "Author and creator": "Priya Shah, Tom Jones",
        "Two creators with addresses": "Priya Shah, Tom Jones",
        "Name with a remark in brackets": "Priya Shah (Political Editor)",
    }


def test_atom_bylines_are_the_names_of_the_entrys_own_authors(store, ctx) -> None:
    import_source(ctx, str(DATA / "bylines.atom"))
    (article,) = stored(store).values()
    assert article.author == "Priya Shah, Tom Jones"


def test_media_rss_gives_the_picture_its_alt_and_caption_and_the_article_its_text(store, ctx) -> None:
    summary = import_source(ctx, str(DATA / "media.rss"))
    assert (summary.new, summary.rejections) == (6, [])
    articles = {a.url.rsplit("/", 1)[1]: a for a in stored(store).values()}

    def picture(name: str) -> tuple[str, str, str]:
        a = articles[name]
        return a.image_url, a.image_alt, a.image_caption

    def text(name: str) -> tuple[str, str]:
        return articles[name].standfirst, articles[name].body

    assert picture("m1") == (
        "https://paper.example/img/ferry.jpg",
        "A ferry at the quay",
        "The first sailing leaves at six. Photograph: Jo Bloggs",
    )
    assert text("m1") == ("Ferries run again from Monday.", "Ferries run again from Monday.")
    assert picture("m2") == ("https://paper.example/img/market.jpg", "", "Stalls on Quay Street")
    assert text("m2") == ("The Christmas market opens on Friday.", "The Christmas market opens on Friday.")
    assert picture("m3") == (
        "https://paper.example/img/pier.jpg",
        "The pier at low tide",
        "Rebuilt piles, photographed on Sunday. Photograph: Sam Lee",
    )
    assert text("m3") == (
        "A year of repairs ends.",
        "<p>The pier reopens after a year of repairs.</p>\n<p>More to follow.</p>",
    )
    # A group's title, description and credit are every member's; the video is no picture.
    assert picture("m4") == (
        "https://paper.example/img/storm.jpg",
        "Storm over the bay",
        "Waves break over the harbour wall. Photograph: Ana Ruiz",
    )
    assert text("m4") == ("Storm warning for the coast.", "Storm warning for the coast.")
    assert picture("m5") == ("https://paper.example/img/gulls.jpg", "", "Gulls on the harbour wall.")
    assert text("m5") == ("", "")
    assert articles["m6"].title == "Harbour lights at dusk"
    assert picture("m6") == ("https://paper.example/img/lights.jpg", "Harbour lights at dusk", "")
    for article in articles.values():
        for words in ("sailing", "Stalls", "Rebuilt", "Waves", "Video", "Gulls", "ferry at", "low tide"):
            assert words not in article.standfirst + article.body + article.title, (article.url, words)
        assert article.author == ""


# --- dates, numbers and nesting a source should never have ---------------------------------------


def good_line(slug: str, title: str = "") -> str:
    """A JSON Lines item that must go in whatever its neighbours hold."""
    return json.dumps(
        {
            "url": f"https://news.example.com/{slug}",
            "title": title or f"Good {slug}",
            "published_at": "2026-11-24T05:00:00Z",
        }
    )


def rss_item(slug: str, extra: str = "", title: str = "") -> str:
    return (
        f"<item><title>{title or 'Good ' + slug}</title><link>https://news.example.com/{slug}</link>"
        f"<pubDate>Tue, 24 Nov 2026 05:00:00 GMT</pubDate>{extra}</item>"
    )


def rss_feed(*items: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel><title>The Example Gazette</title>'
        f"<link>https://news.example.com/</link>{''.join(items)}</channel></rss>\n"
    )


def test_an_out_of_range_date_rejects_only_its_item(store, ctx, tmp_path) -> None:
    export = tmp_path / "dates.jsonl"
    lines = [
        good_line("a"),
        '{"url": "https://news.example.com/b", "title": "B", "published_at": "9999-12-31T23:59:59-12:00"}',
        '{"url": "https://news.example.com/c", "title": "C", "published_at": "0001-01-01T00:00:00+14:00"}',
        '{"url": "https://news.example.com/d", "title": "D", "published_at": "1969-12-31T23:59:59Z"}',
        good_line("e"),
    ]
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = import_source(ctx, str(export))
    assert summary.new == 2
    assert summary.rejections == [
        "line 2: published_at '9999-12-31T23:59:59-12:00' is outside the years 1970 to 2100",
        "line 3: published_at '0001-01-01T00:00:00+14:00' is outside the years 1970 to 2100",
        "line 4: published_at '1969-12-31T23:59:59Z' is outside the years 1970 to 2100",
    ]
    assert sorted(a.title for a in stored(store).values()) == ["Good a", "Good e"]

    feed = tmp_path / "dates.rss"
    feed.write_text(
        rss_feed(
            rss_item("f"),
            "<item><title>G</title><link>https://news.example.com/g</link>"
            "<pubDate>Fri, 31 Dec 9999 23:59:59 -1200</pubDate></item>",
        ),
        encoding="utf-8",
    )
    summary = import_source(ctx, str(feed))
    assert (summary.new, summary.rejections) == (
        1,
        ["item 2 “G”: its date 'Fri, 31 Dec 9999 23:59:59 -1200' is outside the years 1970 to 2100"],
    )


def test_a_line_nested_too_deeply_is_rejected_and_the_rest_go_in(ctx, tmp_path) -> None:
    export = tmp_path / "deep.jsonl"
    deep_array = "[" * 100_000 + "]" * 100_000
    deep_object = '{"a":' * 100_000 + "1" + "}" * 100_000
    deep_field = '{"url": "https://news.example.com/x", "title": "X", "tags": ' + deep_array + "}"
    export.write_text("\n".join([good_line("a"), deep_array, deep_object, deep_field, good_line("b")]) + "\n")
    summary = import_source(ctx, str(export))
    assert summary.new == 2
    assert summary.rejections == [f"line {n}: nested too deeply" for n in (2, 3, 4)]


def test_huge_numbers_reject_their_line_and_the_rest_go_in(store, ctx, tmp_path) -> None:
    export = tmp_path / "numbers.jsonl"
    export.write_text(
        "\n".join(
            [
                good_line("a"),
                '{"url": "https://news.example.com/b", "title": "B", "issue_number": ' + "9" * 5000 + "}",
                '{"url": "https://news.example.com/c", "title": "C", "priority": -' + "9" * 100_000 + "}",
                '{"url": "https://news.example.com/d", "title": 1e999999}',
                '{"url": "https://news.example.com/e", "title": "E", "priority": 1e400}',
                '{"url": "https://news.example.com/f", "title": "F", "issue_number": 1.5e300}',
                '{"url": "https://news.example.com/g", "title": "G", "issue_number": 12345678901234567890}',
                good_line("h"),
            ]
        )
        + "\n"
    )
    summary = import_source(ctx, str(export))
    assert summary.rejections == [
        "line 2: a number with 5000 digits; at most 40 are allowed",
        "line 3: a number with 100000 digits; at most 40 are allowed",
        "line 4: title must be a string, not float",
        "line 5: priority must be a whole number from -1000 to 1000",
        "line 6: issue_number must be a string, not float",
    ]
    assert sorted(a.title for a in stored(store).values()) == ["G", "Good a", "Good h"]
    assert stored(store)["https://news.example.com/g"].issue_number == "12345678901234567890"


def test_control_characters_never_reach_the_store(store, ctx, tmp_path) -> None:
    export = tmp_path / "controls.jsonl"
    export.write_text(
        json.dumps(
            {
                "url": "https://news.example.com/a",
                "title": "Harbour \x1b[31mred\x1b[0m alert\x07 \x9b2J\x7f now",
                "author": "Priya\x00 Shah\x85",
                "image_url": "https://news.example.com/a.jpg",
                "image_caption": "Quay\x90 at\x1b]0;pwned\x07 dawn",
                "body": "<p>One\x1b[2J two</p><pre>keep\n  lines\x9b6n</pre>",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    summary = import_source(ctx, str(export))
    assert summary.new == 1, summary.rejections
    article = stored(store)["https://news.example.com/a"]
    assert article.title == "Harbour [31mred[0m alert 2J now"
    assert article.author == "Priya Shah"
    assert article.image_caption == "Quay at]0;pwned dawn"
    assert article.body == "<p>One[2J two</p>\n<pre>keep\n  lines6n</pre>"
    controls = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
    for name in ("title", "author", "image_caption", "standfirst", "body"):
        assert not controls.search(getattr(article, name)), name


# --- bad sources -----------------------------------------------------------------------------


def test_a_truncated_feed_imports_what_could_be_read_and_says_so(ctx) -> None:
    source = str(DATA / "truncated.rss")
    summary = import_source(ctx, source)
    assert (summary.new, summary.rejections) == (1, ["item 2: no link to the article"])
    assert summary.warnings == [
        f"{source}: the feed is not well-formed (line 14: no element found); imported what could be read"
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (str(DATA / "not-a-feed.html"), "not an RSS or Atom feed, nor JSON Lines"),
        (str(DATA / "no-such-feed.xml"), "no such file"),
        (str(DATA), "is a directory; give a feed or JSON Lines file"),
        ("ftp://news.example.com/feed.xml", "only http://, https:// URLs and file paths can be imported"),
    ],
    ids=["html page", "missing file", "directory", "unsupported scheme"],
)
def test_a_source_that_cannot_be_read_is_one_line_naming_it(store, ctx, source, message) -> None:
    with pytest.raises(ArticleImportError) as caught:
        import_source(ctx, source)
    assert str(caught.value) == f"{source}: {message}"
    assert count_articles(store) == 0


def test_an_empty_file_imports_nothing_and_says_so(ctx, tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    summary = import_source(ctx, str(empty))
    assert (summary.new, summary.rejected, summary.warnings) == (0, 0, [f"{empty}: empty; nothing to import"])


def test_a_file_larger_than_fetch_max_bytes_is_refused_naming_the_limit(db_url, ctx, tmp_path) -> None:
    config = make_config(db_url, fetch={"max_bytes": 1000})
    export = tmp_path / "big.jsonl"
    line = good_line("a") + "\n"
    export.write_text(line + " " * (1000 - len(line)), encoding="utf-8")
    assert import_source(replace(ctx, config=config), str(export)).new == 1  # exactly the limit is allowed
    export.write_text(line + " " * (1001 - len(line)), encoding="utf-8")
    with pytest.raises(ArticleImportError) as caught:
        import_source(replace(ctx, config=config), str(export))
    assert str(caught.value) == f"{export}: larger than fetch.max_bytes (1,000 bytes); refusing it"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_device_is_read_only_up_to_the_limit(db_url, ctx) -> None:
    config = make_config(db_url, fetch={"max_bytes": 100_000})
    with pytest.raises(ArticleImportError) as caught:
        import_source(replace(ctx, config=config), "/dev/zero")
    assert str(caught.value) == "/dev/zero: larger than fetch.max_bytes (100,000 bytes); refusing it"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="opens a named pipe for reading and writing")
def test_a_named_pipe_is_read_within_the_time_limit(store, db_url, ctx, tmp_path) -> None:
    config = make_config(db_url, fetch={"timeout": 1})
    pipe = tmp_path / "export.jsonl"
    os.mkfifo(pipe)
    # Nobody writing: nothing to import, at once (opening it must not wait for a writer).
    summary = import_source(replace(ctx, config=config), str(pipe))
    assert summary.warnings == [f"{pipe}: empty; nothing to import"]

    # A writer that sends a line and then stalls without closing is given up on after fetch.timeout.
    stalled = os.open(pipe, os.O_RDWR)
    try:
        os.write(stalled, (good_line("a") + "\n").encode())
        started = time.monotonic()
        with pytest.raises(ArticleImportError) as caught:
            import_source(replace(ctx, config=config), str(pipe))
        assert str(caught.value) == f"{pipe}: no end of the data within fetch.timeout (1 s)"
        assert time.monotonic() - started < 5
    finally:
        os.close(stalled)
    assert count_articles(store) == 0

    # A writer that finishes, as with `newsletter articles import <(cms-export)`: imported like a file.
    def write() -> None:
        with open(pipe, "wb") as writer:  # waits for the import below to open the pipe
            writer.write((good_line("b") + "\n").encode())

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(500):  # until the writer has the pipe open, the import reads it as empty
            summary = import_source(replace(ctx, config=config), str(pipe))
            if summary.new:
                break
            time.sleep(0.01)
    finally:
        writer.join(10)
    assert summary.new == 1


def test_invalid_utf8_in_a_feed_imports_what_can_be_read(store, ctx, tmp_path) -> None:
    feed = tmp_path / "bad-bytes.rss"
    feed.write_bytes(rss_feed(rss_item("a"), rss_item("b", title="Caf\udce9 opens")).encode("utf-8", "surrogateescape"))
    summary = import_source(ctx, str(feed))
    assert summary.new == 2 and summary.rejections == []
    (warning,) = summary.warnings
    assert warning.startswith(f"{feed}: the feed is not well-formed (document declared as utf-8, but parsed as ")
    assert stored(store)["https://news.example.com/b"].title == "Café opens"  # read as Latin-1 or Windows-1252


@pytest.fixture
def refusing_store(store: Store, db_url: str):  # type: ignore[no-untyped-def]
    """The database itself refuses one title, as a constraint or a trigger would in real life."""
    with store.engine.begin() as conn:
        if db_url.startswith("sqlite"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_test_title BEFORE INSERT ON articles WHEN NEW.title = '{REFUSED_TITLE}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
            )
        else:
            conn.exec_driver_sql(
                f"ALTER TABLE articles ADD CONSTRAINT ck_articles_test_refusal CHECK (title <> '{REFUSED_TITLE}')"
            )
    yield store
    with store.engine.begin() as conn:
        if db_url.startswith("sqlite"):
            conn.exec_driver_sql("DROP TRIGGER refuse_test_title")
        else:
            conn.exec_driver_sql("ALTER TABLE articles DROP CONSTRAINT ck_articles_test_refusal")


def test_an_item_the_database_refuses_is_rejected_and_the_others_go_in(refusing_store, ctx, tmp_path) -> None:
    source = tmp_path / "three.jsonl"
    source.write_text(
        '{"url": "https://news.example.com/a", "title": "First", "published_at": "2026-11-24T05:00:00Z"}\n'
        f'{{"url": "https://news.example.com/b", "title": "{REFUSED_TITLE}"}}\n'
        '{"url": "https://news.example.com/c", "title": "Third", "published_at": "2026-11-24T05:10:00Z"}\n',
        encoding="utf-8",
    )
    summary = import_source(replace(ctx, store=refusing_store), str(source))
    assert summary.new == 2
    (reason,) = summary.rejections
    assert reason.startswith("line 2: the database refused it (")
    assert sorted(a.title for a in stored(refusing_store).values()) == ["First", "Third"]


# --- into an edition ---------------------------------------------------------------------------


def test_future_dated_articles_wait_until_their_time(clock, ctx) -> None:
    import_source(ctx, RSS)
    tides = "Tomorrow’s tide tables, a day early"

    today = plan_for(ctx, date(2026, 11, 24)).plan
    assert tides not in story_titles(today)
    clock.set(datetime(2026, 11, 25, 5, 0, tzinfo=UTC))  # sent early by hand, half an hour before it is due
    early = plan_for(ctx, date(2026, 11, 25)).plan
    assert tides not in story_titles(early)
    assert "Late-night council vote on the ferry timetable" in story_titles(early)
    clock.set(datetime(2026, 11, 25, 6, 30, tzinfo=UTC))
    due = plan_for(ctx, date(2026, 11, 25)).plan
    assert tides in story_titles(due)


def test_an_edition_of_imported_articles_renders_them_cleanly(db_url, ctx) -> None:
    config = make_config(db_url, tracking={"clicks": False})  # the links as written (tracking: test_tracking.py)
    for source in (RSS, ATOM, JSONL):
        import_source(replace(ctx, config=config), source)

    plan = plan_for(replace(ctx, config=config), date(2026, 11, 24)).plan
    rendered = render_plan(config, plan, "nonce")

    assert plan.lead is not None and plan.lead.title == "Harbour bridge reopens — “at last”, say café owners"
    assert story_titles(plan)[1:] == [
        "Lighthouse keeper’s cottage opens as a museum",
        "Harbour & ferry firm to hire 120",
        "Ceol agus craic: Siobhán’s sessions & the Tōkyō connection",
        "Fish & chips: the verdict",
        "Derby ends 2–2 after a late penalty at the Quay",
        "Eisteddfod choir sings “Calon Lân” in Llanfair",  # no section: "More stories", last
    ]
    page = html.unescape(rendered.html)
    for expected in (
        "Harbour bridge reopens — “at last”, say café owners",
        "Engineers say the 1930s swing bridge passed its final load test overnight.",
        "Scaffolding comes down. Photograph:\u00a0Tomás Ferreira",
        'src="https://news.example.com/images/harbour-bridge.jpg"',
        'alt="The bridge at dawn"',
        "By Siobhán O’Connell",
        "No. 48,213",
        'href="https://news.example.com/sport/derby-report"',
        "Ingrid Sørensen, drove…",
        "Ceol agus craic: Siobhán’s sessions & the Tōkyō connection",
    ):
        assert expected in page, expected
    assert "Fish &amp; chips: the verdict" in rendered.html and "<em>" not in rendered.html
    links = re.findall(r'(?:href|src)="([^"]*)"', rendered.html)
    assert links and all(link.startswith("https://") or link == rendered.markers.unsubscribe_url for link in links), (
        links
    )
    for text in (rendered.html, rendered.text):
        lowered = text.lower()
        for gone in ("<script", "javascript:", "evil.example", "pixel.gif", "feedburner", "onerror", "prize"):
            assert gone not in lowered, gone
    assert "Fish & chips: the verdict" in rendered.text
    assert "https://news.example.com/culture/sessions" in rendered.text
    assert "[Picture: Scaffolding comes down. Photograph:\u00a0Tomás Ferreira]" in rendered.text


# --- the command line ---------------------------------------------------------------------------


def test_cli_import_prints_the_summary_and_the_reasons(runner, db_url, tmp_path) -> None:
    config = write_config(tmp_path, db_url)
    result = runner.invoke(cli, ["--config", str(config), "articles", "import", JSONL, "--section", "From the CMS"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{JSONL}: 3 new, 0 updated, 0 unchanged, 7 rejected\n"
    assert "  rejected: line 3: not valid JSON" in result.stderr
    assert "  warning: line 2: no published_at; using the time of import" in result.stderr

    again = runner.invoke(cli, ["--config", str(config), "articles", "import", JSONL, "--section", "From the CMS"])
    assert again.stdout == f"{JSONL}: 0 new, 0 updated, 3 unchanged, 7 rejected\n"
    listed = runner.invoke(cli, ["--config", str(config), "articles", "list"])
    assert listed.stdout.count("From the CMS") == 3


@pytest.mark.parametrize(
    "source", [str(DATA / "not-a-feed.html"), str(DATA / "no-such-feed.xml")], ids=["not a feed", "missing"]
)
def test_cli_import_of_a_bad_source_is_one_line_and_exit_1(runner, db_url, tmp_path, source) -> None:
    config = write_config(tmp_path, db_url)
    result = runner.invoke(cli, ["--config", str(config), "articles", "import", source])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {source}: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_cli_fetch_without_feeds_says_how_to_add_one(runner, db_url, tmp_path) -> None:
    config = write_config(tmp_path, db_url)
    result = runner.invoke(cli, ["--config", str(config), "articles", "fetch"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {config} has no [[feeds]]: add one with a url (see config.example.toml), "
        "or import a file with `newsletter articles import SOURCE`\n"
    )


def test_feed_file_paths_in_the_config_are_relative_to_it(runner, db_url, tmp_path) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "culture.atom").write_bytes(Path(ATOM).read_bytes())
    config = write_config(tmp_path, db_url, feeds=[("feeds/culture.atom", "Arts")])
    result = runner.invoke(cli, ["--config", str(config), "articles", "fetch"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'feeds' / 'culture.atom'}: 2 new, 0 updated, 0 unchanged, 0 rejected\n"


def test_summary_lines() -> None:
    summary = ImportSummary("feed.xml", new=2, updated=1, unchanged=3, rejections=["item 4: no title"])
    assert summary.describe() == "feed.xml: 2 new, 1 updated, 3 unchanged, 1 rejected"
    assert ImportSummary("f", not_modified=True).describe() == (
        "f: unchanged since the last fetch (304 Not Modified); nothing to import"
    )
    failed = ImportSummary("f", error="f: no such file")
    assert not failed.ok and failed.describe() == "f: no such file"


def test_a_field_too_long_is_cut_and_the_import_says_so(store, ctx, tmp_path) -> None:
    source = tmp_path / "long.jsonl"
    title = "word " * 200
    source.write_text(json.dumps({"url": "https://news.example.com/long", "title": title}) + "\n", encoding="utf-8")
    summary = import_source(ctx, str(source))
    assert summary.new == 1
    assert "line 1: the title was cut to 500 characters" in summary.warnings
    with store.session() as session:
        stored_title = session.scalars(select(Article.title)).one()
    assert len(stored_title) <= 500 and stored_title.endswith("…")
