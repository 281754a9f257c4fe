"""The one exception tree of the newsletter sender.

Every error a user can cause or meet is a ``NewsletterError``; the CLI prints it as one
line and exits non-zero, so nothing below the interfaces needs to know about exit codes.

    NewsletterError
    ├── ConfigError                  bad or missing configuration (exit 2)
    ├── UsageError                   a command was asked for something impossible (exit 2)
    │   ├── InvalidArticleError      an article's field is missing, malformed or out of range
    │   ├── ArticleNotFoundError     no article has that id or URL (or several share the URL)
    │   ├── EditionFrozenError       the edition has started going out; its content is fixed
    │   ├── ValidationError          one field or row holds a value that cannot be stored (``field`` names it)
    │   ├── InvalidAddressError      (subscribers.py) not an email address we can send to
    │   ├── InvalidTextError         (subscribers.py) a name or source with control characters
    │   ├── NotListedError           (subscribers.py) addresses not on the list; nothing changed
    │   ├── ConsentRequiredError     (subscribers.py) re-activating a reader who left, unconfirmed
    │   ├── NotPendingError          (subscribers.py) a confirmation resent for a reader not pending
    │   ├── UnknownStaffError        (web/auth.py) no staff account has that name
    │   └── UnknownFeedbackKindError (bounce_policy.py) a report kind other than hard/soft/sender/complaint
    ├── StoreError                   the database cannot be reached or is not migrated
    │   ├── LockHeldError            another process is sending this edition
    │   └── ConflictError            another process changed the same rows first: try again
    ├── PreflightHeldError           preflight found errors in an edition about to go out, which holds it
    ├── RenderError                  a template failed to render
    ├── MessageError                 a message cannot be built
    │   └── HeaderInjectionError     CR/LF or NUL in a header value
    ├── TokenError                   a signed link is invalid, expired or for another purpose
    │   └── TokenExpiredError        a genuine link, older than its lifetime
    ├── ArticleImportError           an article source cannot be read at all (see articles.py)
    ├── MailboxError                 the bounce/unsubscribe mailbox (Maildir, mbox, IMAP) cannot be read
    ├── DkimError                    a DKIM key cannot be used, or a signature does not verify
    └── DeliveryError                SMTP or Maildir delivery failed
        ├── TemporaryDeliveryError   4xx, timeouts, dropped connections: retry later
        ├── PermanentDeliveryError   5xx for one recipient: do not retry
        └── SystemicDeliveryError    the whole run must stop (auth, unreachable, all failing)
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Raised for every failure the user should see as one line rather than a traceback."""

    exit_code = 1


class ConfigError(NewsletterError):
    """Raised when configuration is missing, malformed or inconsistent."""

    exit_code = 2

    def __init__(self, source: str, key: str | None, expected: str) -> None:
        self.source = source
        self.key = key
        self.expected = expected
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {expected}")


class UsageError(NewsletterError):
    """Raised when a command is given arguments it cannot act on."""

    exit_code = 2


class ValidationError(UsageError):
    """Raised when one named field (an option, a form field, a CSV row's column) holds an unusable value.

    ``field`` names where the value came from ("--timezone", "line 4, column timezone") and
    ``reason`` is a short fixed word ("unknown", "control", "too-long", "not-a-place"), so a
    form or an importer can word its own message from the attributes, never from the text.
    """

    def __init__(self, field: str, problem: str, *, reason: str = "invalid") -> None:
        self.field = field
        self.problem = problem
        self.reason = reason
        super().__init__(f"{field}: {problem}")


class InvalidArticleError(UsageError):
    """Raised when an article (imported, typed or edited) has a field it cannot be stored with."""

    def __init__(self, guid: str, reason: str) -> None:
        self.guid = guid
        self.reason = reason
        super().__init__(f"article {guid[:80]}: {reason}")


class ArticleNotFoundError(UsageError):
    """Raised when an article named by id or URL does not exist, or the URL names several."""

    def __init__(self, ref: str, candidates: tuple[int, ...] = ()) -> None:
        self.ref = ref
        self.candidates = candidates
        if candidates:
            ids = ", ".join(str(c) for c in candidates)
            message = f"{ref} is the URL of several articles ({ids}): name one by its id"
        else:
            message = f"no article has the id or URL {ref}; `newsletter articles list` shows them"
        super().__init__(message)


