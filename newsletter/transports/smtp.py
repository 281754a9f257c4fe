"""Single messages over SMTP, and the session set-up the pool shares: connect, TLS, AUTH, timeouts.

This is the one place that opens an SMTP session (``open_smtp``); ``pool.py`` takes the
socket over from there. Every failure leaves as a ``DeliveryError`` subclass. It says
whether trying again can help (temporary), cannot help for this recipient (permanent) or
cannot help for anyone (systemic), and at which stage it happened. The caller can then
decide without parsing exception types.

``SMTPTransport`` keeps its connection open for many messages (recycled after
``smtp.max_messages_per_connection``). It uses PIPELINING when offered, and reopens the
connection transparently when the server has closed it while idle.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl

from newsletter.config import SMTPConfig
from newsletter.errors import (
    DeliveryError,
    SystemicDeliveryError,
    TemporaryDeliveryError,
)
from newsletter.transports.base import ACCEPTED, classify_reply, reply_text

log = logging.getLogger(__name__)

_LEADING_DOT = re.compile(rb"(?m)^\.")
_BARE_LINE_END = re.compile(rb"\r\n|\r|\n")
_ENVELOPE = ("mail", "rcpt", "data")


def smtp_wire_data(data: bytes, *, canonical: bool = False) -> bytes:
    """CRLF line endings, dot-stuffed, ending in CRLF.

    ``canonical`` is the caller's promise that the bytes are all that already, as
    ``MessageTemplate`` makes them: the check would be two passes over every message.
    """
    if canonical:
        return data
    if data.count(b"\n") != data.count(b"\r\n") or b"\r" in data.replace(b"\r\n", b""):
        data = _BARE_LINE_END.sub(b"\r\n", data)
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _tls_context(cfg: SMTPConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cfg.ca_file or None)


def mail_command(mail_from: str, size: int, offers_size: bool) -> str:
    """The MAIL command, declaring the message's size when the server offers SIZE (RFC 1870)."""
    return f"MAIL FROM:<{mail_from}> SIZE={size}" if offers_size else f"MAIL FROM:<{mail_from}>"


