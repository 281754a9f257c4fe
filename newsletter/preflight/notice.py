"""Telling the staff that preflight holds an edition: one plain-text mail per hold.

The mail goes to ``[preflight] notify`` through the project's single-message transport
(the one test copies and sign-up mails use), from the newsletter's own address and signed
like them. It says what is wrong, the command that sends the edition anyway, and how
fixing it works. ``tell_staff`` gives it once per hold: the claim in the store makes one
process the teller, and a mail server that cannot be reached puts the notice back for the
next pass rather than losing it, or stopping anything.
"""

from __future__ import annotations

import contextlib
import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

from newsletter.config import Config
from newsletter.context import Context
from newsletter.dkim import load_signer
from newsletter.editions import counted
from newsletter.errors import DeliveryError, DkimError, MessageError, PermanentDeliveryError
from newsletter.message import check_header
from newsletter.preflight.gate import override_command
from newsletter.store.holds import Hold, claim_hold_notice, hold_of, release_hold_notice
from newsletter.transports import Transport

log = logging.getLogger("newsletter.preflight")


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M %Z}"


def notice_text(config: Config, hold: Hold, subject: str, grace_ends: datetime | None) -> str:
    """The mail's body: the errors, the warnings, the override and how a fix goes out."""
    zone = config.newsletter.zone
    day = hold.day
    errors, warnings = hold.errors, hold.warnings
    until = (
        f"until the grace period ends at {_local(grace_ends, zone)}; after that, only a send by hand sends it"
        if grace_ends is not None
        else "within the grace period"
    )
    lines = [
        _fill(
            f"Preflight found {counted(len(errors), 'error')} in the edition of {day}, and the scheduler is "
            "holding it: it has gone to no reader."
        ),
        "",
        f"Subject: {subject}",
        "",
        "Errors:",
        *(f"  - {f.check}: {f.message}" for f in errors),
        "",
    ]
    if warnings:
        checks = ", ".join(dict.fromkeys(f.check for f in warnings))
        lines += [_fill(f"And {counted(len(warnings), 'warning')} ({checks}); warnings never hold an edition."), ""]
    lines += [
        "To send it as it is:",
        "",
        f"    {override_command(day)}",
        "",
        _fill(
            "Or fix it: hide or correct the story at fault (on the admin's next-edition page, or with "
            "`newsletter articles`), or the template or setting behind the error. The scheduler sees on its "
            "next pass that the edition has changed, checks it again and sends it if preflight finds no "
            f"errors, {until}."
        ),
        "",
        f"The whole report, warnings and all: newsletter preflight --date {day}",
        "",
        _fill(f"Held at {_local(hold.held_at, zone)}. This is the only mail about this version of the edition."),
    ]
    return "\n".join(lines) + "\n"


def _fill(paragraph: str) -> str:
    """A paragraph wrapped for a plain-text mail (findings and commands stay on their own lines)."""
    return textwrap.fill(paragraph, width=72, break_long_words=False, break_on_hyphens=False)


def notice_message(
    config: Config, hold: Hold, subject: str, grace_ends: datetime | None, now: datetime
) -> EmailMessage:
    """The notice as a message to every address of ``[preflight] notify``."""
    errors = counted(len(hold.errors), "error")
    msg = EmailMessage()
    msg["Subject"] = check_header("Subject", f"Held: the edition of {hold.day} has {errors} (preflight)")
    msg["From"] = Address(display_name=config.from_name, addr_spec=config.sender.from_address)
    msg["To"] = ", ".join(check_header("To", a) for a in config.preflight.notify)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("preflight", domain=config.sender.domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
    msg.set_content(notice_text(config, hold, subject, grace_ends), charset="utf-8")
    return msg


@dataclass
class Notice:
    """What telling the staff about one hold came to."""

    told: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "address: reply", refused for good
    error: str = ""  # why nobody could be told
    due: bool = False  # there was a notice to give, and this process gave (or tried) it
    again: bool = False  # not given for want of a mail server: the next pass tries again

    def summary(self, day: object) -> str:
        """One line for the log; "" when there was nothing to tell."""
        if not self.due:
            return ""
        if self.told:
            line = f"the staff were told that the edition of {day} is held: mailed {', '.join(self.told)}"
            return line + (f"; refused: {'; '.join(self.refused)}" if self.refused else "")
        later = "; the next pass tries again" if self.again else ""
        return f"the staff could not be told that the edition of {day} is held: {self.error}{later}"


def tell_staff(
    ctx: Context,
    edition_id: int,
    subject: str,
    transport_factory: Callable[[], Transport],
    *,
    grace_ends: datetime | None = None,
) -> Notice:
    """Mail the hold's findings to ``[preflight] notify`` unless someone has already; never raises
    for the mail server. Nobody accepting the mail (the server down) puts the notice back for
    the next pass; addresses refused for good do not (check ``[preflight] notify``)."""
    config, store = ctx.config, ctx.store
    notice = Notice()
    staff = config.preflight.notify
    with store.session() as session:
        hold = hold_of(session, edition_id)
    if not staff or hold is None or hold.notified_at is not None:
        return notice
    now = ctx.clock.now()
    with store.session() as session:
        if not claim_hold_notice(session, edition_id, hold.fingerprint, now):
            return notice
    notice.due = True
    try:
        data = notice_message(config, hold, subject, grace_ends, now).as_bytes(policy=SMTP)
        signer = load_signer(config.dkim)
        if signer is not None:
            data = signer.sign([data], now) + data
    except (MessageError, DkimError) as exc:  # no retry makes it buildable: say so once
        notice.error = f"the notice cannot be made: {exc}"
        return notice
    mail_from = config.bounces.return_address(config.sender)
    transport: Transport | None = None
    try:
        transport = transport_factory()
        for address in staff:
            try:
                transport.send(mail_from, address, data)
            except PermanentDeliveryError as exc:
                notice.refused.append(f"{address}: {exc}")
            else:
                notice.told.append(address)
    except (DeliveryError, OSError) as exc:
        notice.error = str(exc) or type(exc).__name__
    finally:
        if transport is not None:
            with contextlib.suppress(DeliveryError, OSError):
                transport.close()
    if not notice.told and notice.error:  # the server, not the addresses: worth another try
        notice.again = True
        with store.session() as session:
            release_hold_notice(session, edition_id, hold.fingerprint, notice.error)
    elif not notice.told:
        notice.error = "every address refused it: " + "; ".join(notice.refused)
    return notice


__all__ = ["Notice", "notice_message", "notice_text", "tell_staff"]
