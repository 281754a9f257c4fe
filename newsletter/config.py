"""Configuration: one TOML file plus a few environment variables, read once into frozen dataclasses.

``load_config`` is the only code that reads the file or the environment. Interfaces call it
once and pass the resulting ``Config`` down, so tests can build one in memory and nothing
depends on a process-wide setting. Every problem is a ``ConfigError`` naming the file, the
key and what was expected, because a cron job's mail is often the only place it is seen.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.addresses import PLAIN_ADDRESS
from newsletter.errors import ConfigError

CONFIG_ENV = "NEWSLETTER_CONFIG"
DEFAULT_CONFIG_NAME = "newsletter.toml"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A plain ASCII addr-spec: the same form message.check_address requires of every address it
# writes into a header, so an address the config accepts cannot fail later, at send time.
_URL_FORBIDDEN = re.compile(r"[\s<>\"\\^`{|}]")  # would break the <URL> of List-Unsubscribe or an href
_SUBJECT_FIELDS = frozenset({"name", "publication", "date", "count"})
_SECRET_URL = re.compile(r"(?<=://)([^:/@]*):[^@/]*@")


PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
MAX_CONFIG_BYTES = 1_000_000  # a configuration is a few KB; anything bigger is the wrong file


class _InvalidValueError(ValueError):
    """A value failed a check; the message says what was expected."""


def _meta(expected: str, check: Callable[[Any], Any] | None = None, **kw: Any) -> Any:
    """Declare a config field together with the sentence shown when its value is wrong."""
    return field(metadata={"expected": expected, "check": check}, **kw)


# --- checks: each returns the converted value or raises _InvalidValueError -----------------------


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _InvalidValueError
    if any(c in value for c in "\r\n\x00"):
        raise _InvalidValueError("a single line of text (no line breaks)")
    return value.strip()


def _nonempty(value: Any) -> str:
    text = _text(value)
    if not text:
        raise _InvalidValueError
    return text


def _multiline(value: Any) -> str:
    if not isinstance(value, str):
        raise _InvalidValueError
    return value.strip()


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _InvalidValueError
    return value


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _InvalidValueError
        return value

    return check


PRIORITY_RANGE = _int_range(PRIORITY_MIN, PRIORITY_MAX)


def _number_range(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise _InvalidValueError
        return float(value)

    return check


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise _InvalidValueError
        return str(value)

    return check


def _timezone(value: Any) -> str:
    name = _nonempty(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _InvalidValueError from exc
    return name


def _clock_time(value: Any) -> time:
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", value if isinstance(value, str) else "")
    if not match:
        raise _InvalidValueError
    hour, minute, second = (int(g) if g else 0 for g in match.groups())
    if hour > 23 or minute > 59 or second > 59:
        raise _InvalidValueError
    return time(hour, minute, second)


def _email(value: Any) -> str:
    text = _nonempty(value)
    if not PLAIN_ADDRESS.fullmatch(text):
        raise _InvalidValueError
    return text


def _optional_email(value: Any) -> str:
    return "" if value == "" else _email(value)


def _http_url(value: Any) -> str:
    text = _nonempty(value).rstrip("/")
    if not text.isascii() or _URL_FORBIDDEN.search(text):
        raise _InvalidValueError
    try:
        parts = urlsplit(text)  # raises ValueError for a broken IPv6 literal ("http://[::1")
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise _InvalidValueError from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise _InvalidValueError
    return text


def _db_url(value: Any) -> str:
    text = _nonempty(value)
    if not text.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        raise _InvalidValueError
    if text.startswith("postgresql://"):
        text = "postgresql+psycopg://" + text.removeprefix("postgresql://")
    return text


def _weekdays(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _InvalidValueError
    days = tuple(str(v).lower()[:3] for v in value)
    if any(d not in WEEKDAYS for d in days) or len(set(days)) != len(days):
        raise _InvalidValueError
    return tuple(d for d in WEEKDAYS if d in days)


def _subject(value: Any) -> str:
    text = _nonempty(value)
    try:
        # Plain names only: "{date.year}" or "{count[0]}" would fail on the morning itself, and
        # "{name:>300000000}" would build a 300 MB subject: no format specs or conversions.
        for _, name, spec, conversion in string.Formatter().parse(text):
            if name is not None and (name not in _SUBJECT_FIELDS or spec or conversion):
                raise _InvalidValueError
        text.format(name="n", publication="p", date="d", count=1)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise _InvalidValueError from exc
    return text


def _section_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _InvalidValueError
    names = tuple(_nonempty(v) for v in value)
    if any(len(n) > 100 for n in names) or len({n.casefold() for n in names}) != len(names):
        raise _InvalidValueError
    return names


def _optional_http_url(value: Any) -> str:
    return "" if value == "" else _http_url(value)


def _priorities(value: Any) -> tuple[tuple[str, int], ...]:
    """A feed's category -> priority table, as sorted pairs so the config stays hashable."""
    if not isinstance(value, dict):
        raise _InvalidValueError
    pairs = {}
    for key, number in value.items():
        name = _nonempty(key)
        if len(name) > 100:
            raise _InvalidValueError
        pairs[name.casefold()] = PRIORITY_RANGE(number)
    return tuple(sorted(pairs.items()))


