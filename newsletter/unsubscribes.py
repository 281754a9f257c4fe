"""Unsubscribe requests that arrive by email: the mailto in every edition's List-Unsubscribe.

That mailto is ``mailto:{address}?subject=unsubscribe%20{token}``, so most requests carry
the same signed token as the one-click link and say exactly who wants to leave. A request
without a usable token (typed by hand, or its token mangled) unsubscribes the sender's
From address, but only when it asks to ("unsubscribe" in the subject) and is not an
automatic reply, so a reader answering the newsletter or an out-of-office robot never
unsubscribes anyone.

The requests are read from a Maildir or an IMAP folder. Each message handled is marked
seen and moved into a "Processed" folder, so running again does no work twice; a crash
between the database commit and the move only repeats an unsubscribe, which changes
nothing.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import mailbox
import re
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Protocol

from newsletter.clock import Clock
from newsletter.config import Config, ImapConfig
from newsletter.errors import MailboxError, TokenError, UsageError
from newsletter.store import Store
from newsletter.subscribers import LeaveResult, leave, leave_by_address
from newsletter.tokens import UNSUBSCRIBE, Tokens

log = logging.getLogger(__name__)

PROCESSED_FOLDER = "Processed"
_TOKEN = re.compile(r"\bunsubscribe\s+([A-Za-z0-9_.\-]{20,256})", re.IGNORECASE)
_ASKS = re.compile(r"\bunsubscribe\b", re.IGNORECASE)


@dataclass(frozen=True)
class Outcome:
    """What one message led to: ``action`` is unsubscribed, already, not-listed, test-copy or ignored."""

    action: str
    detail: str
    key: str = ""


@dataclass
class ProcessReport:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.action for o in self.outcomes)

    def summary(self) -> str:
        if not self.outcomes:
            return "no new messages"
        counts = self.counts
        order = ("unsubscribed", "already", "not-listed", "test-copy", "ignored")
        parts = [f"{counts[a]} {a.replace('-', ' ')}" for a in order if counts[a]]
        return f"{len(self.outcomes)} messages: " + ", ".join(parts)


def _is_automatic(msg: EmailMessage) -> bool:
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(msg.get("Precedence", "")).strip().lower()
    return auto != "no" or precedence in ("bulk", "junk", "list", "auto_reply") or msg.get("Return-Path") == "<>"


def _sender(msg: EmailMessage) -> str:
    addresses = [addr for _, addr in getaddresses([str(v) for v in msg.get_all("From", [])]) if addr]
    return addresses[0] if len(addresses) == 1 else ""


def handle_message(msg: EmailMessage, store: Store, clock: Clock, tokens: Tokens, max_age_days: int) -> Outcome:
    """Act on one message; never raises for a bad message, only for a broken database."""
    subject = " ".join(str(msg.get("Subject", "")).split())
    if _is_automatic(msg):
        return Outcome("ignored", "an automatic message")
    for candidate in _TOKEN.findall(subject):
        try:
            claim = tokens.read(UNSUBSCRIBE, candidate, max_age_days)
        except TokenError:
            continue
        with store.session() as session:
            result = leave(session, claim, clock, source="mailto")
        return Outcome(_action(result), f"subscriber {claim.subscriber_id} (signed request)")
    sender = _sender(msg)
    if not _ASKS.search(subject):
        return Outcome("ignored", f"from {sender or 'nobody'}: the subject does not ask to unsubscribe")
    if not sender:
        return Outcome("ignored", "no single From address")
    try:
        with store.session() as session:
            result = leave_by_address(session, sender, clock, source="mailto")
    except UsageError:
        return Outcome("ignored", f"from {sender[:80]!r}: not a valid address")
    return Outcome(_action(result), sender)


def _action(result: LeaveResult) -> str:
    return "already" if result == LeaveResult.ALREADY else result.value


def process_maildir(path: Path, config: Config, store: Store, clock: Clock, tokens: Tokens) -> ProcessReport:
    """Handle every message in ``new`` and ``cur``, moving each to ``Processed`` once done."""
    if not all((path / sub).is_dir() for sub in ("new", "cur", "tmp")):
        raise UsageError(f"{path} is not a Maildir (it needs new/, cur/ and tmp/ folders)")
    box = mailbox.Maildir(path, factory=None, create=False)
    try:
        return _process(_MaildirInbox(box), config, store, clock, tokens)
    finally:
        box.close()


def process_imap(config: Config, store: Store, clock: Clock, tokens: Tokens) -> ProcessReport:
    """Handle every message in ``[imap] mailbox``, moving each to ``processed_mailbox`` once done."""
    inbox = _ImapInbox(config.imap)
    try:
        return _process(inbox, config, store, clock, tokens)
    finally:
        inbox.close()


class _Inbox(Protocol):
    def pending(self) -> Iterator[tuple[str, bytes]]: ...

    def file_away(self, key: str, raw: bytes) -> None: ...


def _process(inbox: _Inbox, config: Config, store: Store, clock: Clock, tokens: Tokens) -> ProcessReport:
    report = ProcessReport()
    parser = BytesParser(policy=policy.default)
    for key, raw in inbox.pending():
        parsed = parser.parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        outcome = handle_message(parsed, store, clock, tokens, config.web.unsubscribe_days)
        report.outcomes.append(Outcome(outcome.action, outcome.detail, key))
        inbox.file_away(key, raw)
        log.info("%s: %s (%s)", key, outcome.action, outcome.detail)
    return report


class _MaildirInbox:
    def __init__(self, box: mailbox.Maildir) -> None:
        self.box = box
        exists = PROCESSED_FOLDER in box.list_folders()
        self.done = box.get_folder(PROCESSED_FOLDER) if exists else box.add_folder(PROCESSED_FOLDER)

    def pending(self) -> Iterator[tuple[str, bytes]]:
        for key in sorted(self.box.keys()):
            try:
                yield key, self.box.get_bytes(key)
            except (KeyError, FileNotFoundError):
                continue  # taken by a concurrent run

    def file_away(self, key: str, raw: bytes) -> None:
        message = mailbox.MaildirMessage(raw)
        message.set_subdir("cur")
        message.add_flag("S")
        self.done.add(message)
        self.box.discard(key)


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _ImapInbox:
    """One logged-in IMAP session on the unsubscribe mailbox.

    Every message not yet filed away is handled, read or not (someone at the desk may
    have opened it). Each is filed only after its unsubscribe is committed: marked seen
    and moved (MOVE where the server has it, else COPY, flag deleted and expunge that
    one message).
    """

    def __init__(self, cfg: ImapConfig) -> None:
        self.cfg = cfg
        self.where = f"IMAP server {cfg.host}:{cfg.effective_port}"
        self.client = self._connect()
        try:
            self._open_folders()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> imaplib.IMAP4:
        cfg = self.cfg
        context = ssl.create_default_context(cafile=cfg.ca_file or None)
        try:
            if cfg.security == "ssl":
                client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    cfg.host, cfg.effective_port, ssl_context=context, timeout=cfg.timeout
                )
            else:
                client = imaplib.IMAP4(cfg.host, cfg.effective_port, timeout=cfg.timeout)
                if cfg.security == "starttls":
                    client.starttls(ssl_context=context)
        except ssl.SSLError as exc:
            raise MailboxError(
                f"TLS with {self.where} failed: {exc.reason or exc}; check imap.security, imap.port and imap.ca_file"
            ) from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"cannot reach {self.where}: {exc or type(exc).__name__}") from None
        try:
            client.login(cfg.username, cfg.password)
        except imaplib.IMAP4.error as exc:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()
            raise MailboxError(
                f"{self.where} refused the login for {cfg.username!r}: {_text(exc)}; "
                "check imap.username and the password"
            ) from None
        return client

    def _open_folders(self) -> None:
        self.capabilities = set(_text(self._ok("CAPABILITY", self.client.capability())[0]).upper().split())
        self.processed = _quoted(self.cfg.processed_mailbox)
        listed = self._ok("LIST", self.client.list('""', self.processed))
        if listed == [None]:
            self._ok(f"CREATE {self.cfg.processed_mailbox}", self.client.create(self.processed))
        self._ok(f"SELECT {self.cfg.mailbox}", self.client.select(_quoted(self.cfg.mailbox)))

    def _ok(self, what: str, reply: tuple[str, list[Any]]) -> list[Any]:
        status, data = reply
        if status != "OK":
            raise MailboxError(f"{self.where}: {what} failed: {_text(data[0] if data else status)}")
        return data

    def pending(self) -> Iterator[tuple[str, bytes]]:
        try:
            (found,) = self._ok("SEARCH", self.client.uid("SEARCH", "UNDELETED"))
            for uid in (found or b"").split():
                key = uid.decode("ascii")
                fetched = self._ok(f"FETCH {key}", self.client.uid("FETCH", key, "(BODY.PEEK[])"))
                raw = next((part[1] for part in fetched if isinstance(part, tuple)), None)
                if raw is not None:  # else taken by a concurrent run
                    yield key, raw
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"{self.where}: {exc or type(exc).__name__}") from None

    def file_away(self, key: str, raw: bytes) -> None:
        uid = self.client.uid
        try:
            self._ok(f"STORE {key}", uid("STORE", key, "+FLAGS.SILENT", r"(\Seen)"))
            if "MOVE" in self.capabilities:
                self._ok(f"MOVE {key}", uid("MOVE", key, self.processed))
                return
            self._ok(f"COPY {key}", uid("COPY", key, self.processed))
            self._ok(f"STORE {key}", uid("STORE", key, "+FLAGS.SILENT", r"(\Deleted)"))
            if "UIDPLUS" in self.capabilities:
                self._ok(f"EXPUNGE {key}", uid("EXPUNGE", key))
            else:
                self._ok("EXPUNGE", self.client.expunge())
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"{self.where}: {exc or type(exc).__name__}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self.client.logout()


def _text(value: Any) -> str:
    if isinstance(value, BaseException):
        value = value.args[0] if value.args else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:300]
