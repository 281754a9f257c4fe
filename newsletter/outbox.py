"""Sign-up mails through a durable outbox: queued with the sign-up, sent, and retried until sent.

A confirmation link that is lost because the mail server was down for a minute is a
reader lost, so the mail is written in the same transaction as the sign-up itself and
only then sent. A failed attempt stays queued with its error and the time of the next
one (a minute, doubling to an hour); a mail still failing two days after it was asked
for is given up and recorded as such, never dropped in silence, and so is one nobody
delivered for as long as a confirm link lasts (``[web] confirm_days``).

The message is rebuilt when it leaves, from the reader and the kind of mail: the signed
link in it is made at that moment, so no secret waits in the table and the link's
lifetime starts when the reader can first see it. A mail that no longer applies (the
reader confirmed, or left, meanwhile) is skipped rather than sent.

``deliver_outbox`` is the one way out: the web request tries its own mail at once, and
the scheduler's retry tick, ``send --scheduled`` and ``subscribers outbox --send`` deliver
the rest. Each mail is claimed under a lease first, so however many of them run at the
same moment, each mail goes once.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import jinja2
from sqlalchemy.orm import Session

from newsletter import routes
from newsletter.config import Config
from newsletter.context import Context
from newsletter.dkim import load_signer
from newsletter.errors import (
    DeliveryError,
    MessageError,
    PermanentDeliveryError,
    RenderError,
    SystemicDeliveryError,
)
from newsletter.message import check_header
from newsletter.render import PACKAGE_TEMPLATES
from newsletter.store import Store
from newsletter.store import outbox as queue
from newsletter.store.database import worker_identity
from newsletter.store.models import OutboxKind, SubscriberStatus
from newsletter.tokens import CONFIRM, UNSUBSCRIBE, Tokens
from newsletter.transports import Transport

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=48)
MIN_LEASE = timedelta(minutes=10)

SUBJECTS = {
    OutboxKind.CONFIRM: "Please confirm your subscription to {name}",
    OutboxKind.ALREADY: "You already get {name}",
}


# --- policy (pure) ----------------------------------------------------------------------------


def retry_at(attempts: int, queued_at: datetime, now: datetime) -> datetime | None:
    """When to try again after the ``attempts``-th failed attempt, or None to give up.

    A minute after the first failure, doubling up to an hour; nothing is retried once
    ``GIVE_UP_AFTER`` has passed since the mail was (last) asked for.
    """
    if now - queued_at >= GIVE_UP_AFTER:
        return None
    delay = FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 12)
    return now + min(delay, LONGEST_RETRY)


def no_longer_needed(kind: OutboxKind, status: SubscriberStatus) -> str:
    """Why a queued mail should not go out after all, given its reader's status now; "" if it should."""
    if kind == OutboxKind.CONFIRM and status == SubscriberStatus.ACTIVE:
        return "not sent: the reader is active already"
    if kind == OutboxKind.ALREADY and status != SubscriberStatus.ACTIVE:
        return f"not sent: the reader is {status.value} now"
    return ""


def _stops_the_pass(exc: DeliveryError) -> bool:
    """A server that cannot be reached or logged into will not take the next mail either."""
    return isinstance(exc, SystemicDeliveryError) or exc.stage in ("connect", "auth")


# --- the message (pure) ------------------------------------------------------------------------