# --- the sections ---------------------------------------------------------------------


def _login_text(value: Any) -> str:
    text = _text(value)
    if not text.isascii():
        raise _InvalidValueError("ASCII characters only (the mail libraries send logins as ASCII)")
    return text


def _ca_file(value: Any) -> str:
    text = _text(value)
    if text and not Path(text).expanduser().is_file():
        raise _InvalidValueError('the path of a CA bundle file that exists, or "" for the system\'s')
    return str(Path(text).expanduser()) if text else ""


_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_ADDRESS_LITERAL = re.compile(r"\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+)\]")


def _helo_name(value: Any) -> str:
    text = _text(value)
    if text and not (_HOST_NAME.fullmatch(text) or _ADDRESS_LITERAL.fullmatch(text)):
        raise _InvalidValueError
    return text


def default_helo_name(hostname: str, sender_domain: str) -> str:
    """What to say in EHLO when the configuration does not say: this machine's name when it
    is a full domain name, else the sender's domain; never a bare address literal, which
    remote servers score as a spam sign (RFC 5321 4.1.4 wants the client's domain)."""
    name = hostname.strip().rstrip(".").lower()
    if "." in name and _HOST_NAME.fullmatch(name) and not name.replace(".", "").isdigit():
        return name
    return sender_domain


def _domain(value: Any) -> str:
    text = _text(value).lower().rstrip(".")
    if text and not (_HOST_NAME.fullmatch(text) and "." in text):
        raise _InvalidValueError('a domain name such as "news.example.com"')
    return text


def _selector(value: Any) -> str:
    text = _text(value)
    if text and not _HOST_NAME.fullmatch(text):  # a selector is dot-separated labels
        raise _InvalidValueError('a DKIM selector: letters, digits, "-" and "." such as "breakfast2026"')
    return text


def _delimiter(value: Any) -> str:
    text = _text(value)
    if text not in ("+", "-", "=", "_"):
        raise _InvalidValueError('one of "+", "-", "=" or "_"')
    return text


def _key_text(value: Any) -> str:
    """PEM text of a private key: several lines, so ``_text`` cannot check it."""
    if not isinstance(value, str) or "\x00" in value:
        raise _InvalidValueError
    return value.strip()


def _path(value: Any) -> str:
    return str(Path(_text(value)).expanduser()) if _text(value) else ""


def _origins(value: Any) -> tuple[str, ...]:
    """Web origins such as "https://news.example.com": scheme, host and port, nothing more."""
    if not isinstance(value, list):
        raise _InvalidValueError
    found = []
    for item in value:
        text = _http_url(item)
        parts = urlsplit(text)
        if parts.path or parts.username or parts.password:
            raise _InvalidValueError('a list of origins such as ["https://news.example.com"]: no path or login')
        found.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(dict.fromkeys(found))


_UTM_VALUE = re.compile(r"[A-Za-z0-9._~-]{1,60}")


def _utm_value(value: Any) -> str:
    text = _nonempty(value)
    if not _UTM_VALUE.fullmatch(text):
        raise _InvalidValueError('letters, digits, ".", "_", "~" or "-", at most 60, such as "newsletter"')
    return text


def _emails(value: Any) -> tuple[str, ...]:
    """A list of distinct plain addresses, e.g. the staff told when preflight finds an error."""
    if not isinstance(value, list):
        raise _InvalidValueError
    found = tuple(_email(item) for item in value)
    if len({a.lower() for a in found}) != len(found):
        raise _InvalidValueError
    return found


