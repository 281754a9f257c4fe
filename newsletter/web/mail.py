"""The confirmation email of the double opt-in: one small multipart message, sent at once.

It goes through the same single-message transport as test copies (SMTP or the Maildir,
per configuration). A failure is logged for the staff and not shown to the visitor: the
page after a sign-up must read the same whether or not the address was already listed.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from flask import render_template

from newsletter.config import Config
from newsletter.errors import DeliveryError
from newsletter.message import check_header
from newsletter.subscribers import Signup
from newsletter.tokens import CONFIRM
from newsletter.web import Services

log = logging.getLogger(__name__)


def confirmation_message(config: Config, email: str, confirm_url: str, now: datetime) -> EmailMessage:
    """Text and HTML parts in UTF-8, rendered from ``web/email/confirm.*``."""
    context = {"confirm_url": confirm_url, "days": config.web.confirm_days, "email": email}
    msg = EmailMessage()
    msg["Subject"] = check_header("Subject", f"Please confirm your subscription to {config.newsletter.name}")
    msg["From"] = Address(display_name=config.from_name, addr_spec=config.sender.from_address)
    msg["To"] = check_header("To", email)
    if config.sender.reply_to:
        msg["Reply-To"] = config.sender.reply_to
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("confirm", domain=config.sender.domain)
    # RFC 3834: out-of-office robots must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(render_template("web/email/confirm.txt", **context), charset="utf-8")
    msg.add_alternative(render_template("web/email/confirm.html", **context), subtype="html", charset="utf-8")
    return msg


def send_confirmation(services: Services, signup: Signup) -> bool:
    """Mail the signed confirm link; False (and a log line) if the mail server refused it."""
    config = services.config
    token = services.tokens.make(CONFIRM, signup.subscriber_id, signup.email)
    msg = confirmation_message(config, signup.email, f"{config.web.base_url}/confirm/{token}", services.clock.now())
    transport = services.transport_factory()
    try:
        transport.send(
            config.sender.envelope_from or config.sender.from_address, signup.email, msg.as_bytes(policy=SMTP)
        )
    except DeliveryError as exc:
        log.error("confirmation email to subscriber %d not sent: %s", signup.subscriber_id, exc)
        return False
    finally:
        transport.close()
    return True