class EditionFrozenError(UsageError):
    """Raised when a change would alter an edition that has started going out to readers."""

    def __init__(self, day: object, status: str, what: str) -> None:
        self.day = day
        self.status = status
        super().__init__(f"the edition of {day} is {status}, so its stories are fixed: {what}")


class StoreError(NewsletterError):
    """Raised when the database cannot be reached, is not migrated or refuses a write."""


class LockHeldError(StoreError):
    """Raised when another process holds the send lock of an edition."""

    def __init__(self, name: str, holder: str) -> None:
        self.name = name
        self.holder = holder
        super().__init__(
            f"{name} is being sent by {holder}; not sending it twice (wait for that run to finish, or stop it first)"
        )


class ConflictError(StoreError):
    """Raised when a write finds that another process changed the rows it relied on."""


class PreflightHeldError(NewsletterError):
    """Raised when preflight finds errors in an edition about to go out and ``block_on_error`` holds it.

    ``errors`` holds each error as (check, message), for whoever shows them; the message
    names the first and the command that sends the edition anyway.
    """

    def __init__(self, day: object, errors: tuple[tuple[str, str], ...]) -> None:
        self.day = day
        self.errors = errors
        self.override = f"newsletter send --date {day} --ignore-preflight"
        count = f"{len(errors)} error" + ("s" if len(errors) != 1 else "")
        first = f" ({errors[0][0]}: {errors[0][1]}{' and more' if len(errors) > 1 else ''})" if errors else ""
        super().__init__(
            f"the edition of {day} is held: preflight found {count}{first}; fix them, "
            f"or `{self.override}` sends it as it is"
        )


class RenderError(NewsletterError):
    """Raised when a template is missing or fails while rendering."""


class MessageError(NewsletterError):
    """Raised when a message cannot be built for a recipient."""


class HeaderInjectionError(MessageError):
    """Raised when a header value carries CR, LF or NUL, which could forge headers."""

    def __init__(self, header: str, value: str) -> None:
        self.header = header
        super().__init__(f"refusing {header} value {value[:60]!r}: it contains a line break")


class TokenError(NewsletterError):
    """Raised when a signed link is forged, expired or meant for another purpose."""


class TokenExpiredError(TokenError):
    """Raised when a signed link is genuine but older than its lifetime (a new one can be sent)."""


class ArticleImportError(NewsletterError):
    """Raised when an article source cannot be read at all (a bad item only gets rejected)."""


class MailboxError(NewsletterError):
    """Raised when the mailbox of bounces and emailed unsubscribe requests cannot be reached or read."""


class DkimError(NewsletterError):
    """Raised when a DKIM key cannot be read or used, or a signature fails its check.

    ``reason`` is a short fixed word callers may branch on ("key", "verify", "dns").
    """

    def __init__(self, message: str, reason: str = "key") -> None:
        super().__init__(message)
        self.reason = reason
        self.exit_code = 2 if reason == "key" else 1  # a key that cannot be used is a configuration problem


class DeliveryError(NewsletterError):
    """Raised when a message could not be handed to the mail server."""

    def __init__(self, message: str, code: int | None = None, stage: str = "", enhanced_status: str = "") -> None:
        """:param code: the server's reply code; :param stage: the SMTP step that failed
        ("connect", "mail", "rcpt", "data", "commit"); :param enhanced_status: the RFC 3463
        status the reply carried ("5.1.1"), or "" (``transports.classify_reply`` reads it)."""
        self.code = code
        self.stage = stage
        self.enhanced_status = enhanced_status
        super().__init__(message)


class TemporaryDeliveryError(DeliveryError):
    """Raised for 4xx replies, timeouts and dropped connections: the same message may succeed later."""


class PermanentDeliveryError(DeliveryError):
    """Raised for a 5xx reply about one message or recipient: retrying will not help."""

    @property
    def is_hard_bounce(self) -> bool:
        """A 5.1.x status at RCPT (no such mailbox or domain) means the address itself is dead.

        Other 5xx replies (policy, content, size) say nothing certain about the address, so
        they fail this one message without touching the subscriber.
        """
        return self.stage == "rcpt" and self.enhanced_status.startswith("5.1.")


class SystemicDeliveryError(DeliveryError):
    """Raised when sending cannot go on at all: bad credentials, server unreachable, everything failing."""