def _header_text(value: Any) -> str:
    """Text sent as an HTTP header value: printable ASCII on one line, not too long."""
    text = _nonempty(value)
    if not text.isascii() or not text.isprintable() or len(text) > 200:
        raise _InvalidValueError
    return text


def _mailbox_name(value: Any) -> str:
    text = _nonempty(value)
    if not text.isascii() or not text.isprintable():
        raise _InvalidValueError(
            "a folder name in printable ASCII (write other names as the server lists them, in modified UTF-7)"
        )
    return text


@dataclass(frozen=True)
class NewsletterConfig:
    """What the edition is called, for whom, and when it goes out."""

    publication: str = _meta('the publication\'s name, e.g. "The Example Gazette"', _nonempty)
    name: str = _meta("the newsletter's name", _nonempty, default="Breakfast in red")
    timezone: str = _meta('an IANA time zone such as "Europe/London"', _timezone, default="Europe/London")
    send_time: time = _meta('a time of day as "HH:MM" (24-hour)', _clock_time, default=time(6, 0))
    send_when_empty: bool = _meta("true or false", _bool, default=False)
    per_reader_timezone: bool = _meta("true or false", _bool, default=False)
    subject: str = _meta(
        "a subject using only {name}, {publication}, {date} and {count}", _subject, default="{name}: {date}"
    )
    list_id: str = _meta('a list identifier such as "breakfast.news.example.com"', _text, default="")
    address: str = _meta("the publisher's postal address (text)", _multiline, default="")
    templates: str = _meta("a directory of templates overriding the built-in ones", _text, default="")
    sections: tuple[str, ...] = _meta(
        'a list of distinct section names such as ["News", "Politics", "Sport"]', _section_names, default=()
    )
    more_stories: str = _meta("a heading (text) for stories with no section", _nonempty, default="More stories")
    max_age_hours: int = _meta("hours, from 1 to 8760", _int_range(1, 8760), default=48)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class DesignConfig:
    """Optional touches to the edition's look; the defaults keep it plain."""

    logo_url: str = _meta('an http(s) URL of the masthead logo, or "" for none', _optional_http_url, default="")
    logo_alt: str = _meta("the logo's alternative text", _text, default="")
    logo_width: int = _meta("pixels, from 16 to 600", _int_range(16, 600), default=200)
    thumbnails: bool = _meta("true or false", _bool, default=False)
    lead_section_label: bool = _meta("true or false", _bool, default=False)


@dataclass(frozen=True)
class StoreConfig:
    """Where the single source of truth lives."""

    url: str = _meta(
        "a database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
        _db_url,
        default="sqlite:///newsletter.db",
    )

    def __repr__(self) -> str:
        # A PostgreSQL URL may carry a password; a logged or printed Config must not.
        return f"StoreConfig(url={_shown('url', self.url)!r})"


@dataclass(frozen=True)
class SMTPConfig:
    """How to reach the mail server and how hard to push it."""

    host: str = _meta("a host name", _nonempty, default="localhost")
    port: int = _meta(
        "a port number from 1 to 65535, or 0 for the usual one of smtp.security", _int_range(0, 65535), default=0
    )
    security: str = _meta('one of "none", "starttls" or "ssl"', _choice("none", "starttls", "ssl"), default="starttls")
    username: str = _meta("a user name (text)", _login_text, default="")
    password: str = _meta("a password (text)", _login_text, default="", repr=False)
    timeout: float = _meta("seconds, from 1 to 600", _number_range(1, 600), default=30.0)
    connections: int = _meta("a whole number of connections from 1 to 64", _int_range(1, 64), default=4)
    max_messages_per_connection: int = _meta("a whole number from 1 to 1000000", _int_range(1, 1_000_000), default=1000)
    max_per_second: float = _meta("messages per second (0 for no limit)", _number_range(0, 100_000), default=0.0)
    helo_name: str = _meta(
        'a host name such as "mail.news.example.com" or an address literal such as "[192.0.2.1]"',
        _helo_name,
        default="",
    )
    ca_file: str = _meta("a path to a CA bundle for verifying the server", _ca_file, default="")

    @property
    def effective_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587}.get(self.security, 25)


