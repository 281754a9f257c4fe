"""Preflight on the way out: the check an edition passes before its first reader gets it.

Who runs it: the scheduler (the daemon and ``send --scheduled``) before each new send of
an edition, and ``send`` by hand unless ``--ignore-preflight``. Never before resuming an
edition that has started going out (some readers have it: holding the rest back would
split the list), nor for the release of a later zone of one going out zone by zone, nor
for ``send --to`` (a test copy is how people look at an edition, not a send).

What it runs: every check that can find an error, over the saved copy that is about to go
out (``run_preflight(stored=True)``): size, headers, the text part, images' markup, CSS,
and the links and images fetched under ``[preflight] link_check_seconds``, so a slow site
delays the morning by that much at most. Not SpamAssassin: its findings are never errors,
so they cannot hold an edition, and scoring costs a second or more. Not screenshots: they
are for people to look at (``newsletter preflight`` and the admin take them).

With ``[preflight] block_on_error`` (the default) an error holds the edition: it stays
made (``ready``) and unsent. The scheduler remembers the hold with a digest of what
readers would get (``fingerprint``); while the edition as it would be made now has the
same digest, later passes leave it held without checking or mailing again. When the
editors change it (hide or fix a story, change a template or the sender), the digest
changes and the next pass checks it again: clean, it goes out; still failing, it is a new
hold. Without ``block_on_error`` errors are logged and the edition goes out. Warnings
never hold an edition.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import date

from newsletter.config import Config
from newsletter.context import Context
from newsletter.errors import PreflightHeldError
from newsletter.preflight.findings import Report, Severity
from newsletter.preflight.runner import run_preflight
from newsletter.preflight.tools import Tools
from newsletter.preparation import plan_for, render_plan
from newsletter.store.holds import HeldFinding, hold_edition, lift_hold
from newsletter.store.models import Edition

log = logging.getLogger("newsletter.preflight")


def override_command(day: date) -> str:
    """The command that sends a held edition as it is."""
    return f"newsletter send --date {day} --ignore-preflight"


def fingerprint(config: Config, subject: str, html: str, text: str) -> str:
    """A digest of what readers would get: the edition's content and the headers the configuration gives it.

    The sender's settings are in it because some errors are theirs (a From domain the DKIM
    key does not sign): fixing the configuration is a change worth checking again.
    """
    sender, dkim = config.sender, config.dkim
    parts = (
        subject,
        html,
        text,
        config.from_name,
        sender.from_address,
        sender.reply_to,
        config.list_id,
        config.bounces.return_address(sender),
        config.web.base_url,
        dkim.domain,
        dkim.selector,
        dkim.algorithm,
    )
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def edition_fingerprint(config: Config, edition: Edition) -> str:
    return fingerprint(config, edition.subject, edition.html, edition.text)


def fingerprint_now(ctx: Context, edition: Edition) -> str | None:
    """The digest of ``edition`` as ``send`` would make it now (same selection, same nonce); None
    when it would now be skipped for want of articles. Nothing is written."""
    config = ctx.config
    plan = plan_for(ctx, edition.date).plan
    if plan.is_empty and not config.newsletter.send_when_empty:
        return None
    rendered = render_plan(config, plan, edition.nonce)
    return fingerprint(config, plan.subject, rendered.html, rendered.text)


def check_before_send(ctx: Context, day: date, tools: Tools) -> Report:
    """Preflight as a sender runs it: the saved copy, links fetched, no spam score, no screenshots."""
    return run_preflight(ctx, day, tools, check_links=True, screenshots=False, stored=True, spam_score=False)


def kept_findings(report: Report) -> list[HeldFinding]:
    """The errors and warnings of a report, as a hold keeps them (notes are left to the full report)."""
    return [
        HeldFinding(f.severity.value, f.check, f.message)
        for f in report.ordered()
        if f.severity in (Severity.ERROR, Severity.WARNING)
    ]


class Gate:
    """What ``send_edition`` calls with the edition as made: preflight, then hold it or let it go.

    ``remember`` records a hold in the store (the scheduler's, which must not check and
    mail again every few minutes); a person at the keyboard sees the findings instead.
    After a call, ``report`` is what preflight said and ``new_hold`` whether this call
    started a hold the staff have not been told about.
    """

    def __init__(self, ctx: Context, tools: Tools, *, remember: bool) -> None:
        self.ctx = ctx
        self.tools = tools
        self.remember = remember
        self.report: Report | None = None
        self.new_hold = False

    def __call__(self, edition: Edition) -> None:
        day = edition.date
        report = check_before_send(self.ctx, day, self.tools)
        self.report = report
        log.info(
            "preflight of the edition of %s: %d errors, %d warnings in %.1f s",
            day,
            report.count(Severity.ERROR),
            report.count(Severity.WARNING),
            report.seconds,
        )
        if report.ok:
            with self.ctx.store.session() as session:
                lifted = lift_hold(session, edition.id)
            if lifted:
                log.info("the edition of %s passes preflight now: it is no longer held", day)
            return
        if not self.ctx.config.preflight.block_on_error:
            for found in report.errors:
                log.warning(
                    "the edition of %s goes out with a preflight error ([preflight] block_on_error = false): %s: %s",
                    day,
                    found.check,
                    found.message,
                )
            return
        if self.remember:
            digest = edition_fingerprint(self.ctx.config, edition)
            with self.ctx.store.session() as session:
                self.new_hold = hold_edition(session, edition.id, digest, kept_findings(report), self.ctx.clock.now())
        raise PreflightHeldError(day, tuple((f.check, f.message) for f in report.errors))


def send_gate(ctx: Context, *, ignore: bool) -> Gate | None:
    """The gate for ``send`` by hand: the same check as the scheduler's, unless the person said
    ``--ignore-preflight``; nothing is remembered (they see the findings)."""
    if ignore:
        return None
    return Gate(ctx, Tools.real(ctx.config.preflight.user_agent), remember=False)


__all__ = [
    "Gate",
    "check_before_send",
    "edition_fingerprint",
    "fingerprint",
    "fingerprint_now",
    "kept_findings",
    "override_command",
    "send_gate",
]
