"""``newsletter embed``: the sign-up form (or link) to paste into the CMS's article template.

It only prints: the snippet is made from ``[web] base_url`` and the newsletter's name,
so it needs the configuration but not the database. Whether the form is accepted is the
web app's decision, from ``[web] embed_origins``; the note on stderr says when that list
is empty, because the form would then be refused on every other site.
"""

from __future__ import annotations

import click

from newsletter.cli.base import App, cli, pass_app
from newsletter.embed import DEFAULT_PREFIX, Snippet, form_html, link_html


@cli.command()
@click.option(
    "--source-prefix",
    "prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="The label sign-ups from it are recorded under, before the page's path: article:/news/bridge.",
)
@click.option(
    "--path",
    default="",
    metavar="TEMPLATE",
    help="Your CMS's template code that prints the page's path, written after the prefix as it is "
    "(default: none; the path is then taken from the browser's Referer).",
)
@click.option("--link-only", is_flag=True, help="Print only a link to the sign-up page, not the form.")
@pass_app
def embed(app: App, prefix: str, path: str, link_only: bool) -> None:
    """Print a sign-up form for article pages: plain HTML that posts to {base_url}/subscribe.

    No script, and nothing loaded from elsewhere: an email field, an optional name, a
    hidden honeypot and a hidden source field, so each sign-up is recorded as
    article:<path of the page it came from>. The web app accepts the form only from the
    origins in [web] embed_origins (e.g. ["https://news.example.com"]); --link-only
    prints a link to the sign-up page instead, which needs no such setting.

    \b
    Example:
      newsletter embed > signup-form.html
      newsletter embed --path '{{ page.url_path }}'       # the CMS writes the path in
      newsletter embed --link-only --source-prefix sidebar
    """
    config = app.config
    snippet = Snippet(
        base_url=config.web.base_url,
        name=config.newsletter.name,
        publication=config.newsletter.publication,
        prefix=prefix,
        path=path,
    )
    click.echo(link_html(snippet) if link_only else form_html(snippet), nl=False)
    if not link_only and not config.web.embed_origins:
        click.echo(
            "note: [web] embed_origins is empty, so the sign-up page refuses this form wherever it is pasted; "
            'list the article pages\' origin there, e.g. embed_origins = ["https://news.example.com"]',
            err=True,
        )
