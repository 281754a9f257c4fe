"""Preflight of one edition: build the message a reader would get, run every check, report.

The edition is the one readers will get: the stored copy once it has started going out
(its content is fixed), else what ``send`` would make from the articles now, rendered with
the same functions and not saved (``send`` makes it again at its send time, from the same
selection). The message is then built by the sending path itself, ``compile_template``
and ``personaliser``, for a sample reader, DKIM signature and all; every check reads that
message's bytes, or the plain data taken from them.

The world outside (web, commands, clock) comes in through ``Tools``; the checks themselves
are pure functions in their own modules.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from newsletter import routes
from newsletter.codes import CLICK, ReaderCodes
from newsletter.config import Config
from newsletter.context import Context
from newsletter.errors import MessageError, RenderError
from newsletter.preflight import css, headers, images, links, size, spam, textpart
from newsletter.preflight.fetch import MAX_IMAGE_BYTES, canonical, fetch_all
from newsletter.preflight.findings import Report, counted, error, info
from newsletter.preflight.htmlscan import scan_html
from newsletter.preflight.screenshots import take_screenshots
from newsletter.preflight.tools import Tools
from newsletter.preparation import edition_as_it_stands, links_for
from newsletter.publish import compile_template, personaliser
from newsletter.store.deliveries import Work
from newsletter.store.models import Edition, EditionStatus
from newsletter.tracking import untrack

# The reader the sample copy is addressed to: never sent, and number 0, like a test copy.
SAMPLE_READER = Work(delivery_id=0, subscriber_id=0, email="reader@example.org", name="Ana Reader", attempts=0)


@dataclass(frozen=True)
class Candidate:
    """The edition to check, with what it takes to read its tracked links back."""

    edition: Edition
    links: tuple[str, ...]  # tracked link targets by position, from 1
    headlines: tuple[str, ...]
    origin: str  # in words, for the report's heading
    public: bool  # gone out: its web page exists


def candidate_for(ctx: Context, day: date, *, stored: bool = False) -> Candidate | None:
    """The edition readers will get for ``day``; None when it would be skipped (no articles).

    ``stored`` checks a made edition's saved copy as it is, instead of making it again from
    the articles: for a sender that has just made the edition and is about to send it.
    """
    standing = edition_as_it_stands(ctx, day, made_is_fixed=stored)
    row = standing.row
    if standing.selection is None:
        assert row is not None
        made = row.status == EditionStatus.READY
        state = "made" if made else row.status.value
        return Candidate(row, standing.links, standing.titles, f"stored copy, {state}", not made)
    if standing.selection.plan.is_empty and not ctx.config.newsletter.send_when_empty:
        return None
    state = "made, and made again at send time" if row is not None else "not made yet"
    origin = f"as send would make it now; {state}"
    return Candidate(standing.edition, standing.links, standing.titles, origin, False)


def sample_message(ctx: Context, candidate: Candidate) -> bytes:
    """The exact bytes the sample reader would be sent, through the sending path's own functions."""
    edition = candidate.edition
    template = compile_template(ctx.config, edition)
    personal = personaliser(ctx.config, edition, template, ctx.tokens)(SAMPLE_READER, ctx.clock.now())
    data = personal.data
    return data if isinstance(data, bytes) else b"".join(data)


def _parts(raw: bytes) -> tuple[str, str]:
    """The HTML and plain-text parts, decoded."""
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    html = html_part.get_content() if isinstance(html_part, EmailMessage) else ""
    text = text_part.get_content() if isinstance(text_part, EmailMessage) else ""
    return html, text


def run_preflight(
    ctx: Context,
    day: date,
    tools: Tools,
    *,
    check_links: bool = True,
    screenshots: bool | None = None,
    stored: bool = False,
    spam_score: bool = True,
) -> Report:
    """Check the edition for ``day`` as it will be sent. ``screenshots`` None follows the config;
    ``stored`` checks a made edition's saved copy (see ``candidate_for``); ``spam_score`` False
    skips SpamAssassin (see ``check_message``)."""
    started = tools.monotonic()
    config = ctx.config
    try:
        candidate = candidate_for(ctx, day, stored=stored)
        if candidate is None:
            report = Report(day, "", "not made yet")
            report.add([info("edition", f"no articles for {day}: the edition would be skipped, nothing to check")])
            return report
        raw = sample_message(ctx, candidate)
    except (RenderError, MessageError) as exc:
        report = Report(day, "", "cannot be built")
        report.add([error("edition", f"the edition cannot be made into a message: {exc}")])
        return report
    report = check_message(
        config,
        candidate,
        raw,
        tools,
        check_links=check_links,
        screenshots=config.preflight.screenshots if screenshots is None else screenshots,
        spam_score=spam_score,
        started=started,
    )
    return report


