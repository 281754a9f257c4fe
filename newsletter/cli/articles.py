"""``articles``: getting the newsroom's articles in, and the editors' say over the edition."""

from __future__ import annotations

import sys
from datetime import date, datetime
from typing import Any

import click

from newsletter.articles import upsert_article
from newsletter.cli.base import DATE, App, cli, pass_app
from newsletter.config import PRIORITY_MAX, PRIORITY_MIN
from newsletter.errors import UsageError
from newsletter.store.articles import article_by_guid, find_article, list_articles

# --- articles ---------------------------------------------------------------------------


@cli.group()
def articles() -> None:
    """Add, import and list articles; pin, hide, order and correct stories.

    \b
    Example:
      newsletter articles list --limit 10
      newsletter articles pin 42
    """


def _parse_published(value: str | None, app: App) -> datetime:
    if not value:
        return app.clock.now()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--published {value!r}: expected a time like 2026-11-24T05:30 or 2026-11-24T05:30+00:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=app.config.newsletter.zone)


PRIORITY = click.IntRange(PRIORITY_MIN, PRIORITY_MAX)


@articles.command("add")
@click.option("--title", required=True, help="Headline.")
@click.option("--url", required=True, help="Link to the article on the site.")
@click.option("--standfirst", default="", help="One or two sentences under the headline.")
@click.option(
    "--body", default="", help="The article's text (HTML or plain); the standfirst is taken from it if missing."
)
@click.option("--section", default="", help="Section, e.g. News or Sport.")
@click.option("--author", default="", help="Byline.")
@click.option("--image-url", default="", help="Picture for the story.")
@click.option("--image-alt", default="", help="What the picture shows, for readers who cannot see it.")
@click.option("--image-caption", default="", help="Caption of the picture.")
@click.option("--priority", type=PRIORITY, default=0, show_default=True, help="Higher comes first in its section.")
@click.option("--published", help="Publication time (ISO 8601; no zone means the newsletter's). Default: now.")
@click.option("--guid", help="Stable identifier (default: the URL). Adding the same guid again updates it.")
@pass_app
def articles_add(
    app: App,
    title: str,
    url: str,
    standfirst: str,
    body: str,
    section: str,
    author: str,
    image_url: str,
    image_alt: str,
    image_caption: str,
    priority: int,
    published: str | None,
    guid: str | None,
) -> None:
    """Add an article (or update the one with the same guid).

    Says which edition it is for; an article published too long ago for the next edition is
    added but will not be sent unless pinned (`articles pin ID`).

    \b
    Example:
      newsletter articles add --title "Bridge reopens" --url https://news.example.com/bridge \\
        --standfirst "Traffic flows again from Monday." --section News --published 2026-11-24T05:30
    """
    from newsletter.items import typed_article

    data = typed_article(
        guid=guid or url,
        url=url,
        title=title,
        standfirst=standfirst,
        body=body,
        section=section,
        author=author,
        image_url=image_url,
        image_alt=image_alt,
        image_caption=image_caption,
        priority=priority,
        published_at=_parse_published(published, app),
    )
    with app.store.session() as session:
        outcome = upsert_article(session, data, app.clock)
        article = article_by_guid(session, data.guid)
        assert article is not None
        article_id = article.id
    click.echo(f"{outcome}: #{article_id} {data.title}")
    _say_where(app, article_id)


def _say_where(app: App, article_id: int) -> None:
    """Which edition a new or changed article is for, or a warning when it is for none."""
    from newsletter.preparation import article_destination

    where, ok = article_destination(app.context, article_id)
    click.echo(where if ok else f"warning: {where}", err=not ok)