@dataclass(frozen=True)
class ImapConfig:
    """The mailbox the List-Unsubscribe mailto delivers to, when it is read over IMAP."""

    host: str = _meta('a host name, or "" to read unsubscribe mail from a Maildir instead', _text, default="")
    port: int = _meta(
        "a port number from 1 to 65535, or 0 for the usual one of imap.security", _int_range(0, 65535), default=0
    )
    security: str = _meta('one of "none", "starttls" or "ssl"', _choice("none", "starttls", "ssl"), default="ssl")
    username: str = _meta("a user name (text)", _login_text, default="")
    password: str = _meta("a password (text)", _login_text, default="", repr=False)
    mailbox: str = _meta("an IMAP folder name", _mailbox_name, default="INBOX")
    processed_mailbox: str = _meta("an IMAP folder name", _mailbox_name, default="Processed")
    timeout: float = _meta("seconds, from 1 to 600", _number_range(1, 600), default=30.0)
    ca_file: str = _meta("a path to a CA bundle for verifying the server", _ca_file, default="")

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)


@dataclass(frozen=True)
class SenderConfig:
    """Who the mail is from and where replies and unsubscribe requests go."""

    from_address: str = _meta('an email address such as "breakfast@news.example.com"', _email)
    from_name: str = _meta("a display name (text)", _text, default="")
    reply_to: str = _meta('an email address, or "" for none', _optional_email, default="")
    unsubscribe_address: str = _meta("an email address for mailto unsubscribes", _optional_email, default="")
    envelope_from: str = _meta("an email address for bounces (SMTP MAIL FROM)", _optional_email, default="")

    @property
    def domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1].lower()


@dataclass(frozen=True)
class WebConfig:
    """The public site that hosts confirm, unsubscribe and view-in-browser pages."""

    base_url: str = _meta('an http(s) URL such as "https://news.example.com/newsletter"', _http_url)
    secret_key: str = _meta("at least 32 characters of random text", _text, default="", repr=False)
    production: bool = _meta("true or false", _bool, default=True)
    confirm_days: int = _meta("days, from 1 to 90", _int_range(1, 90), default=7)
    unsubscribe_days: int = _meta("days, from 30 to 3650", _int_range(30, 3650), default=365)
    subscribe_per_hour: int = _meta("sign-ups per address per hour, from 1 to 10000", _int_range(1, 10_000), default=10)
    trusted_proxies: int = _meta("the number of reverse proxies in front, from 0 to 5", _int_range(0, 5), default=0)
    embed_origins: tuple[str, ...] = _meta(
        'a list of web origins allowed to post the embedded sign-up form, e.g. ["https://news.example.com"]',
        _origins,
        default=(),
    )


@dataclass(frozen=True)
class DeliveryConfig:
    """Retry, batching and safety limits of the send loop."""

    batch_size: int = _meta("a whole number from 1 to 10000", _int_range(1, 10_000), default=200)
    max_attempts: int = _meta("a whole number of tries from 1 to 20", _int_range(1, 20), default=3)
    backoff_seconds: float = _meta("seconds, from 0 to 600", _number_range(0, 600), default=2.0)
    backoff_max_seconds: float = _meta("seconds, from 0 to 3600", _number_range(0, 3600), default=60.0)
    lease_seconds: int = _meta("seconds, from 10 to 86400", _int_range(10, 86_400), default=300)
    max_consecutive_failures: int = _meta("a whole number from 1 to 100000", _int_range(1, 100_000), default=25)
    retry_deferred_minutes: int = _meta("minutes, from 0 to 1440", _int_range(0, 1440), default=15)
    give_up_hours: int = _meta("hours, from 1 to 240", _int_range(1, 240), default=24)
    transport: str = _meta('"smtp" or "maildir"', _choice("smtp", "maildir"), default="smtp")
    maildir: str = _meta("a directory path for the Maildir transport", _text, default="outbox")


@dataclass(frozen=True)
class SchedulerConfig:
    """When the daemon sends, and how late a missed send may still go out."""

    days: tuple[str, ...] = _meta('a list of weekdays such as ["mon", "tue"]', _weekdays, default=WEEKDAYS)
    grace_minutes: int = _meta("minutes, from 0 to 1440", _int_range(0, 1440), default=120)
    fetch_feeds: bool = _meta("true or false", _bool, default=True)
    fetch_interval_minutes: int = _meta("minutes, from 0 to 1440 (0 turns it off)", _int_range(0, 1440), default=60)


