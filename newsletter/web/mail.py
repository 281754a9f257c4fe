"""The mail a sign-up sends (the double opt-in's confirm link, or "you already get it"), via the outbox.

The mail is queued in the sign-up's own transaction, then the request tries to deliver
it at once, so the reader has it within seconds whenever the mail server is up. A
failure is logged for the staff and not shown to the visitor: the page after a sign-up
must read the same whether or not the address was already listed, and whether or not
the server took the mail; the outbox retries it (see ``newsletter.outbox``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy.orm import Session

from newsletter.config import Config
from newsletter.context import Context
from newsletter.errors import NewsletterError
from newsletter.outbox import OutboxReport, deliver_outbox, queue_signup_mail, signup_message
from newsletter.store.models import OutboxKind
from newsletter.subscribers import Signup
from newsletter.transports import Transport

log = logging.getLogger(__name__)


def notice_message(config: Config, email: str, kind: str, now: datetime, **context: object) -> EmailMessage:
    """Text and HTML parts in UTF-8, rendered from ``web/email/{kind}.*`` (see ``outbox.signup_message``)."""
    return signup_message(config, email, kind, now, **context)


def queue_for(session: Session, signup: Signup, now: datetime) -> int:
    """Queue the mail this sign-up calls for, in the sign-up's transaction; returns its outbox id."""
    kind = OutboxKind.CONFIRM if signup.send_confirmation else OutboxKind.ALREADY
    return queue_signup_mail(session, signup.subscriber_id, signup.email, kind, now)


def deliver_now(
    ctx: Context, transport_factory: Callable[[], Transport], mail_id: int, subscriber_id: int
) -> OutboxReport | None:
    """Try to send one queued mail at once; None when even trying failed (it stays queued).

    Whatever happens here is logged, never raised: the visitor's answer does not change.
    """
    try:
        report = deliver_outbox(ctx, transport_factory, limit=1, only=mail_id)
    except (NewsletterError, OSError) as exc:
        log.error("sign-up email to subscriber %d not sent now, left queued: %s", subscriber_id, exc)
        return None
    if not report.sent and report.last_error:
        log.error("sign-up email to subscriber %d not sent now, queued to retry: %s", subscriber_id, report.last_error)
    return report
