"""The mail a sign-up sends: the double opt-in's confirm link, or "you already get it".

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
from newsletter.tokens import CONFIRM, UNSUBSCRIBE
from newsletter.web import Services

log = logging.getLogger(__name__)

SUBJECTS = {
    "confirm": "Please confirm your subscription to {name}",
    "already": "You already get {name}",
}


def notice_message(config: Config, email: str, kind: str, now: datetime, **context: object) -> EmailMessage:
    """Text and HTML parts in UTF-8, rendered from ``web/email/{kind}.*``."""
    context |= {"email": email, "days": config.web.confirm_days}
    msg = EmailMessage()
    msg["Subject"] = check_header("Subject", SUBJECTS[kind].format(name=config.newsletter.name))
    msg["From"] = Address(display_name=config.from_name, addr_spec=config.sender.from_address)
    msg["To"] = check_header("To", email)
    if config.sender.reply_to:
        msg["Reply-To"] = config.sender.reply_to
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(kind, domain=config.sender.domain)
    # RFC 3834: out-of-office robots must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(render_template(f"web/email/{kind}.txt", **context), charset="utf-8")
    msg.add_alternative(render_template(f"web/email/{kind}.html", **context), subtype="html", charset="utf-8")
    return msg


def send_signup_mail(services: Services, signup: Signup) -> bool:
    """Mail the signed confirm link, or tell an active reader they already get it.

    Either way a sign-up costs one mail, so the time the form takes says nothing about
    whether the address was on the list. False (and a log line) if the server refused it.
    """
    config, tokens, now = services.config, services.tokens, services.clock.now()
    if signup.send_confirmation:
        url = f"{config.web.base_url}/confirm/{tokens.make(CONFIRM, signup.subscriber_id, signup.email)}"
        msg = notice_message(config, signup.email, "confirm", now, confirm_url=url)
    else:
        url = f"{config.web.base_url}/unsubscribe/{tokens.make(UNSUBSCRIBE, signup.subscriber_id, signup.email)}"
        msg = notice_message(config, signup.email, "already", now, unsubscribe_url=url)
    transport = services.transport_factory()
    try:
        transport.send(
            config.sender.envelope_from or config.sender.from_address, signup.email, msg.as_bytes(policy=SMTP)
        )
    except DeliveryError as exc:
        log.error("sign-up email to subscriber %d not sent: %s", signup.subscriber_id, exc)
        return False
    finally:
        transport.close()
    return True