@dataclass(frozen=True)
class FeedConfig:
    """One RSS or Atom feed to import articles from."""

    url: str = _meta("a feed URL or file path", _nonempty)
    section: str = _meta("a section name (text)", _text, default="")
    priority: int = _meta("a whole number from -1000 to 1000", PRIORITY_RANGE, default=0)
    priorities: tuple[tuple[str, int], ...] = _meta(
        "a table of category = priority, e.g. { Breaking = 10, Obituaries = -5 }, priorities from -1000 to 1000",
        _priorities,
        default=(),
    )


@dataclass(frozen=True)
class FetchConfig:
    """How long to wait for a feed server and how much to accept from it."""

    timeout: float = _meta("seconds, from 1 to 600", _number_range(1, 600), default=30.0)
    max_bytes: int = _meta("bytes, from 1000 to 1000000000", _int_range(1000, 1_000_000_000), default=10_000_000)


@dataclass(frozen=True)
class BouncesConfig:
    """Where bounces, complaints and mailed unsubscribes come back, and what they do to a reader.

    With ``verp`` on, each message's envelope sender is ``local+CODE@domain`` of ``address``;
    the signed CODE names the edition and the reader, so a bounce is attributed from the
    address it was sent to, whatever the report looks like. The mail server of that domain
    must deliver ``local+anything`` to ``local`` (Postfix: ``recipient_delimiter = +``).
    """

    address: str = _meta(
        'an email address for bounces, or "" for [sender] envelope_from (else from_address)',
        _optional_email,
        default="",
    )
    verp: bool = _meta("true or false", _bool, default=True)
    delimiter: str = _meta('one of "+", "-", "=" or "_"', _delimiter, default="+")
    maildir: str = _meta('a Maildir path, or "" to read only the [imap] mailbox', _path, default="")
    soft_bounces: int = _meta("a whole number from 1 to 100", _int_range(1, 100), default=3)
    soft_window_days: int = _meta("days, from 1 to 365", _int_range(1, 365), default=14)
    process_minutes: int = _meta("minutes, from 0 to 1440 (0 turns it off)", _int_range(0, 1440), default=5)

    def return_address(self, sender: SenderConfig) -> str:
        return self.address or sender.envelope_from or sender.from_address


@dataclass(frozen=True)
class TrackingConfig:
    """What the edition counts of what readers do with it: clicks (on by default) and opens (off)."""

    clicks: bool = _meta("true or false", _bool, default=True)
    opens: bool = _meta("true or false", _bool, default=False)
    utm: bool = _meta("true or false", _bool, default=False)
    utm_source: str = _meta('a UTM value such as "newsletter"', _utm_value, default="newsletter")
    utm_medium: str = _meta('a UTM value such as "email"', _utm_value, default="email")
    scanner_seconds: int = _meta("seconds, from 0 to 3600", _int_range(0, 3600), default=30)


DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
VERP_CODE_CHARS = 32  # the longest code newsletter.returnpath makes


@dataclass(frozen=True)
class DkimConfig:
    """DKIM signing: off until a domain is set. A second, ed25519 signature is optional."""

    domain: str = _meta('a domain name such as "news.example.com", or "" for no signing', _domain, default="")
    selector: str = _meta('a DKIM selector such as "breakfast2026"', _selector, default="")
    algorithm: str = _meta('"rsa-sha256" or "ed25519-sha256"', _choice(*DKIM_ALGORITHMS), default="rsa-sha256")
    key_file: str = _meta("the path of a PEM private key file", _path, default="")
    key: str = _meta("PEM private key text", _key_text, default="", repr=False)
    ed25519_selector: str = _meta('a DKIM selector, or "" for no second signature', _selector, default="")
    ed25519_key_file: str = _meta("the path of a PEM ed25519 private key file", _path, default="")
    ed25519_key: str = _meta("PEM private key text", _key_text, default="", repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.domain)