@articles.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=30, show_default=True, help="How many, newest first.")
@click.option("--hidden", "hidden_only", is_flag=True, help="Only the hidden ones.")
@pass_app
def articles_list(app: App, limit: int, hidden_only: bool) -> None:
    """List the newest articles: id, time, where each stands, priority, section and title.

    The id (or the URL) names an article in `pin`, `hide`, `unhide` and `edit`. STATE is
    "in DATE" (in that edition), "waiting" (for the next one), "lead DATE" (pinned),
    "hidden", or "too old" (published too long before the next edition to be sent).

    \b
    Example:
      newsletter articles list --limit 10
    """
    from newsletter.editorial import describe_state
    from newsletter.preparation import next_window_start

    zone = app.config.newsletter.zone
    start = next_window_start(app.context)
    with app.store.session() as session:
        rows = [
            (str(a.id), f"{a.published_at.astimezone(zone):%Y-%m-%d %H:%M}", describe_state(a, start),
             f"{a.priority:+d}" if a.priority else "", a.section[:14], a.title)
            for a in list_articles(session, limit=limit, hidden_only=hidden_only)
        ]  # fmt: skip
    if not rows:
        click.echo("no hidden articles" if hidden_only else "no articles yet: add one with `newsletter articles add`")
        return
    header = ("ID", "PUBLISHED", "STATE", "PRI", "SECTION", "TITLE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        cells = [row[0].rjust(widths[0])] + [c.ljust(w) for c, w in zip(row[1:5], widths[1:], strict=True)]
        click.echo("  ".join([*cells, row[5]]))


ARTICLE = click.argument("article", metavar="ID_OR_URL")


@articles.command("pin")
@ARTICLE
@click.option("--date", "day", type=DATE, help="The edition it leads (default: the next edition readers get).")
@pass_app
def articles_pin(app: App, article: str, day: date | None) -> None:
    """Make a story the lead of an edition; any story pinned there before is unpinned.

    A story pinned for a later date waits for that edition, even if an earlier one could
    take it; pinning also sends a story older than the usual limit.

    \b
    Example:
      newsletter articles pin 42 --date 2026-11-25
    """
    from newsletter.editorial import pin

    click.echo(pin(app.context, article, day).message)


@articles.command("unpin")
@ARTICLE
@pass_app
def articles_unpin(app: App, article: str) -> None:
    """Let the lead be chosen as usual again (highest priority with a picture, then newest).

    \b
    Example:
      newsletter articles unpin 42
    """
    from newsletter.editorial import unpin

    click.echo(unpin(app.store, app.clock, article).message)


@articles.command("hide")
@ARTICLE
@pass_app
def articles_hide(app: App, article: str) -> None:
    """Keep a story out of every edition not yet sent (a retraction, a legal problem).

    \b
    Example:
      newsletter articles hide https://news.example.com/story-to-retract
    """
    from newsletter.editorial import hide

    click.echo(hide(app.store, app.clock, article).message)


@articles.command("unhide")
@ARTICLE
@pass_app
def articles_unhide(app: App, article: str) -> None:
    """Let a hidden story back into the next edition.

    \b
    Example:
      newsletter articles unhide 42
    """
    from newsletter.editorial import unhide

    click.echo(unhide(app.store, app.clock, article).message)
    _say_where(app, find_article_id(app, article))


def find_article_id(app: App, ref: str) -> int:
    with app.store.session() as session:
        return find_article(session, ref).id


@articles.command("edit")
@ARTICLE
@click.option("--title", help="New headline.")
@click.option("--standfirst", help='New standfirst ("" to clear).')
@click.option("--section", help='New section ("" for none).')
@click.option("--image-url", help='New picture URL ("" for none).')
@click.option("--image-alt", help="What the picture shows.")
@click.option("--image-caption", help="New caption.")
@click.option("--priority", type=PRIORITY, help="Higher comes first in its section.")
@pass_app
def articles_edit(app: App, article: str, **changes: Any) -> None:
    """Correct a story; the feed's next fetch leaves the fields edited here alone.

    \b
    Example:
      newsletter articles edit 42 --title "Council approves £40m plan" --priority 10
    """
    from newsletter.editorial import edit

    given = {name: value for name, value in changes.items() if value is not None}
    if not given:
        raise UsageError("say what to change: --title, --standfirst, --section, --image-url, --image-alt, "
                         "--image-caption or --priority")  # fmt: skip
    click.echo(edit(app.store, app.clock, article, given).message)


@articles.command("import")
@click.argument("source")
@click.option("--section", default="", help="Put every article in this section (default: each item's category).")
@click.option("--priority", type=PRIORITY, default=0, show_default=True, help="Priority of every new item.")
@pass_app
def articles_import(app: App, source: str, section: str, priority: int) -> None:
    """Import articles from a feed URL, an RSS or Atom file, or a JSON Lines file.

    An article already imported (same guid: the feed's id, else its link) is updated,
    never duplicated. Prints what was new, updated, unchanged and rejected (and why); the
    exit code is 1 only when SOURCE cannot be read at all.

    \b
    Example:
      newsletter articles import https://news.example.com/feed.xml --section News
      newsletter articles import cms-export.jsonl
    """
    from newsletter.articles import import_source, iter_details
    from newsletter.config import FeedConfig

    feed = FeedConfig(url=source, section=section.strip(), priority=priority)
    summary = import_source(app.context, source, section=feed.section, feed=feed)
    click.echo(summary.describe())
    for line in iter_details(summary):
        click.echo(line, err=True)


@articles.command("fetch")
@pass_app
def articles_fetch(app: App) -> None:
    """Import every [[feeds]] entry of the configuration, asking each server only for news.

    Each feed is fetched with its last ETag / Last-Modified, so an unchanged feed costs a
    304 and nothing more. A feed that fails is reported and the others still go in; the
    exit code is then 1.

    \b
    Example:
      newsletter articles fetch && newsletter preview
    """
    from newsletter.articles import fetch_feeds, iter_details

    if not app.config.feeds:
        raise UsageError(
            f"{app.config.source} has no [[feeds]]: add one with a url (see config.example.toml), "
            "or import a file with `newsletter articles import SOURCE`"
        )
    summaries = fetch_feeds(app.context)
    for summary in summaries:
        click.echo(summary.describe() if summary.ok else f"error: {summary.error}", err=not summary.ok)
        for line in iter_details(summary):
            click.echo(line, err=True)
    if not all(s.ok for s in summaries):
        sys.exit(1)