def check_message(
    config: Config,
    candidate: Candidate,
    raw: bytes,
    tools: Tools,
    *,
    check_links: bool = True,
    screenshots: bool = True,
    spam_score: bool = True,
    started: float | None = None,
) -> Report:
    """Every check over one built message. ``spam_score`` False skips SpamAssassin (a second
    or more, for findings that are never errors: a sender about to send has no use for it)."""
    started = tools.monotonic() if started is None else started
    edition = candidate.edition
    settings = config.preflight
    base = config.web.base_url.rstrip("/")
    report = Report(edition.date, edition.subject, candidate.origin)
    html, text = _parts(raw)
    scan = scan_html(html)
    code = ReaderCodes(config.require_secret_key(), CLICK).code(edition.id or 0, SAMPLE_READER.subscriber_id)

    def as_read(url: str) -> str:
        return untrack(url, code, base, candidate.links, escape=False)

    html_links = [as_read(u) for u in scan.links]
    plain = as_read(text)
    skipped = {_unsubscribe_url(raw)}
    if not candidate.public:  # its web page appears when it goes out: a 404 now is no fault
        skipped.add(links_for(config, edition.date).view_in_browser)
    not_fetched = {canonical(u) for u in skipped}
    web = [u for u in links.web_links([*html_links, *textpart.text_links(plain)]) if canonical(u) not in not_fetched]
    pictures = images.image_urls(scan.images, skip=[routes.prefix(base, routes.OPEN)])
    placeholders = [u for u in dict.fromkeys([*web, *pictures]) if links.on_example_domain(u)]
    # Example domains are never fetched: no reader can reach them, and a test asks nothing of the network.
    to_fetch = [u for u in web if u not in placeholders]
    pictures_to_fetch = [u for u in pictures if u not in placeholders]

    # SpamAssassin and Chromium run while the links are fetched: each mostly waits on its own.
    background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="preflight")
    spam_check = (
        background.submit(spam.check_spam, raw, tools.run, tools.which, settings.spam_threshold) if spam_score else None
    )
    folder = Path(settings.screenshot_dir) / edition.date.isoformat()
    shooting = background.submit(take_screenshots, html, folder, tools.which, tools.run) if screenshots else None
    try:
        report.add(size.check_size(len(html.encode("utf-8")), len(raw)))
        report.add(headers.check_headers(raw, config.dkim.domain if config.dkim.enabled else ""))
        report.add(textpart.check_text_part(candidate.headlines, html_links, plain))
        report.add(links.malformed(web))
        report.add(links.insecure(web))
        report.add(links.example_links(placeholders))
        report.add(images.markup_findings(scan.images))
        if check_links:
            targets = links.fetchable(to_fetch)
            results = fetch_all(
                list(dict.fromkeys([*targets, *pictures_to_fetch])),
                tools.fetcher,
                timeout=settings.link_timeout_seconds,
                max_redirects=settings.max_redirects,
                concurrency=settings.link_concurrency,
                deadline_seconds=settings.link_check_seconds,
                read_limits={p: MAX_IMAGE_BYTES + 1 for p in pictures_to_fetch},
                monotonic=tools.monotonic,
            )
            if links.network_down(results):
                report.add([links.unreachable_finding(results)])
            else:
                report.add(links.link_findings(targets, results, settings.link_timeout_seconds))
                report.add(images.fetch_findings(pictures_to_fetch, results))
        else:
            unfetched = f"{counted(len(to_fetch), 'link')} and {counted(len(pictures_to_fetch), 'image')}"
            report.add([info(links.CHECK, f"{unfetched} not fetched (--no-links)")])
        report.add(css.check_css(scan))
        if spam_check is not None:
            report.add(spam_check.result())
        else:
            report.add([info(spam.CHECK, "not scored before a send (a spam score never holds an edition)")])
        if shooting is not None:
            shot_findings, report.screenshots = shooting.result()
            report.add(shot_findings)
    finally:
        background.shutdown(wait=True)
    report.seconds = tools.monotonic() - started
    return report


def _unsubscribe_url(raw: bytes) -> str:
    """The sample reader's own https unsubscribe link: personal, so never fetched."""
    for name, value in headers.header_fields(raw):
        if name.lower() == "list-unsubscribe":
            for item in value.split(","):
                uri = item.strip().strip("<>")
                if uri.lower().startswith("https://") or uri.lower().startswith("http://"):
                    return uri
    return ""


__all__ = ["Candidate", "candidate_for", "check_message", "run_preflight", "sample_message"]