@dataclass(frozen=True)
class PreflightConfig:
    """The checks run on an edition before it goes out: ``newsletter preflight``, and later the
    scheduler before each send. Links are fetched from this machine, so the limits here keep a
    slow site from holding up the morning."""

    block_on_error: bool = _meta("true or false", _bool, default=True)
    notify: tuple[str, ...] = _meta(
        'a list of distinct email addresses such as ["desk@news.example.com"]', _emails, default=()
    )
    link_timeout_seconds: float = _meta("seconds, from 0.1 to 120", _number_range(0.1, 120), default=10.0)
    link_check_seconds: float = _meta("seconds, from 1 to 3600", _number_range(1, 3600), default=60.0)
    link_concurrency: int = _meta("a whole number from 1 to 64", _int_range(1, 64), default=8)
    user_agent: str = _meta(
        "a user agent: one line of printable ASCII, at most 200 characters",
        _header_text,
        default="BreakfastInRed-Preflight/1.0 (link check before sending)",
    )
    max_redirects: int = _meta("a whole number from 0 to 20", _int_range(0, 20), default=5)
    spam_threshold: float = _meta("a SpamAssassin score, from -100 to 100", _number_range(-100, 100), default=5.0)
    screenshots: bool = _meta("true or false", _bool, default=True)
    screenshot_dir: str = _meta("a directory path", _nonempty, default="preflight")