def open_smtp(cfg: SMTPConfig) -> smtplib.SMTP:
    """A ready SMTP session: connected, EHLO, STARTTLS or implicit TLS, AUTH; errors classified."""
    where = f"{cfg.host}:{cfg.effective_port}"
    step = ["connect"]  # how far the session got, so a timeout says where it stalled
    try:
        return _open_session(cfg, where, step)
    except smtplib.SMTPAuthenticationError as exc:
        raise SystemicDeliveryError(
            f"SMTP server {where} refused the login for {cfg.username!r}: "
            f"{reply_text(exc.smtp_code, exc.smtp_error)}; check smtp.username and the password",
            code=exc.smtp_code,
            stage="auth",
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise SystemicDeliveryError(f"SMTP server {where}: {exc}", stage="auth") from None
    except ssl.SSLError as exc:
        raise SystemicDeliveryError(
            f"TLS with SMTP server {where} failed: {exc.reason or exc}; check smtp.security, smtp.port "
            "and smtp.ca_file",
            stage="connect",
        ) from None
    except smtplib.SMTPResponseException as exc:
        reply = reply_text(exc.smtp_code, exc.smtp_error)
        if exc.smtp_code >= 500:
            raise SystemicDeliveryError(
                f"SMTP server {where} refused the session: {reply}", code=exc.smtp_code, stage="connect"
            ) from None
        raise TemporaryDeliveryError(
            f"SMTP server {where} is not accepting mail now: {reply}", code=exc.smtp_code, stage="connect"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        if step[0] == "connect":
            raise TemporaryDeliveryError(f"cannot connect to SMTP server {where}: {exc}", stage="connect") from None
        stage = "auth" if step[0] == "login" else "connect"
        raise TemporaryDeliveryError(
            f"SMTP server {where} stopped answering during {_STEPS[step[0]]}: {exc}", stage=stage
        ) from None


_STEPS = {"greeting": "its greeting (EHLO)", "starttls": "STARTTLS", "login": "login (AUTH)"}


def _open_session(cfg: SMTPConfig, where: str, step: list[str]) -> smtplib.SMTP:
    """Connect, greet, encrypt and log in, noting each step in ``step[0]`` as it starts."""
    host, port = cfg.host, cfg.effective_port
    smtp: smtplib.SMTP | None = None
    try:
        if cfg.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                host, port, local_hostname=cfg.helo_name or None, timeout=cfg.timeout, context=_tls_context(cfg)
            )
        else:
            smtp = smtplib.SMTP(host, port, local_hostname=cfg.helo_name or None, timeout=cfg.timeout)
        # Commands are small writes; with Nagle's algorithm one sent while an earlier
        # segment is unacknowledged waits for the peer's delayed ACK (40 ms).
        if smtp.sock is not None:
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step[0] = "greeting"
        code, reply = smtp.ehlo()
        if not 200 <= code <= 299:
            if code == 421:  # "closing the channel" (too many connections): no HELO on a closing line
                raise smtplib.SMTPResponseException(code, reply)
            code, reply = smtp.helo()
            if not 200 <= code <= 299:
                raise smtplib.SMTPHeloError(code, reply)
        if cfg.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise SystemicDeliveryError(
                    f'SMTP server {where} does not offer STARTTLS; set smtp.security to "none" only if '
                    "the connection is local and trusted",
                    stage="connect",
                )
            step[0] = "starttls"
            smtp.starttls(context=_tls_context(cfg))
            smtp.ehlo()
        if cfg.username:
            step[0] = "login"
            smtp.login(cfg.username, cfg.password)
        return smtp
    except BaseException as exc:
        if smtp is not None:
            closing = isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421
            talking = isinstance(exc, smtplib.SMTPResponseException | smtplib.SMTPNotSupportedError | DeliveryError)
            if talking and not closing:  # after a 421 the server hangs up itself
                # The server is still talking (it refused the login, or offers no STARTTLS):
                # end the session properly rather than drop it ("lost connection after AUTH").
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    smtp.quit()
            smtp.close()
        raise


class SMTPTransport:
    """One SMTP connection, opened on first use, reused, recycled and reopened as needed.

    Not thread-safe, and not meant to be shared: each caller makes its own, usually through
    ``publish.transport_factory``, and closes it when done.
    """

    def __init__(self, config: SMTPConfig) -> None:
        self.config = config
        self._smtp: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self.connections_opened = 0

    # --- connection life --------------------------------------------------------------

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None and self._sent_on_connection >= self.config.max_messages_per_connection:
            self.close()
        if self._smtp is None:
            self._smtp = open_smtp(self.config)
            self._sent_on_connection = 0
            self.connections_opened += 1
        return self._smtp

    def _drop(self) -> None:
        """Forget a connection that is broken or mid-transaction; never wait on it."""
        if self._smtp is not None:
            with contextlib.suppress(OSError):
                self._smtp.close()
            self._smtp = None

    def close(self) -> None:
        """QUIT politely; a server that has gone away is simply forgotten."""
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._drop()

    # --- sending ----------------------------------------------------------------------

    def send(
        self,
        mail_from: str,
        recipient: str,
        data: bytes,
        *,
        canonical: bool = False,
    ) -> str:
        wire = smtp_wire_data(data, canonical=canonical)
        reused = self._smtp is not None
        try:
            return self._transaction(mail_from, recipient, wire)
        except _StaleConnectionError:
            if not reused:
                raise TemporaryDeliveryError("SMTP server closed the connection before MAIL", stage="mail") from None
            # An idle connection the server had already closed: nothing was sent, so a
            # fresh connection may try again at once.
            return self._transaction(mail_from, recipient, wire)
        except TemporaryDeliveryError as exc:
            if not (reused and exc.code == 421 and exc.stage == "mail"):
                raise
            # Postfix and others say "421 ... timeout exceeded" to an idle connection before
            # closing it; we read that as the answer to MAIL. Nothing was sent: try afresh.
            return self._transaction(mail_from, recipient, wire)

    def _envelope(self, smtp: smtplib.SMTP, mail_from: str, recipient: str, stage: list[str], size: int) -> None:
        """MAIL, RCPT and DATA; one round trip when the server offers PIPELINING (RFC 2920).

        Addresses are checked plain addr-specs by now, so they are written as they are,
        sparing smtplib's per-call address parsing. The size is declared (RFC 1870) where
        the server offers SIZE, so a message too big is refused before it is transmitted.
        """
        commands = (mail_command(mail_from, size, smtp.has_extn("size")), f"RCPT TO:<{recipient}>", "DATA")
        if smtp.does_esmtp and smtp.has_extn("pipelining"):
            smtp.send("".join(f"{c}\r\n" for c in commands))
            replies = []
            for step in _ENVELOPE:
                stage[0] = step
                replies.append(smtp.getreply())
                if replies[-1][0] == 421:
                    raise self._refused(*replies[-1], step)
            (mail, mail_reply), (rcpt, rcpt_reply), (data, data_reply) = replies
            if mail in ACCEPTED["mail"] and rcpt in ACCEPTED["rcpt"] and data in ACCEPTED["data"]:
                return
            if data in ACCEPTED["data"]:  # a server that opened DATA without a recipient: close it empty
                smtp.send(b".\r\n")
                smtp.getreply()
            if mail not in ACCEPTED["mail"]:
                raise self._refused(mail, mail_reply, "mail")
            if rcpt not in ACCEPTED["rcpt"]:
                raise self._refused(rcpt, rcpt_reply, "rcpt")
            raise self._refused(data, data_reply, "data")
        for step, command in zip(_ENVELOPE, commands, strict=True):
            stage[0] = step
            smtp.putcmd(command)
            code, reply = smtp.getreply()
            if code not in ACCEPTED[step]:
                raise self._refused(code, reply, step)

    def _transaction(self, mail_from: str, recipient: str, wire: bytes) -> str:
        smtp = self._connection()
        stage = ["mail"]
        try:
            self._envelope(smtp, mail_from, recipient, stage, len(wire))
            stage[0] = "commit"
            smtp.send(wire + b".\r\n")
            code, reply = smtp.getreply()
        except smtplib.SMTPServerDisconnected as exc:
            self._drop()
            if stage[0] == "mail":
                raise _StaleConnectionError from exc
            maybe = " (the server may have accepted it)" if stage[0] == "commit" else ""
            raise TemporaryDeliveryError(f"{stage[0]}: connection lost{maybe}: {exc}", stage=stage[0]) from None
        except (OSError, smtplib.SMTPException) as exc:
            if isinstance(exc, DeliveryError):
                raise
            self._drop()
            raise TemporaryDeliveryError(f"{stage[0]}: {exc.__class__.__name__}: {exc}", stage=stage[0]) from None
        self._sent_on_connection += 1
        refused = classify_reply(code, reply, "data", ACCEPTED["commit"])
        if refused is not None:
            if code == 421:
                self._drop()
            raise refused
        return reply_text(code, reply)

    def _refused(self, code: int, reply: bytes, stage: str) -> DeliveryError:
        """Turn a refusal into an error and leave the connection usable for the next message."""
        if code == 421 or code < 0:
            self._drop()  # 421: the server is closing the session
        elif self._smtp is not None:
            try:
                self._smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
        return classify_reply(code, reply, stage)


class _StaleConnectionError(Exception):
    """The server had closed a reused connection before this message began."""
