"""``preflight``: check an edition as it will be sent, and say what is wrong before readers see it."""

from __future__ import annotations

import sys
from datetime import date

import click

from newsletter.cli.base import DATE, App, cli, pass_app


@cli.command()
@click.option("--date", "day", type=DATE, help="Edition date (default: the next edition readers get).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding per line, then a summary object.")
@click.option("--no-links", is_flag=True, help="Do not fetch links and images (no network).")
@click.option(
    "--screenshots/--no-screenshots",
    default=None,
    help="Take screenshots with Chromium (default: [preflight] screenshots).",
)
@pass_app
def preflight(app: App, day: date | None, as_json: bool, no_links: bool, screenshots: bool | None) -> None:
    """Check the edition as it will be sent: size, links, images, headers, text part, CSS, spam score.

    Each finding is an error, a warning or a note. Exits 1 when there are errors (what
    would hurt readers or delivery if it went out now), else 0; warnings never fail it.
    Links and images are fetched from this machine ([preflight] sets the limits);
    screenshots at 375 and 600 px go to [preflight] screenshot_dir.

    \b
    Examples:
      newsletter preflight
      newsletter preflight --date 2026-11-24 --no-links
      newsletter preflight --json | jq -c 'select(.severity == "error")'
    """
    from newsletter.preflight import Tools, run_preflight
    from newsletter.preparation import next_edition_day

    config = app.config
    day = day or next_edition_day(app.context)
    report = run_preflight(
        app.signing_context,
        day,
        Tools.real(config.preflight.user_agent),
        check_links=not no_links,
        screenshots=screenshots,
    )
    for line in report.json_lines() if as_json else report.text_lines():
        click.echo(line)
    sys.exit(report.exit_code)