@dataclass(frozen=True)
class Config:
    """Everything the sender needs, built once per process by ``load_config``."""

    newsletter: NewsletterConfig
    sender: SenderConfig
    web: WebConfig
    store: StoreConfig = field(default_factory=StoreConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    design: DesignConfig = field(default_factory=DesignConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    feeds: tuple[FeedConfig, ...] = ()
    source: str = "<memory>"

    @property
    def list_id(self) -> str:
        if self.newsletter.list_id:
            return self.newsletter.list_id
        slug = re.sub(r"[^a-z0-9]+", "-", self.newsletter.name.lower()).strip("-") or "newsletter"
        return f"{slug}.{self.sender.domain}"

    @property
    def from_name(self) -> str:
        return self.sender.from_name or self.newsletter.name

    def require_secret_key(self) -> str:
        """Signed links need the key; asking here keeps commands that do not sign usable without it."""
        if not self.web.secret_key:
            raise ConfigError(self.source, "web.secret_key", "missing: set it in the file or in $NEWSLETTER_SECRET_KEY")
        return self.web.secret_key


_SECTIONS: dict[str, type] = {
    "newsletter": NewsletterConfig,
    "store": StoreConfig,
    "smtp": SMTPConfig,
    "sender": SenderConfig,
    "web": WebConfig,
    "delivery": DeliveryConfig,
    "scheduler": SchedulerConfig,
    "fetch": FetchConfig,
    "imap": ImapConfig,
    "design": DesignConfig,
    "bounces": BouncesConfig,
    "dkim": DkimConfig,
    "tracking": TrackingConfig,
    "preflight": PreflightConfig,
}


def _shown(name: str, value: Any) -> Any:
    """A rejected value as an error message may show it: secrets hidden, URL passwords masked."""
    if name.endswith(("password", "secret_key", "key")):
        return "(hidden)"
    return _SECRET_URL.sub(r"\1:***@", value) if isinstance(value, str) else value


def _build(cls: type, raw: Any, source: str, prefix: str, from_env: Mapping[str, str] | None = None) -> Any:
    """One section; ``from_env`` names the variables values came from, so errors point there."""
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, "expected a table of keys")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(source, f"{prefix}.{key}", f"unknown key; expected one of: {', '.join(known)}")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        key = f"{prefix}.{name}"
        if from_env and name in from_env:
            key += f" (from ${from_env[name]})"
        if name not in raw:
            if spec.default is dataclasses.MISSING:
                raise ConfigError(source, key, f"missing; expected {spec.metadata['expected']}")
            continue
        try:
            values[name] = spec.metadata["check"](raw[name])
        except _InvalidValueError as exc:
            detail = str(exc) or spec.metadata["expected"]
            raise ConfigError(source, key, f"expected {detail}, got {_shown(name, raw[name])!r}") from None
    return cls(**values)


def parse_config(data: Mapping[str, Any], source: str, environ: Mapping[str, str]) -> Config:
    """Turn parsed TOML plus the environment into a ``Config``; the seam tests use directly."""
    for key in data:
        if key not in _SECTIONS and key != "feeds":
            raise ConfigError(source, key, f"unknown section; expected one of: {', '.join([*_SECTIONS, 'feeds'])}")
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    smtp_table = data.get("smtp")
    if isinstance(smtp_table, dict) and "helo" in smtp_table and "helo_name" not in smtp_table:
        smtp_table["helo_name"] = smtp_table.pop("helo")  # the key's earlier name, still read
    env_overrides = {
        ("smtp", "password"): "NEWSLETTER_SMTP_PASSWORD",
        ("imap", "password"): "NEWSLETTER_IMAP_PASSWORD",
        ("web", "secret_key"): "NEWSLETTER_SECRET_KEY",
        ("store", "url"): "NEWSLETTER_DATABASE_URL",
        ("dkim", "key"): "NEWSLETTER_DKIM_KEY",
        ("dkim", "ed25519_key"): "NEWSLETTER_DKIM_ED25519_KEY",
    }
    from_env: dict[str, dict[str, str]] = {}
    for (section, key), var in env_overrides.items():
        if environ.get(var):
            data.setdefault(section, {})
            if isinstance(data[section], dict):
                data[section][key] = environ[var]
                from_env.setdefault(section, {})[key] = var
    if source != "<memory>":
        # A CA file is checked while the section is read, so make it relative to this file
        # first (cron's working directory is rarely the config's).
        for name in ("smtp", "imap"):
            table = data.get(name)
            if not isinstance(table, dict):
                continue
            ca = table.get("ca_file")
            if isinstance(ca, str) and ca and not Path(ca).expanduser().is_absolute():
                table["ca_file"] = str(Path(source).resolve().parent / ca)
    sections = {
        name: _build(cls, data.get(name, {}), source, name, from_env.get(name)) for name, cls in _SECTIONS.items()
    }
    raw_feeds = data.get("feeds", [])
    if not isinstance(raw_feeds, list):
        raise ConfigError(source, "feeds", "expected [[feeds]] tables, each with a url")
    feeds = tuple(_build(FeedConfig, item, source, f"feeds[{i}]") for i, item in enumerate(raw_feeds))

    smtp: SMTPConfig = sections["smtp"]
    imap: ImapConfig = sections["imap"]
    if not smtp.helo_name:
        smtp = sections["smtp"] = dataclasses.replace(
            smtp, helo_name=default_helo_name(socket.gethostname(), sections["sender"].domain)
        )
    for name, server in (("smtp", smtp), ("imap", imap)):
        if server.username and server.security == "none" and server.host not in ("localhost", "127.0.0.1", "::1"):
            raise ConfigError(
                source,
                f"{name}.security",
                f'expected "starttls" or "ssl": a password must not cross the network to {server.host} unencrypted',
            )
    if imap.host and not imap.username:
        raise ConfigError(source, "imap.username", "missing; expected the login of the unsubscribe mailbox")
    if imap.processed_mailbox == imap.mailbox:
        raise ConfigError(source, "imap.processed_mailbox", "expected a folder other than imap.mailbox")
    _check_dkim(sections["dkim"], sections["sender"], source)
    bounces: BouncesConfig = sections["bounces"]
    local = bounces.return_address(sections["sender"]).rpartition("@")[0]
    if bounces.verp and bounces.delimiter in local:
        raise ConfigError(
            source,
            "bounces.address",
            f"expected a local part without the delimiter {bounces.delimiter!r}: the mail server would cut "
            f"{local!r} at it and deliver bounces elsewhere (choose another [bounces] delimiter or address)",
        )
    if bounces.verp and len(local) + len(bounces.delimiter) + VERP_CODE_CHARS > 64:
        raise ConfigError(
            source,
            "bounces.address",
            f"expected a shorter local part than {local!r}: with a VERP code it must fit in the "
            "64 characters SMTP allows (use bounces@..., or set verp = false)",
        )
    web: WebConfig = sections["web"]
    if web.secret_key and len(web.secret_key) < 32:
        raise ConfigError(
            source,
            "web.secret_key" + (" (from $NEWSLETTER_SECRET_KEY)" if "secret_key" in from_env.get("web", {}) else ""),
            "expected at least 32 characters of random text "
            "(try: python -c 'import secrets; print(secrets.token_urlsafe(32))')",
        )
    if source != "<memory>":
        # Relative paths mean "next to the config file", not "wherever cron's cwd is".
        base = Path(source).resolve().parent
        store: StoreConfig = sections["store"]
        relative = store.url.removeprefix("sqlite:///")
        if store.url.startswith("sqlite:///") and relative and not relative.startswith(("/", ":memory:")):
            sections["store"] = StoreConfig(url=f"sqlite:///{(base / relative).as_posix()}")
        delivery: DeliveryConfig = sections["delivery"]
        sections["delivery"] = dataclasses.replace(delivery, maildir=str(base / delivery.maildir))
        preflight: PreflightConfig = sections["preflight"]
        screenshots = base / Path(preflight.screenshot_dir).expanduser()
        sections["preflight"] = dataclasses.replace(preflight, screenshot_dir=str(screenshots))
        bounces = sections["bounces"]
        if bounces.maildir:
            sections["bounces"] = dataclasses.replace(bounces, maildir=str(base / bounces.maildir))
        dkim: DkimConfig = sections["dkim"]
        sections["dkim"] = dataclasses.replace(
            dkim,
            key_file=str(base / dkim.key_file) if dkim.key_file else "",
            ed25519_key_file=str(base / dkim.ed25519_key_file) if dkim.ed25519_key_file else "",
        )
        newsletter: NewsletterConfig = sections["newsletter"]
        if newsletter.templates:
            sections["newsletter"] = dataclasses.replace(newsletter, templates=str(base / newsletter.templates))
        feeds = tuple(
            feed if "://" in feed.url else dataclasses.replace(feed, url=str(base / Path(feed.url).expanduser()))
            for feed in feeds
        )
    return Config(**sections, feeds=feeds, source=source)


def _check_dkim(dkim: DkimConfig, sender: SenderConfig, source: str) -> None:
    """A signing setup that could not sign, or whose signature DMARC would not count, is refused now."""
    if not dkim.enabled:
        return
    if not dkim.selector:
        raise ConfigError(source, "dkim.selector", "missing; expected the selector of the published key")
    if not (dkim.key_file or dkim.key):
        raise ConfigError(
            source, "dkim.key_file", "missing; expected a PEM key file, or the key in $NEWSLETTER_DKIM_KEY"
        )
    if bool(dkim.ed25519_selector) != bool(dkim.ed25519_key_file or dkim.ed25519_key):
        raise ConfigError(
            source,
            "dkim.ed25519_selector",
            "expected both ed25519_selector and ed25519_key_file (or $NEWSLETTER_DKIM_ED25519_KEY), or neither",
        )
    if dkim.ed25519_selector and dkim.ed25519_selector.lower() == dkim.selector.lower():
        raise ConfigError(
            source, "dkim.ed25519_selector", "expected a selector other than dkim.selector: each key has its own record"
        )
    if dkim.ed25519_selector and dkim.algorithm == "ed25519-sha256":
        raise ConfigError(
            source, "dkim.ed25519_selector", 'a second ed25519 signature goes with algorithm = "rsa-sha256"'
        )
    if sender.domain != dkim.domain and not sender.domain.endswith("." + dkim.domain):
        raise ConfigError(
            source,
            "dkim.domain",
            f"expected {sender.domain!r} or a parent of it: DMARC counts only a signature aligned with the From domain",
        )


def find_config_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str], cwd: Path | None = None) -> Path:
    """``--config``, then ``$NEWSLETTER_CONFIG``, then ``./newsletter.toml``."""
    if path:
        return Path(path)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    candidate = (cwd or Path.cwd()) / DEFAULT_CONFIG_NAME
    if candidate.exists():
        return candidate
    raise ConfigError(
        DEFAULT_CONFIG_NAME,
        None,
        "no configuration found: pass --config PATH, set $NEWSLETTER_CONFIG, or run `newsletter init` here",
    )


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Find, read and validate the configuration; the one place that touches the file and env."""
    env = os.environ if environ is None else environ
    found = find_config_path(path, env)
    try:
        limit = f"{MAX_CONFIG_BYTES // 1_000_000} MB"
        if found.exists() and not found.is_file():  # a FIFO or a device would block or never end
            raise ConfigError(
                str(found), None, f"is not a regular file (a configuration is a text file of {limit} at most)"
            )
        with found.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(str(found), None, f"is larger than {limit}; is it the right file?")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(found), None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(found), None, f"cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(found), None, f"is not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(str(found), None, "is not valid TOML (nested too deeply)") from None
    return parse_config(data, str(found), env)
