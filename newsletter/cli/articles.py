"""``articles add / list / import / fetch``: getting the newsroom's articles in."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from newsletter.articles import ArticleInput, late_for, upsert_article
from newsletter.cli.base import App, cli, pass_app
from newsletter.errors import UsageError
from newsletter.store.store import list_articles

# --- articles ---------------------------------------------------------------------------


@cli.group()
def articles() -> None:
    """Add, import and list articles.

    \b
    Example:
      newsletter articles list --limit 10
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


@articles.command("add")
@click.option("--title", required=True, help="Headline.")
@click.option("--url", required=True, help="Link to the article on the site.")
@click.option("--standfirst", default="", help="One or two sentences under the headline.")
@click.option("--section", default="", help="Section, e.g. News or Sport.")
@click.option("--author", default="", help="Byline.")
@click.option("--image-url", default="", help="Picture for the lead story.")
@click.option("--image-caption", default="", help="Caption of the picture.")
@click.option("--published", help="Publication time (ISO 8601; no zone means the newsletter's). Default: now.")
@click.option("--guid", help="Stable identifier (default: the URL). Adding the same guid again updates it.")
@pass_app
def articles_add(
    app: App,
    title: str,
    url: str,
    standfirst: str,
    section: str,
    author: str,
    image_url: str,
    image_caption: str,
    published: str | None,
    guid: str | None,
) -> None:
    """Add an article (or update the one with the same guid).

    \b
    Example:
      newsletter articles add --title "Bridge reopens" --url https://news.example.com/bridge \\
        --standfirst "Traffic flows again from Monday." --section News --published 2026-11-24T05:30
    """
    data = ArticleInput(
        guid=guid or url,
        url=url,
        title=title.strip(),
        standfirst=standfirst.strip(),
        section=section.strip(),
        author=author.strip(),
        image_url=image_url,
        image_caption=image_caption.strip(),
        published_at=_parse_published(published, app),
    )
    with app.store.session() as session:
        outcome = upsert_article(session, data, app.clock)
        late = late_for(session, data.published_at) if outcome == "new" else ""
    click.echo(f"{outcome}: {data.title}")
    if late:
        click.echo(f"warning: {late}", err=True)


@articles.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=30, show_default=True, help="How many, newest first.")
@pass_app
def articles_list(app: App, limit: int) -> None:
    """List the newest articles, with the edition each went into.

    \b
    Example:
      newsletter articles list --limit 10
    """
    zone = app.config.newsletter.zone
    with app.store.session() as session:
        rows = list_articles(session, limit=limit)
        lines = [
            f"{a.published_at.astimezone(zone):%Y-%m-%d %H:%M}  "
            f"{(a.edition.date.isoformat() if a.edition else 'unsent'):<10}  {a.section[:12]:<12}  {a.title}"
            for a in rows
        ]
    if not lines:
        click.echo("no articles yet: add one with `newsletter articles add`")
    for line in lines:
        click.echo(line)


@articles.command("import")
@click.argument("source")
@click.option("--section", default="", help="Put every article in this section (default: each item's category).")
@pass_app
def articles_import(app: App, source: str, section: str) -> None:
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

    summary = import_source(source, app.config, app.store, app.clock, section=section.strip())
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
    summaries = fetch_feeds(app.config, app.store, app.clock)
    for summary in summaries:
        click.echo(summary.describe() if summary.ok else f"error: {summary.error}", err=not summary.ok)
        for line in iter_details(summary):
            click.echo(line, err=True)
    if not all(s.ok for s in summaries):
        sys.exit(1)
