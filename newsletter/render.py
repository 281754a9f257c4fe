"""Templates to finished HTML and text, with the CSS inlined, once per edition.

Inlining with premailer costs tens of milliseconds, so it must never run per reader. The
email versions are therefore rendered once with *markers* where personal parts go (the
greeting and the unsubscribe link); ``message.py`` swaps the markers for each reader's
values in the already-encoded message. The markers are plain letters and digits with a
random per-edition nonce, so no escaping, inlining or encoding step can alter them and no
article text can contain them by accident.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path
from typing import Any

import jinja2
from premailer import Premailer

from newsletter.config import DesignConfig
from newsletter.editions import EditionPlan, long_date, since_words
from newsletter.errors import RenderError
from newsletter.tracking import LinkPolicy, track

log = logging.getLogger(__name__)

GMAIL_CLIP_BYTES = 100 * 1024
PACKAGE_TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class Markers:
    """The placeholder strings of one edition's personal parts."""

    greeting: str
    unsubscribe_url: str
    click: str = ""  # the reader's code in tracked links (tracking.py)

    @classmethod
    def for_nonce(cls, nonce: str) -> Markers:
        if not nonce.isalnum():
            raise ValueError("nonce must be letters and digits only")
        return cls(greeting=f"NLGREET{nonce}X", unsubscribe_url=f"NLUNSUB{nonce}X", click=f"NLCLICK{nonce}X")


@dataclass(frozen=True)
class Branding:
    """The newsletter-wide text the templates print."""

    name: str
    publication: str
    address: str = ""


@dataclass(frozen=True)
class Links:
    view_in_browser: str
    subscribe: str


@dataclass(frozen=True)
class RenderedEdition:
    """The edition's HTML (CSS inlined) and text, with markers where the reader's parts go."""

    html: str
    text: str
    web_html: str
    markers: Markers
    links: tuple[str, ...] = ()  # tracked link targets, by position from 1

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))

    @property
    def too_big_for_gmail(self) -> bool:
        return self.html_bytes > GMAIL_CLIP_BYTES


def build_environment(override_dir: str | Path | None = None) -> jinja2.Environment:
    """A Jinja2 environment over the built-in templates, optionally overridden from a directory."""
    loaders: list[jinja2.BaseLoader] = []
    if override_dir:
        path = Path(override_dir)
        if not path.is_dir():
            raise RenderError(f"template directory {path} does not exist")
        loaders.append(jinja2.FileSystemLoader(path))
    loaders.append(jinja2.FileSystemLoader(PACKAGE_TEMPLATES))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "xml"), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def inline_css(html: str) -> str:
    """Move stylesheet rules into style attributes; media queries stay behind in <head>."""
    try:
        return Premailer(
            html,
            keep_style_tags=False,
            strip_important=False,
            remove_classes=False,
            disable_validation=True,
            allow_network=False,
            allow_loading_external_files=False,
            cssutils_logging_level=logging.CRITICAL,
            disable_link_rewrites=True,
            # CSS "height: auto" would become height="auto", which is not a valid attribute value;
            # widths stay, as Outlook needs them on images.
            disable_basic_attributes=["height"],
        ).transform()
    except Exception as exc:
        raise RenderError(f"CSS inlining failed: {exc}") from exc


def _context(
    plan: EditionPlan, branding: Branding, links: Links, reader: dict[str, str] | None, design: DesignConfig
) -> dict[str, Any]:
    stories = plan.stories
    preheader = next((s.standfirst for s in stories if s.standfirst), "")
    issue_number = next((s.issue_number for s in stories if s.issue_number), "")
    count = plan.story_count
    since = since_words(plan.date, plan.previous)
    source = f"from {branding.publication}" + (f" {since}" if since else "")
    summary = (
        (f"Nothing new has been published {since}." if since else f"Nothing new from {branding.publication} yet.")
        if count == 0
        else f"Here is the one story {source}."
        if count == 1
        else f"Here are {count} stories {source}."
    )
    return {
        "newsletter": branding,
        "edition": {
            "date": plan.date,
            "long_date": long_date(plan.date),
            "subject": plan.subject,
            "lead": plan.lead,
            "sections": plan.sections,
            "story_count": plan.story_count,
            "preheader": preheader[:150],
            "issue_number": issue_number,
            "summary": summary,
        },
        "links": links,
        "reader": reader,
        "design": design,
    }


def render_edition(
    plan: EditionPlan,
    branding: Branding,
    links: Links,
    nonce: str,
    env: jinja2.Environment,
    design: DesignConfig | None = None,
    links_policy: LinkPolicy | None = None,
) -> RenderedEdition:
    """Render the email (with markers) and the public web version of one edition.

    With ``links_policy`` the email's links to the stories and the site are tracked (and
    get UTM parameters, if it says so); the web version never is.
    """
    markers = Markers.for_nonce(nonce)
    reader = {"greeting": markers.greeting, "unsubscribe_url": markers.unsubscribe_url}
    look = design or DesignConfig()
    try:
        html_template = env.get_template("email/edition.html")
        text_template = env.get_template("email/edition.txt")
        html = inline_css(html_template.render(_context(plan, branding, links, reader, look)))
        web_html = inline_css(html_template.render(_context(plan, branding, links, None, look)))
        text = text_template.render(_context(plan, branding, links, reader, look))
    except jinja2.TemplateError as exc:
        raise RenderError(f"template error: {exc}") from exc
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # An override template's own expression failed ({{ 1 // 0 }}, a filter given the wrong type).
        raise RenderError(f"template error: {exc.__class__.__name__}: {exc}") from exc
    for marker in (markers.greeting, markers.unsubscribe_url):
        if marker not in html or marker not in text:
            raise RenderError(f"the edition templates must use reader.greeting and reader.unsubscribe_url ({marker})")
    text = _tidy_text(text)
    tracked_links: tuple[str, ...] = ()
    if links_policy is not None:
        tracked = track(html, text, markers.click, links_policy, personal=(markers.unsubscribe_url,))
        html, text, tracked_links = tracked.html, tracked.text, tracked.links
    rendered = RenderedEdition(html=html, text=text, web_html=web_html, markers=markers, links=tracked_links)
    if rendered.too_big_for_gmail:
        log.warning(
            "edition %s: HTML part is %d KB; Gmail clips messages over about 102 KB, "
            "hiding the footer and its unsubscribe link",
            plan.date,
            rendered.html_bytes // 1024,
        )
    return rendered


def _tidy_text(text: str) -> str:
    """Trailing spaces and runs of blank lines come from template logic, not from the writer."""
    lines = [line.rstrip() for line in text.splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy).strip() + "\n"


def fill_markers(text: str, markers: Markers, *, greeting: str, unsubscribe_url: str, escape: bool = True) -> str:
    """One reader's view of rendered HTML or text, for previews (sending works on encoded bytes)."""
    quote = html_escape if escape else str
    return text.replace(markers.greeting, quote(greeting)).replace(markers.unsubscribe_url, quote(unsubscribe_url))