@functools.cache
def _templates() -> jinja2.Environment:
    """The web app's templates as Flask loads them, without needing a Flask app to render them."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE_TEMPLATES),
        autoescape=jinja2.select_autoescape(("html", "htm", "xml")),
        undefined=jinja2.StrictUndefined,
    )


def signup_message(config: Config, email: str, kind: str, now: datetime, **context: object) -> EmailMessage:
    """The sign-up mail of ``kind`` to ``email``: text and HTML parts in UTF-8 from ``web/email/{kind}.*``.

    ``context`` carries its link (``confirm_url`` or ``unsubscribe_url``).
    """
    which = OutboxKind(kind)
    context |= {"email": email, "days": config.web.confirm_days, "newsletter": config.newsletter}
    try:
        text = _templates().get_template(f"web/email/{which.value}.txt").render(context)
        html = _templates().get_template(f"web/email/{which.value}.html").render(context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"the {which.value} sign-up mail cannot be rendered: {exc}") from exc
    msg = EmailMessage()
    msg["Subject"] = check_header("Subject", SUBJECTS[which].format(name=config.newsletter.name))
    msg["From"] = Address(display_name=config.from_name, addr_spec=config.sender.from_address)
    msg["To"] = check_header("To", email)
    if config.sender.reply_to:
        msg["Reply-To"] = config.sender.reply_to
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(which.value, domain=config.sender.domain)
    # RFC 3834: out-of-office robots must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


def _message_for(config: Config, tokens: Tokens, mail: queue.ClaimedMail, now: datetime) -> EmailMessage:
    """Rebuild a queued mail, signing its link now."""
    if mail.kind == OutboxKind.CONFIRM:
        token = tokens.make(CONFIRM, mail.subscriber_id, mail.recipient)
        return signup_message(
            config,
            mail.recipient,
            mail.kind,
            now,
            confirm_url=routes.url(config.web.base_url, routes.CONFIRM, token=token),
        )
    token = tokens.make(UNSUBSCRIBE, mail.subscriber_id, mail.recipient)
    return signup_message(
        config,
        mail.recipient,
        mail.kind,
        now,
        unsubscribe_url=routes.url(config.web.base_url, routes.UNSUBSCRIBE, token=token),
    )


# --- queueing and delivering -------------------------------------------------------------------


def queue_signup_mail(session: Session, subscriber_id: int, email: str, kind: OutboxKind, now: datetime) -> int:
    """Queue a sign-up mail in the caller's transaction (the sign-up's own); returns its outbox id."""
    return queue.enqueue_mail(session, subscriber_id, email, kind, now)


@dataclass(frozen=True)
class OutboxReport:
    """What one pass over the outbox did, and what it left waiting."""

    sent: int = 0
    deferred: int = 0  # failed this time; queued for a later attempt
    given_up: int = 0  # refused for good, or failing past the retry window: recorded as failed
    skipped: int = 0  # no longer needed
    waiting: int = 0  # still queued after the pass (deferred now, or due later)
    last_error: str = ""

    def summary(self) -> str:
        """One line for a log or a terminal."""
        parts = [f"{self.sent} sent"]
        parts += [f"{n} {what}" for n, what in ((self.deferred, "to retry"), (self.given_up, "given up")) if n]
        if self.skipped:
            parts.append(f"{self.skipped} no longer needed")
        parts.append(f"{self.waiting} waiting")
        line = "sign-up mails: " + ", ".join(parts)
        return f"{line}; last error: {self.last_error}" if self.last_error else line


@dataclass
class _Pass:
    sent: int = 0
    deferred: int = 0
    given_up: int = 0
    skipped: int = 0
    last_error: str = ""
    stop: bool = False


def deliver_outbox(
    ctx: Context,
    transport_factory: Callable[[], Transport],
    *,
    limit: int = 100,
    only: int | None = None,
) -> OutboxReport:
    """Send up to ``limit`` due sign-up mails (or just mail ``only``), recording each outcome.

    Stops early when the server cannot be reached: the rest wait for the next pass. Safe
    to run from several processes at once. Needs ``[web] secret_key`` for the links.
    """
    config, store, clock = ctx.config, ctx.store, ctx.clock
    config.require_secret_key()  # the links are signed: without a key, say so before claiming anything
    worker = f"{worker_identity()}:{secrets.token_hex(4)}"  # one claim holder per pass, even in one process
    lease = max(MIN_LEASE, timedelta(seconds=4 * config.smtp.timeout))
    tally = _Pass()
    transport: Transport | None = None
    try:
        for _ in range(max(limit, 0)):
            now = clock.now()
            with store.session() as session:
                mail = queue.claim_due(session, worker, now, now + lease, only=only)
            if mail is None:
                break
            try:
                if transport is None:
                    transport = transport_factory()
                _deliver(ctx, transport, worker, mail, tally)
            except BaseException:
                with store.session() as session:  # not tried, or the outcome is unknown: the lease decides
                    queue.release_claim(session, mail.id, worker)
                raise
            if tally.stop:
                break
    finally:
        if transport is not None:
            transport.close()
    with store.session() as session:
        waiting = queue.count_waiting(session)
    return OutboxReport(tally.sent, tally.deferred, tally.given_up, tally.skipped, waiting, tally.last_error)


def _deliver(ctx: Context, transport: Transport, worker: str, mail: queue.ClaimedMail, tally: _Pass) -> None:
    """Send one claimed mail and record what happened to it (never its link: that is a secret)."""
    config, store, clock = ctx.config, ctx.store, ctx.clock
    now = clock.now()
    reason = no_longer_needed(mail.kind, mail.subscriber_status)
    if reason:
        with store.session() as session:
            queue.mark_skipped(session, mail.id, worker, reason, now)
        log.info("sign-up mail %d to subscriber %d skipped: %s", mail.id, mail.subscriber_id, reason)
        tally.skipped += 1
        return
    lifetime = timedelta(days=config.web.confirm_days)
    if now - mail.queued_at >= lifetime:  # nobody delivered it for that long: the request is stale
        last = mail.last_error or "no attempt was made"
        _give_up(store, mail, worker, now, f"not sent within {lifetime.days} days of the request: {last}", tally)
        return
    try:
        data = _message_for(config, ctx.tokens, mail, now).as_bytes(policy=SMTP)
        signer = load_signer(config.dkim)  # a sign-up mail is one of a few a minute: read the key each time
        if signer is not None:
            data = signer.sign([data], now) + data
        transport.send(config.bounces.return_address(config.sender), mail.recipient, data)
    except (MessageError, RenderError, PermanentDeliveryError) as exc:
        _give_up(store, mail, worker, now, str(exc), tally, attempted=isinstance(exc, DeliveryError))
        return
    except DeliveryError as exc:
        error = str(exc)
        tally.last_error, tally.stop = error, _stops_the_pass(exc)
        when = retry_at(mail.attempts + 1, mail.queued_at, now)
        if when is None:
            _give_up(store, mail, worker, now, f"gave up after {_hours(GIVE_UP_AFTER)}: {error}", tally, attempted=True)
            return
        with store.session() as session:
            queue.mark_deferred(session, mail.id, worker, error, when)
        log.warning(
            "sign-up mail %d to subscriber %d not sent (attempt %d), next try at %s: %s",
            mail.id,
            mail.subscriber_id,
            mail.attempts + 1,
            when.isoformat(timespec="seconds"),
            error,
        )
        tally.deferred += 1
        return
    with store.session() as session:
        queue.mark_sent(session, mail.id, worker, clock.now())
    log.info("sign-up mail %d (%s) to subscriber %d sent", mail.id, mail.kind.value, mail.subscriber_id)
    tally.sent += 1


def _give_up(
    store: Store,
    mail: queue.ClaimedMail,
    worker: str,
    now: datetime,
    error: str,
    tally: _Pass,
    *,
    attempted: bool = False,
) -> None:
    with store.session() as session:
        queue.mark_failed(session, mail.id, worker, error, now, attempted=attempted)
    log.error("sign-up mail %d to subscriber %d given up: %s", mail.id, mail.subscriber_id, error)
    tally.given_up += 1
    tally.last_error = error


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g} hours"
