"""What a message in the bounce mailbox says: a bounce, a complaint, an automatic reply, or a person.

After the first SMTP hop every failure comes back by mail: delivery status notifications
(RFC 3464, and the many older formats that predate it), feedback-loop complaints (ARF,
RFC 5965) and the vacation notices that answer every edition. ``classify`` reads one such
message and says, as plain data, which readers it names and why; deciding what that does to
a reader is ``bounce_policy``'s job, and matching a return code to a delivery (with the
secret) is the mailbox reader's. Keeping this module pure (no I/O, no database, no config)
lets a corpus of real-world reports pin its behaviour down.

The mailbox is written to by strangers, so ``classify`` never raises and never takes long:
it looks at no more than ``_MAX_PARTS`` MIME parts (iteratively, so a message nested a
hundred thousand deep costs no more than a flat one) and reads no more than ``_MAX_TEXT``
characters of text. A message it cannot read is UNKNOWN, with the reason as its diagnostic.

Rules for the kind of a failed recipient, in ``classify_status``:

1. Text that blames the sender (a blocklist, spam or content, DMARC/SPF/DKIM, rate limits,
   relaying denied) makes it SENDER whatever the code says: "550 5.1.1 blocked by Spamhaus"
   is about our reputation, not the reader's mailbox. Greylisting is SOFT, checked first.
2. Any 4.x.x status is SOFT (the reader may be reachable tomorrow).
3. A specific code decides next: 5.1.1/5.1.2/5.1.3/5.1.6/5.1.10/5.2.1 are HARD;
   5.2.2/5.2.3/5.3.4 (full, too big) are SOFT; 5.7.x and 5.6.x are SENDER, unless the text
   plainly says the mailbox does not exist; 5.4.4 (no route to the domain) is HARD; 5.4.1 is
   HARD when it says the recipient was refused (as Office 365 does) and SOFT otherwise;
   other 5.4.x and 5.3.x are SOFT; 5.1.7/5.1.8 (the sender's address) are SENDER.
4. A generic code (5.0.0, 5.1.0, 5.2.0, 5.5.x, none) defers to the text: "user unknown"
   is HARD, "over quota" SOFT, "try again later" SOFT. A permanent failure that says
   nothing more is HARD, a temporary one SOFT.

Complaints are ARF reports (the reader from Original-Rcpt-To, else the returned original's
To), Outlook.com's feedback loop (the original attached, the reader in
X-HmXmrOriginalRecipient) and Apple Mail's unsubscribe button (``feedback_type``
"opt-out", the reader in From). An ARF ``auth-failure`` report is SENDER: it says how we
signed, not that anyone complained. A report naming nobody but saying why (the return code
may still say who) gives one ``Failed`` with address "".
"""

from __future__ import annotations

import enum
import logging
import re
import unicodedata
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.utils import getaddresses

from flufl.bounce import all_failures

# flufl.bounce logs a full traceback when one of its detectors trips on malformed input;
# classify() already treats that as "nothing found", and a traceback must never reach
# the person running the command.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL + 1)

__all__ = ["Failed", "Finding", "Kind", "classify", "classify_status"]

_MAX_PARTS = 50  # MIME parts looked at, in document order
_MAX_TEXT = 300_000  # characters of text read from the whole message
_MAX_PART_TEXT = 100_000  # characters of text read from one part
_MAX_DIAGNOSTIC = 300
_MAX_RECIPIENTS = 100
_MAX_HEADERS = 500  # outer header fields; more than this and flufl.bounce is not asked
_MAX_CODES = 20


class Kind(enum.StrEnum):
    """What a message, or one recipient in it, amounts to."""

    HARD = "hard"  # user unknown, host/domain unknown, mailbox moved/disabled/closed
    SOFT = "soft"  # mailbox full, any 4.x.x, expired/delayed, greylisted, message too large
    SENDER = "sender"  # our problem, not the reader's: spam/policy, DMARC/SPF/DKIM, blocklists, rate limits
    COMPLAINT = "complaint"  # an ARF feedback report or a provider's feedback loop
    AUTOREPLY = "autoreply"  # vacation, out-of-office, challenge-response, read receipts, success reports
    UNKNOWN = "unknown"  # a person writing, or an automatic message nothing could be read from


@dataclass(frozen=True)
class Failed:
    """One recipient named by a report."""

    address: str  # lower-cased addr-spec, "" if none could be read
    kind: Kind  # HARD, SOFT or SENDER (COMPLAINT for the reported recipient of an ARF)
    status: str  # RFC 3463 enhanced status "5.1.1", or "" when none
    diagnostic: str  # one line, at most 300 characters, control characters removed


@dataclass(frozen=True)
class Finding:
    """Everything ``classify`` could read from one message."""

    kind: Kind  # the message's class: for reports, that of the first recipient
    recipients: tuple[Failed, ...]
    status: str  # status of the first recipient (or "")
    diagnostic: str  # diagnostic of the first recipient (or a short summary)
    return_codes: tuple[str, ...]  # VERP codes from the address the report was delivered to
    message_ids: tuple[str, ...]  # Message-IDs of the returned original message, "<...>" kept
    delivery_refs: tuple[str, ...]  # X-Newsletter-Delivery values in the returned original
    feedback_type: str  # ARF Feedback-Type ("abuse", "fraud", ...) for complaints, else ""
    automatic: bool  # the message says it is automatic (headers, null sender, report type), or is a report


# --- the status and text rules --------------------------------------------------------

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d])")
_REPLY_CODE = re.compile(r"(?<![\d.#-])([45]\d\d)(?:[ -]|$)", re.MULTILINE)

_GREYLIST = re.compile(r"gr[ae]y[- ]?list", re.IGNORECASE)
_SENDER_TEXT = re.compile(
    r"spamhaus|spamcop|barracuda|sorbs|spews|surbl|uribl|\bcbl\b|\brbl\b|dnsbl|\bdnsrbl|blocklist|blacklist"
    r"|block[ -]list|black[ -]list|(?<!not )listed (?:at|in|on|by)|\bblocked\b(?! by (?:the )?recipient)|\bbanned\b"
    r"|reputation|\bspam\b|spam message|spamassassin|junk mail|unsolicited|bulk (?:e-?)?mail"
    r"|\bdmarc\b|\bspf\b|\bdkim\b|sender policy framework|authenticat\w* (?:fail|required|check)"
    r"|not authenticated|unauthenticated|relay(?:ing)? (?:denied|not (?:permitted|allowed)|access denied)"
    r"|relay(?:ing)? prohibited|not permitted to relay|unable to relay|relay not permitted|relaying denied"
    r"|we do not relay|not allowed to relay|(?:policy|policies)(?: reasons| violation| rejection|\b)"
    r"|content (?:rejected|filter|policy)|message content|rejected (?:due to|because of) (?:content|spam)"
    r"|virus|malware|phish|\btoo many (?:messages|connections|recipients|mails|emails)|rate[- ]?limit"
    r"|throttl|sending rate|send(?:ing)? limit|\bspeeding\b|exceeded the (?:daily |hourly )?(?:rate|limit)"
    r"|reverse dns|reverse (?:lookup|hostname)|\bptr\b|rdns|(?:invalid|bad) e?helo"
    r"|e?helo \S* ?(?:rejected|refused|invalid)"
    r"|sender address rejected|not accepting (?:mail|messages|e-?mail) from|(?:are|is) not accepted here"
    r"|without [\w-]+:? fields?|no [\w-]+ field given|(?:header|field)s? (?:missing|required)|missing (?:required )?"
    r"(?:header|field)|(?:violat\w*|conform\w* to|compliant with) rfc ?\d+|non-?compliant|members-only|non-member"
    r"|sender (?:domain|address) (?:rejected|invalid|not)|sender verify|sender verification failed"
    r"|client host rejected|access denied\W+(?:ip|client|sender)|denied by (?:policy|sender)"
    r"|not accepted(?: here)? from|administrative prohibition|poor reputation|low reputation|suspicious"
    r"|mail from .{0,40} (?:rejected|refused)|refused to talk|do not accept mail from|message (?:was )?blocked"
    r"|is not allowed to send|not authorized to send|rejected by .{0,30}filter"
    r"|(?:host|network|ip) (?:network )?not allowed",
    re.IGNORECASE,
)
_FULL_TEXT = re.compile(
    r"mailbox (?:is )?full|mail ?box full|mailfolder is full|over ?quota|quota exceed|exceeded (?:\w+ )?quota"
    r"|exceed(?:s|ed)? (?:the )?(?:storage|its|their|his|her) (?:allocation|quota|limit)|storage allocation"
    r"|insufficient (?:storage|space|disk)|(?:have|has) enough (?:disk )?space|not enough (?:storage|space)"
    r"|space not enough|mailbox size|mailbox has exceeded"
    r"|disk quota|\bquota\b|too large|too big|size (?:exceeds|limit)|message size|exceeds (?:the )?(?:maximum )?size"
    r"|user is over|is over (?:the )?(?:storage |disk )?(?:quota|limit)|out of (?:disk )?space|full mailbox",
    re.IGNORECASE,
)
_HARD_TEXT = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|account|local user|person|domain|host)"
    r"|unknown (?:recipient|mailbox|address|local[- ]part|alias|account|e-?mail)|user not (?:found|known)"
    r"|(?:mailbox|recipient|address|user|account|e-?mail|addressee|destination)\W{0,3}(?:\S+\s+){0,4}?"
    r"(?:does ?n[o']t exist|not exist|not found|is unknown|unknown|not valid|invalid|unavailable|disabled"
    r"|deactivated|inactive|suspended|closed|expired|terminated|no longer|has been (?:removed|deleted|disabled))"
    r"|does ?n[o']t exist|doesn't exist|invalid (?:recipient|mailbox|address|user|account)"
    r"|not (?:a )?valid (?:mailbox|recipient|user|address|account)|unrouteable address|undeliverable address"
    r"|(?:recipient|address) (?:rejected|refused|not accepted|invalid|unknown)|rejected\W+recipient"
    r"|no mailbox|mailbox not (?:found|available)|no (?:mail)?box (?:here|by that name)|not our customer"
    r"|host (?:not found|unknown)|unknown host|host or domain name not found|domain (?:not found|does not exist"
    r"|unknown|is not valid|name not found)|name or service not known|no mx|nxdomain|non-existent"
    r"|nonexistent|unknown or illegal alias|has moved|moved permanently|no longer (?:valid|available|active"
    r"|in use|with)|account (?:has been )?(?:closed|disabled|removed|expired|suspended|blocked|locked)"
    r"|invalid address|bad (?:destination )?(?:mailbox|address)|unknown local|not a (?:known|valid) user"
    r"|address (?:not|isn't) (?:found|known|listed)|couldn't be found|could not be found|not listed in"
    r"|retired|mailbox unavailable|no valid recipients|unknown to (?:the )?(?:system|server)"
    r"|this user doesn|recipient not found|access denied|no longer exists",
    re.IGNORECASE,
)
_SOFT_FIRST = re.compile(
    r"host not found, try again|loops? back to myself|mail loop|message looping|routing loop|too many hops"
    r"|failed \d+ attempts|maximum delivery attempts|aborted after \d|command died|not been collected",
    re.IGNORECASE,
)
_SOFT_TEXT = re.compile(
    r"try (?:again )?later|temporar|deferred|delayed|delivery (?:has been )?delay|timed? ?out|connection"
    r" (?:refused|reset|lost|timed|dropped|was dropped)|connection to mail exchanger failed|did not respond"
    r"|system error|internal error|processing error|error while being processed|postponed"
    r"|will (?:continue|keep) (?:trying|to try)|still trying|retry|expired"
    r"|could not be delivered (?:for|within|in)|not (?:yet )?been delivered|has not been able|queue|resources"
    r"|too busy|service (?:not )?available|unavailable at the moment|try to send it again|not reachable"
    r"|unreachable|no route to host|network|not responding|not delivered within",
    re.IGNORECASE,
)

_HARD_CODES = {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1", "5.1.4"}
_SOFT_CODES = {"5.2.2", "5.2.3", "5.3.4"}
_SENDER_CODES = {"5.1.7", "5.1.8"}


def _text_kind(text: str) -> Kind | None:
    """What the words alone say, or None when they say nothing we know."""
    if _GREYLIST.search(text):
        return Kind.SOFT
    if _SENDER_TEXT.search(text):
        return Kind.SENDER
    if _FULL_TEXT.search(text) or _SOFT_FIRST.search(text):
        return Kind.SOFT
    if _HARD_TEXT.search(text):
        return Kind.HARD
    if _SOFT_TEXT.search(text):
        return Kind.SOFT
    return None


def classify_status(status: str, text: str) -> Kind:
    """The kind of one failed recipient, from its RFC 3463 status and its reply text.

    The code is read first, the text decides where the code is generic, and text blaming
    the sender wins over any code (see the module docstring for the whole table). A
    failure that says nothing is HARD: a permanent refusal we cannot explain is still one.

    :param status: an enhanced status such as "5.1.1"; a bare SMTP reply code ("550") or ""
        is taken from ``text`` when it has one.
    :param text: the diagnostic (the remote server's reply), or any words around it.
    """
    text = _SPACES.sub(" ", text or "")[:_MAX_PART_TEXT]
    code = _normal_status(status) or _first_status(text)
    words = _text_kind(text)
    if words is Kind.SENDER or (words is Kind.SOFT and _GREYLIST.search(text)):
        return words
    if not code:
        reply = _REPLY_CODE.search(status or "") or _REPLY_CODE.search(text)
        if words is not None:
            return words
        if reply and reply.group(1).startswith("4"):
            return Kind.SOFT
        return Kind.HARD
    klass, subject, detail = code.split(".")
    if klass == "4":
        return Kind.SOFT
    if klass == "2":
        return words or Kind.HARD
    if code in _HARD_CODES:
        return Kind.HARD
    if code in _SOFT_CODES:
        return Kind.SOFT
    if code in _SENDER_CODES:
        return Kind.SENDER
    if subject == "7" or subject == "6":
        if words is Kind.HARD and detail != "0" and _HARD_TEXT.search(text) and not _FULL_TEXT.search(text):
            return Kind.HARD
        if subject == "6" and words is Kind.SOFT:
            return Kind.SOFT
        return Kind.SENDER
    if code == "5.4.4":
        return Kind.SOFT if words is Kind.SOFT and _FULL_TEXT.search(text) else Kind.HARD
    if code == "5.4.1":
        return Kind.HARD if words is Kind.HARD else Kind.SOFT
    if subject in ("3", "4"):
        return words if words in (Kind.HARD, Kind.SOFT) else Kind.SOFT
    return words or Kind.HARD


def _normal_status(status: str) -> str:
    """ "5.1.1" from "5.1.1", "#5.1.1" or "5.1.1 (user unknown)"; "" when there is none."""
    return _first_status(status or "")


def _first_status(text: str) -> str:
    match = _STATUS.search(text)
    if not match:
        return ""
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"


# --- reading a message that may be anything -------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACES = re.compile(r"\s+")
# Bounded repeats keep a search linear: a long run of letters with no "@" would otherwise
# be rescanned from every position (quadratic on a 100 KB line).
_ADDR_SPEC = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.\[\]:_-]{0,253}[A-Za-z0-9\]]")


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; the raw value when they are malformed."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - any malformed encoded word leaves the raw text
        return value


def _clean(value: str, limit: int = _MAX_DIAGNOSTIC) -> str:
    """One line: encoded words decoded, control characters gone, whitespace collapsed, capped."""
    value = _decode_words(value[: limit * 8])
    value = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in _CONTROL.sub(" ", value))
    return _SPACES.sub(" ", value).strip()[:limit]


def _raw_headers(part: Message, name: str) -> list[str]:
    """The unparsed values of one header: parsing a stranger's header must not raise."""
    name = name.lower()
    try:
        return [str(value) for key, value in part.raw_items() if key.lower() == name]
    except Exception:  # noqa: BLE001 - a part without readable headers has none
        return []


def _header(part: Message, name: str) -> str:
    values = _raw_headers(part, name)
    return _clean(values[0], 998) if values else ""


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # noqa: BLE001 - unreadable Content-Type is plain text by RFC 2045
        return "text/plain"


def _param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:  # noqa: BLE001
        return ""
    if isinstance(value, tuple):
        value = value[2]
    return str(value or "").lower()


def _children(part: Message) -> list[Message]:
    if not part.is_multipart():
        return []
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []


@dataclass(frozen=True)
class _Part:
    part: Message
    ctype: str
    nesting: int  # how many message/rfc822 (or returned-original) parts enclose it


def _walk(msg: Message) -> tuple[list[_Part], bool]:
    """The first ``_MAX_PARTS`` parts in document order, without recursion; and whether more were left."""
    found: list[_Part] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        if len(found) >= _MAX_PARTS:
            return found, True
        part, nesting = stack.pop()
        ctype = _content_type(part)
        found.append(_Part(part, ctype, nesting))
        if ctype == "message/delivery-status" or (ctype.startswith("message/") and ctype != "message/rfc822"):
            continue  # field blocks, read by _field_blocks
        inner = nesting + 1 if ctype == "message/rfc822" else nesting
        children = _children(part)
        stack.extend((child, inner) for child in reversed(children[: _MAX_PARTS * 2]))
    return found, False


def _payload_text(part: Message, limit: int = _MAX_PART_TEXT) -> str:
    """A leaf part's text, decoded with its charset when Python knows it, else UTF-8 or Latin-1."""
    try:
        raw = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - undecodable transfer encoding: use what is there
        raw = None
    if raw is None:
        payload = part.get_payload()
        return payload[:limit] if isinstance(payload, str) else ""
    raw = raw[: limit * 4]
    charset = _param(part, "charset") or "utf-8"
    for candidate in (charset, "utf-8"):
        try:
            return raw.decode(candidate)[:limit]
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return raw.decode("latin-1")[:limit]


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status or feedback-report part, names lower-cased."""
    blocks: list[dict[str, str]] = []
    children = _children(part)
    if children:
        for block in children[:_MAX_RECIPIENTS]:
            fields: dict[str, str] = {}
            for name in _header_names(block):
                fields.setdefault(name, _header(block, name))
            if fields:
                blocks.append(fields)
        if blocks:
            return blocks
    text = _payload_text(part)
    for chunk in re.split(r"\r?\n\s*\r?\n", text)[:_MAX_RECIPIENTS]:
        fields = {}
        try:
            parsed = HeaderParser().parsestr(chunk.strip() + "\n")
        except Exception:  # noqa: BLE001 - a block we cannot parse names nobody
            continue
        for name in _header_names(parsed):
            fields.setdefault(name, _header(parsed, name))
        if fields:
            blocks.append(fields)
    return blocks


def _header_names(part: Message) -> list[str]:
    try:
        return [key.lower() for key, _ in part.raw_items()]
    except Exception:  # noqa: BLE001
        return []


def _address(value: str) -> str:
    """The addr-spec in a recipient field such as "rfc822; <Ann@Example.org>", lower-cased."""
    value = _clean(value, 998)
    if ";" in value:
        value = value.split(";", 1)[1]
    match = _ADDR_SPEC.search(value)
    if match:
        return match.group(0).strip(".").lower()
    value = value.strip().strip("<>").strip()
    return value.lower() if value and " " not in value else ""


# --- the envelope address a report was sent to ----------------------------------------

_ENVELOPE_HEADERS = (
    "to",
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "x-envelope-to",
    "x-rcpt-to",
    "x-delivered-to",
    "original-recipient",
    "x-original-recipient",
    "return-path",
    "resent-to",
    "cc",
)


def _return_codes(msg: Message, return_local: str, delimiter: str) -> tuple[str, ...]:
    """VERP codes in the outer headers: ``{return_local}{delimiter}CODE@domain`` gives CODE."""
    if not return_local:
        return ()
    pattern = re.compile(
        rf"(?<![A-Za-z0-9._%+=-]){re.escape(return_local)}{re.escape(delimiter)}([A-Za-z0-9-]+)@",
        re.IGNORECASE,
    )
    codes: list[str] = []
    for name in _ENVELOPE_HEADERS:
        for value in _raw_headers(msg, name)[:50]:
            if len(codes) >= _MAX_CODES:
                break
            for match in pattern.finditer(value[:4000]):
                code = match.group(1).lower()
                if code not in codes:
                    codes.append(code)
    return tuple(codes[:_MAX_CODES])


# --- is it automatic? -----------------------------------------------------------------

_ROBOT_LOCAL = re.compile(
    r"^(?:mailer-?daemon|mail-?daemon|postmaster|no-?reply|do-?not-?reply|donotreply|noreply-\w+|"
    r"bounces?|auto-?reply|autoresponder|mailerdaemon|daemon|mail\.delivery|mdaemon|root)(?:[+.-].*)?$",
    re.IGNORECASE,
)
_PRECEDENCE = {"bulk", "junk", "list", "auto_reply", "auto-reply"}
_AUTO_FLAGS = ("x-autoreply", "x-autorespond", "x-auto-response-suppress", "x-autogenerated", "x-autoresponder")


def _sender_locals(msg: Message) -> list[str]:
    values = _raw_headers(msg, "from") + _raw_headers(msg, "sender")
    locals_: list[str] = []
    for _name, addr in getaddresses([_decode_words(v)[:998] for v in values]):
        if "@" in addr:
            locals_.append(addr.rsplit("@", 1)[0])
        elif addr:
            locals_.append(addr)
    return locals_


def _is_automatic(msg: Message) -> bool:
    """Whether the outer message says it was written by a program (RFC 3834 and common practice)."""
    auto = _header(msg, "auto-submitted").lower()
    if auto and not auto.startswith("no"):
        return True
    if _header(msg, "precedence").lower() in _PRECEDENCE:
        return True
    if any(v.strip().replace(" ", "") == "<>" for v in _raw_headers(msg, "return-path")):
        return True
    if any(_ROBOT_LOCAL.match(local) for local in _sender_locals(msg)):
        return True
    if _content_type(msg) == "multipart/report":
        return True
    return any(_raw_headers(msg, name) for name in (*_AUTO_FLAGS, "x-failed-recipients"))


# --- the returned original -------------------------------------------------------------

_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global")
_TEXT_MSGID = re.compile(r"^\s*Message-I[dD]\s*:\s*(<[^<>\s]{1,250}>)", re.MULTILINE | re.IGNORECASE)
_TEXT_REF = re.compile(r"^\s*X-Newsletter-Delivery\s*:\s*(\S{1,250})", re.MULTILINE | re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|returned to sender|delivery (?:status|failure|failed|problem|report"
    r"|notification)|failure notice|mail delivery|non[- ]?delivery|not delivered|could not be delivered"
    r"|unzustellbar|nicht zustellbar|non remis|mail (?:system )?error|delivery error|message (?:not delivered|"
    r"delivery)|rejected|nondeliverable|warning: could not|mail failure|bounce",
    re.IGNORECASE,
)


def _original_headers(part: _Part) -> Message | None:
    """The headers of a returned original, from message/rfc822 or text/rfc822-headers."""
    if part.ctype in ("message/rfc822", "message/global"):
        children = _children(part.part)
        if children:
            return children[0]
    text = _payload_text(part.part, 64_000)
    try:
        return HeaderParser().parsestr(text.split("\n\n", 1)[0] + "\n")
    except Exception:  # noqa: BLE001
        return None


def _originals(parts: list[_Part]) -> list[Message]:
    found = []
    for part in parts:
        if part.ctype in _ORIGINAL_TYPES:
            headers = _original_headers(part)
            if headers is not None:
                found.append(headers)
    return found


def _references(originals: list[Message], texts: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Message-IDs and X-Newsletter-Delivery values of the returned original(s), nearest first."""
    ids: list[str] = []
    refs: list[str] = []
    for original in originals:
        for value in _raw_headers(original, "message-id"):
            match = re.search(r"<[^<>\s]{1,250}>", value)
            if match and match.group(0) not in ids:
                ids.append(match.group(0))
        for value in _raw_headers(original, "x-newsletter-delivery"):
            ref = _clean(value, 250)
            if ref and ref not in refs:
                refs.append(ref)
    if not originals:
        for text in texts:
            ids.extend(m for m in _TEXT_MSGID.findall(text) if m not in ids)
            refs.extend(m for m in _TEXT_REF.findall(text) if m not in refs)
    return tuple(ids), tuple(refs)


# --- the classifier --------------------------------------------------------------------


def classify(msg: EmailMessage, *, return_local: str = "bounces", delimiter: str = "+") -> Finding:
    """Read one message from the bounce mailbox: who failed, how, and which sending it answers.

    Never raises: a message that cannot be read is UNKNOWN, with the reason as diagnostic.

    :param msg: the message as parsed with ``email.policy.default``.
    :param return_local: the local part of our envelope sender before the delimiter.
    :param delimiter: what separates ``return_local`` from the return code.
    """
    try:
        return _classify(msg, return_local, delimiter)
    except Exception as exc:  # noqa: BLE001 - classify never raises for a stranger's message
        try:
            automatic = _is_automatic(msg)
        except Exception:  # noqa: BLE001
            automatic = False
        return _finding(Kind.UNKNOWN, (), (), (), (), "", automatic, _clean(f"could not be read: {exc!r}"))


def _finding(
    kind: Kind,
    recipients: tuple[Failed, ...],
    codes: tuple[str, ...],
    ids: tuple[str, ...],
    refs: tuple[str, ...],
    feedback_type: str,
    automatic: bool,
    summary: str = "",
) -> Finding:
    first = recipients[0] if recipients else None
    return Finding(
        kind=kind,
        recipients=recipients,
        status=first.status if first else "",
        diagnostic=(first.diagnostic if first and first.diagnostic else summary)[:_MAX_DIAGNOSTIC],
        return_codes=codes,
        message_ids=ids,
        delivery_refs=refs,
        feedback_type=feedback_type,
        automatic=automatic,
    )


@dataclass
class _Reading:
    """The parts of a message split into what the report says and what it returns."""

    message: Message
    parts: list[_Part]
    truncated: bool
    oversized: bool  # too many parts, headers or characters for flufl.bounce, which reads everything
    texts: list[str]  # readable text of the report itself (not of a returned original), capped

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def _read(msg: Message) -> _Reading:
    parts, truncated = _walk(msg)
    texts: list[str] = []
    budget = _MAX_TEXT
    for part in parts:
        if budget <= 0:
            break
        if part.nesting or part.ctype not in ("text/plain", "text/html", "text/enriched"):
            continue
        attached = _param(part.part, "name") or "attachment" in _header(part.part, "content-disposition").lower()
        if attached and part.part is not msg:
            continue
        text = _payload_text(part.part, min(budget, _MAX_PART_TEXT))
        if part.ctype == "text/html":
            text = re.sub(r"<[^>]{0,2000}>", " ", text)
        budget -= len(text)
        texts.append(text)
    size = 0
    for part in parts:
        payload = part.part.get_payload() if not part.part.is_multipart() else ""
        size += len(payload) if isinstance(payload, str | bytes) else 0
    oversized = truncated or size > _MAX_TEXT or len(_header_names(msg)) > _MAX_HEADERS
    return _Reading(msg, parts, truncated, oversized, texts)


def _classify(msg: Message, return_local: str, delimiter: str) -> Finding:
    codes = _return_codes(msg, return_local, delimiter)
    automatic = _is_automatic(msg)
    reading = _read(msg)
    report_type = _param(msg, "report-type") if _content_type(msg) == "multipart/report" else ""

    feedback = _first_report(reading.parts, ("message/feedback-report",))
    if feedback is not None or report_type == "feedback-report":
        return _complaint(reading, feedback, codes)

    status_parts = _first_report(reading.parts, ("message/delivery-status", "message/global-delivery-status"))
    if status_parts is not None:
        finding = _from_dsn(reading, status_parts, codes)
        if finding is not None:
            return finding

    mdn = _first_report(reading.parts, ("message/disposition-notification",))
    if mdn is not None or report_type == "disposition-notification":
        return _from_mdn(reading, mdn, codes)

    non_arf = _non_arf_complaint(msg, reading, codes)
    if non_arf is not None:
        return non_arf

    bounced = _from_text(msg, reading, codes)
    if bounced is not None:
        return bounced

    if _is_autoreply(msg, reading, automatic):
        ids, refs = _references(_originals(reading.parts), [])
        return _finding(Kind.AUTOREPLY, (), codes, ids, refs, "", True, _clean(_header(msg, "subject")))

    ids, refs = _references(_originals(reading.parts), [])
    if status_parts is not None or (automatic and _looks_like_bounce(msg)):
        return _finding(Kind.UNKNOWN, (), codes, ids, refs, "", True, "a delivery report naming no recipient")
    summary = "an automatic message" if automatic else "a message written by a person"
    if reading.truncated:
        summary += f" (only its first {_MAX_PARTS} parts were read)"
    return _finding(Kind.UNKNOWN, (), codes, ids, refs, "", automatic, summary)


def _first_report(parts: list[_Part], ctypes: tuple[str, ...]) -> list[_Part] | None:
    """The report parts of the given types at the shallowest nesting, so a bounce of a bounce reads as the outer."""
    matching = [p for p in parts if p.ctype in ctypes]
    if not matching:
        return None
    top = min(p.nesting for p in matching)
    return [p for p in matching if p.nesting == top]


def _originals_below(reading: _Reading, nesting: int) -> list[Message]:
    """Originals returned by the report at this nesting, nearest first, then any deeper."""
    parts = [p for p in reading.parts if p.nesting >= nesting]
    return _originals(parts)


# --- RFC 3464 delivery status notifications -------------------------------------------

_NOT_FAILURES = {"delivered", "relayed", "expanded"}
_DIAGNOSTIC_TYPE = re.compile(r"\s*[A-Za-z][\w.-]{0,40}\s*;")


def _dsn_address(block: dict[str, str]) -> str:
    """The address a DSN names: the one we sent to (Original-Recipient) when it is an addr-spec, else the final one."""
    original = _address(block.get("original-recipient", ""))
    final = _address(block.get("final-recipient", "")) or _address(block.get("x-actual-recipient", ""))
    if "@" in original:
        return original
    return final or original


def _from_dsn(reading: _Reading, status_parts: list[_Part], codes: tuple[str, ...]) -> Finding | None:
    recipients: list[Failed] = []
    used: set[str] = set()
    delivered = 0
    report_text = "\n".join(
        _payload_text(p.part)
        for p in reading.parts
        if p.nesting == status_parts[0].nesting and p.ctype in ("text/plain", "text/html")
    )[:_MAX_TEXT]
    body = _before_original(report_text)
    for part in status_parts:
        blocks = _field_blocks(part.part)
        for block in blocks:
            if "final-recipient" not in block and "original-recipient" not in block:
                continue
            action = block.get("action", "").lower().split()[0] if block.get("action", "").strip() else ""
            if action in _NOT_FAILURES:
                delivered += 1
                continue
            address = _dsn_address(block)
            if "@" not in address:
                found = _flufl_failures(reading.message, reading.oversized)[1]
                address = next((a for a in found if a not in used), address)
            used.add(address)
            raw_diag = block.get("diagnostic-code", "")
            typed = _DIAGNOSTIC_TYPE.match(raw_diag)  # "smtp; 550 ...", "X-Postfix; ...": the type goes
            diag = _clean(raw_diag[typed.end() :] if typed else raw_diag)
            status = _normal_status(block.get("status", "")) or _first_status(diag)
            context = _near(body, address) if address else ""
            if not diag:
                diag = _diagnostic_line(context, address)
            if action == "delayed":
                kind = Kind.SOFT
            else:
                words = diag
                if not status or status.endswith(".0.0"):
                    words = _evidence(diag, context, body, _header(reading.message, "subject"))
                if status.startswith("2"):
                    status = ""  # a 2.x.x on a failed recipient says nothing about why
                kind = classify_status(status, words)
            recipients.append(Failed(address, kind, status, diag))
            if len(recipients) >= _MAX_RECIPIENTS:
                break
    nesting = status_parts[0].nesting
    ids, refs = _references(_originals_below(reading, nesting), _text_after_original(report_text))
    if recipients:
        return _finding(recipients[0].kind, tuple(recipients), codes, ids, refs, "", True)
    if delivered:
        return _finding(Kind.AUTOREPLY, (), codes, ids, refs, "", True, "a delivery report: delivered")
    return None


# --- message disposition notifications (RFC 8098) --------------------------------------

_MDN_REFUSED = re.compile(r"\b(?:deleted|denied|failed|rejected|error)\b", re.IGNORECASE)


def _from_mdn(reading: _Reading, mdn: list[_Part] | None, codes: tuple[str, ...]) -> Finding:
    """A read receipt is an automatic reply; an MDN saying the message was deleted or rejected is a bounce.

    Sieve's reject and Dovecot's quota refusals arrive this way, so they count as failures.
    """
    fields: dict[str, str] = {}
    for block in _field_blocks(mdn[0].part) if mdn else []:
        for name, value in block.items():
            fields.setdefault(name, value)
    ids, refs = _references(_originals(reading.parts), reading.texts)
    disposition = fields.get("disposition", "")
    rejected = (
        _MDN_REFUSED.search(disposition.split(";", 1)[-1])
        or "rejected" in _header(reading.message, "auto-submitted").lower()
    )
    if not rejected:
        return _finding(Kind.AUTOREPLY, (), codes, ids, refs, "", True, "read receipt")
    address = _address(fields.get("original-recipient", "")) or _address(fields.get("final-recipient", ""))
    body = _before_original(reading.text)
    diag = _diagnostic_line(_near(body, address), address) or _clean(body)
    kind = classify_status(_first_status(diag), diag)
    return _finding(kind, (Failed(address, kind, _first_status(diag), diag),), codes, ids, refs, "", True)


# --- ARF (RFC 5965) and feedback loops -------------------------------------------------


def _complaint(reading: _Reading, feedback: list[_Part] | None, codes: tuple[str, ...]) -> Finding:
    fields: dict[str, str] = {}
    nesting = 0
    if feedback:
        nesting = feedback[0].nesting
        for block in _field_blocks(feedback[0].part):
            for name, value in block.items():
                fields.setdefault(name, value)
    originals = _originals_below(reading, nesting)
    address = _address(fields.get("original-rcpt-to", ""))
    if not address and originals:
        address = _address(_header(originals[0], "to"))
    if not address:
        address = _address(fields.get("removal-recipient", ""))
    feedback_type = _clean(fields.get("feedback-type", ""), 64).lower() or "abuse"
    diag = _clean(f"feedback report: {feedback_type}")
    ids, refs = _references(originals, [])
    # An authentication-failure report (RFC 6591, DMARC's failure reports) is about how we
    # sign and send, not about a reader who complained: the sender's problem.
    kind = Kind.SENDER if feedback_type == "auth-failure" else Kind.COMPLAINT
    recipients = (Failed(address, kind, "", diag),)
    return _finding(kind, recipients, codes, ids, refs, feedback_type, True)


_ABUSE_TEXT = re.compile(
    r"this is an (?:e-?mail )?abuse report|abuse report for an? (?:e-?mail )?message|feedback loop"
    r"|complaint (?:about|regarding) (?:a |this )?message|marked (?:it |this message |as )+spam"
    r"|reported (?:it |this message )?as spam|spam complaint",
    re.IGNORECASE,
)


def _non_arf_complaint(msg: Message, reading: _Reading, codes: tuple[str, ...]) -> Finding | None:
    """A feedback loop that is not ARF: an abuse report text with the complained-of message attached."""
    if _header(msg, "x-apple-unsubscribe").lower() == "true":
        # Apple Mail's "unsubscribe" button mails the List-Unsubscribe address for the reader:
        # an opt-out in ARF's terms (RFC 5965 feedback type "opt-out"), from the reader's own address.
        address = _address(_header(msg, "from"))
        return _finding(
            Kind.COMPLAINT, (Failed(address, Kind.COMPLAINT, "", "opt-out"),), codes, (), (), "opt-out", True
        )
    originals = _originals(reading.parts)
    if not originals or not _ABUSE_TEXT.search(reading.text[:20_000] + "\n" + _header(msg, "subject")):
        return None
    # Outlook.com's feedback loop (JMRP) names the complaining reader in a header of the original.
    address = _address(_header(originals[0], "x-hmxmroriginalrecipient")) or _address(_header(originals[0], "to"))
    ids, refs = _references(originals, [])
    recipients = (Failed(address, Kind.COMPLAINT, "", "abuse report"),)
    return _finding(Kind.COMPLAINT, recipients, codes, ids, refs, "abuse", True)


# --- bounces in other formats ---------------------------------------------------------

_ORIGINAL_MARKERS = re.compile(
    r"^[ \t>|*=]*(?:-{2,}\s*)?(?:below this line is a copy of the message|this is a copy of the message"
    r"|original message follows|the original message was|original message header|"
    r"-+ ?original message ?-+|unsent message below|a copy of the original message|returned message"
    r"|the header of the original message|message headers follow|------ this is a copy"
    r"|\s*received: from|return-path:|included is a copy"
    r"|your message reads|the text of your message)",
    re.IGNORECASE | re.MULTILINE,
)


def _before_original(text: str) -> str:
    """The report's own words: the text before any copy of the original message."""
    match = _ORIGINAL_MARKERS.search(text, 40)
    return text[: match.start()] if match else text


def _text_after_original(text: str) -> list[str]:
    match = _ORIGINAL_MARKERS.search(text, 40)
    return [text[match.start() :]] if match else []


def _near(body: str, address: str) -> str:
    """The paragraph(s) of the report that speak of one address."""
    if not body:
        return ""
    lowered = body.lower()
    index = lowered.find(address.lower()) if address else -1
    if index < 0 and address:
        index = lowered.find(address.lower().split("@", 1)[0] + "@")
    if index < 0:
        return body[:1500]
    start = body.rfind("\n", 0, max(index - 200, 0)) + 1 if index > 200 else 0
    paragraphs = re.split(r"\n\s*\n", body[index : index + 2000])
    chunk = "\n".join(paragraphs[:3])
    return body[start:index] + chunk[:900]


_DIAG_LINE = re.compile(
    r"(?:(?<![\d.])[45]\d\d[ -]|(?<![\d.])[45]\.\d{1,3}\.\d{1,3}|said:|error:|reason:|diagnostic|sorry,? (?:no|the)|"
    r"unknown|does ?n[o']t exist|full|quota|refused|rejected|denied|not found|invalid|no such|disabled|blocked"
    r"|expired|timed? ?out|loops? back|not unique|discontinued|spam|not accepted|unavailable|too large|deferred"
    r"|temporar|delayed|postponed|couldn't|could not|not delivered|unable to (?:connect|route|find)|not enough"
    r"|not a valid|exceeded|error)",
    re.IGNORECASE,
)
_BOILERPLATE = re.compile(
    r"unable to deliver (?:your )?message to the following|this is a permanent error|i'm afraid i wasn't able"
    r"|could not be delivered to one or more|following address(?:es)? failed|unable to deliver your message to the"
    r" following|delivery to the following recipient|the following message to|was undeliverable|transcript of"
    r"|following recipients? (?:could not|failed)|your message (?:could not|did not|cannot) be delivered|"
    r"delivery has failed to these recipients|message (?:could not be|was not) delivered to|an error occurred while"
    r"|could not deliver the message in the time limit|^-+$|permanent fatal errors",
    re.IGNORECASE,
)


def _diagnostic_line(context: str, address: str = "") -> str:
    """The line of a report that carries the remote server's words, and the lines that continue it.

    Lines after the address come first (qmail, Exim and Postfix put the reason there), then
    the lines before it; a report's own boilerplate ("unable to deliver to the following")
    is passed over.
    """
    lines = [line.strip() for line in context.splitlines()]
    at = next((i for i, line in enumerate(lines) if address and address in line.lower()), 0)
    order = list(range(at, min(at + 14, len(lines)))) + list(range(max(at - 6, 0), at))
    for index in order:
        line = lines[index]
        if not line or _BOILERPLATE.search(line) or not _DIAG_LINE.search(line):
            continue
        kept = [line]
        for follow in lines[index + 1 : index + 4]:
            if (
                not follow
                or _BOILERPLATE.search(follow)
                or (_ADDR_SPEC.search(follow) and not _DIAG_LINE.search(follow))
            ):
                break
            kept.append(follow)
        return _clean(" ".join(kept))
    return ""


def _flufl_failures(msg: Message, oversized: bool) -> tuple[list[str], list[str]]:
    """Temporary and permanent addresses found by Mailman's detectors; none for oversized messages.

    The detectors walk every part and scan every line without limit, so a message past our
    bounds is left to our own bounded reading.
    """
    if oversized:
        return [], []
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector tripping over a malformed message finds nobody
        return [], []

    def decoded(found: frozenset[bytes]) -> list[str]:
        out = []
        for raw in sorted(found):
            addr = _address(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
            if addr and addr not in out:
                out.append(addr)
        return out

    return decoded(temporary), decoded(permanent)


def _looks_like_bounce(msg: Message) -> bool:
    return bool(_BOUNCE_SUBJECT.search(_header(msg, "subject"))) or any(
        re.match(r"(?:mailer-?daemon|postmaster|mail-?daemon|mail\.delivery)", local, re.IGNORECASE)
        for local in _sender_locals(msg)
    )


def _from_text(msg: Message, reading: _Reading, codes: tuple[str, ...]) -> Finding | None:
    """A bounce in any format but RFC 3464: addresses from flufl.bounce and X-Failed-Recipients."""
    if _autoreply_subject(msg) and not _looks_like_bounce(msg):
        return None
    temporary, permanent = _flufl_failures(msg, reading.oversized)
    failed_header = []
    for value in _raw_headers(msg, "x-failed-recipients"):
        for _name, addr in getaddresses([_decode_words(value)[:4000]]):
            address = _address(addr)
            if address and address not in failed_header:
                failed_header.append(address)
    addresses = [*failed_header, *(a for a in permanent if a not in failed_header)]
    addresses += [a for a in temporary if a not in addresses]
    body = _before_original(reading.text)
    if not addresses and _looks_like_bounce(msg):
        addresses = _addresses_in_report(msg, body)
        if not addresses:
            return _unattributed(msg, reading, body, codes)
    if not addresses:
        return None
    recipients = []
    for address in addresses[:_MAX_RECIPIENTS]:
        context = _near(body, address)
        diag = _diagnostic_line(context, address)
        status = _first_status(diag) or _first_status(context)
        if address in temporary and address not in permanent:
            kind = Kind.SENDER if _SENDER_TEXT.search(diag) else Kind.SOFT
        else:
            kind = classify_status(status, _evidence(diag, context, body, _header(msg, "subject")))
        recipients.append(Failed(address, kind, status, diag))
    ids, refs = _references(_originals(reading.parts), _text_after_original(reading.text))
    return _finding(recipients[0].kind, tuple(recipients), codes, ids, refs, "", True)


def _evidence(diag: str, context: str, body: str, subject: str) -> str:
    """The fewest words that say something: the diagnostic, then its paragraph, then the whole report."""
    for words in (diag, f"{diag}\n{context}", f"{diag}\n{context}\n{body[:5000]}\n{subject}"):
        if _text_kind(words) is not None:
            return words
    return diag


def _addresses_in_report(msg: Message, body: str) -> list[str]:
    """Addresses a bounce's own words name, when no detector found any: not ours, not the reporter's."""
    own = {_address(v) for name in ("from", "to", "sender", "reply-to") for v in _raw_headers(msg, name)}
    found: list[str] = []
    for match in _ADDR_SPEC.finditer(body[:20_000]):
        address = match.group(0).strip(".").lower()
        local = address.split("@", 1)[0]
        if address in own or address in found or _ROBOT_LOCAL.match(local):
            continue
        found.append(address)
    return found[:5]


def _unattributed(msg: Message, reading: _Reading, body: str, codes: tuple[str, ...]) -> Finding | None:
    """A bounce that names nobody but says why (the return code may still say who): one Failed with no address."""
    diag = _diagnostic_line(body)
    if not diag or _text_kind(diag) is None:
        return None
    status = _first_status(diag)
    kind = classify_status(status, diag)
    ids, refs = _references(_originals(reading.parts), _text_after_original(reading.text))
    return _finding(kind, (Failed("", kind, status, diag),), codes, ids, refs, "", True)


# --- automatic replies ----------------------------------------------------------------

_AUTOREPLY_SUBJECT = re.compile(
    r"auto(?:matic)?[- ]?(?:reply|response|respon|antwort|answer|réponse|respuesta|risposta|antwoord)|autoreply"
    r"|out of (?:the )?office|\booo\b|vacation|away from (?:the |my )?(?:office|desk)|on (?:holiday|leave|vacation)"
    r"|abwesen|urlaub|absence|absent|réponse automatique|automatisch|fuera de la oficina|respuesta automática"
    r"|i am (?:currently )?(?:out|away)|i'm (?:currently )?(?:out|away)|read:|lu :|gelesen:|read receipt"
    r"|return receipt|please confirm|confirm your|verify (?:your|that you)|sender verification|approve your"
    r"|awaiting (?:your )?(?:verification|approval)|challenge|whitelist|thank you for (?:your )?(?:e-?mail|message"
    r"|contacting|writing)|we have received your|has been received|ticket",
    re.IGNORECASE,
)
_AUTOREPLY_BODY = re.compile(
    r"out of (?:the )?office|on (?:holiday|leave|vacation)|i am (?:currently )?(?:out|away)|i'm (?:currently )?"
    r"(?:out|away)|away from (?:the |my )?(?:office|desk)|(?:will|shall) (?:be )?(?:back|return)|limited access to"
    r"|automatic(?:ally generated)? (?:reply|response)|auto-?reply|this is an automated|spam ?arrest|boxbe"
    r"|verify (?:that )?you are (?:a )?(?:human|real)|whitelist|click (?:the|this) link (?:below )?to (?:verify|"
    r"confirm)|challenge[- ]response|vacation",
    re.IGNORECASE,
)


_OUT_OF_OFFICE = re.compile(
    r"\bi (?:am|will be) (?:currently )?out of (?:the )?office|\bi am (?:currently )?on (?:holiday|vacation|leave)"
    r"|\bi am (?:currently )?away (?:from|until)",
    re.IGNORECASE,
)


def _autoreply_subject(msg: Message) -> bool:
    return bool(_AUTOREPLY_SUBJECT.search(_header(msg, "subject")))


def _is_autoreply(msg: Message, reading: _Reading, automatic: bool) -> bool:
    auto = _header(msg, "auto-submitted").lower()
    if auto.startswith("auto-replied") or _raw_headers(msg, "x-autoreply") or _raw_headers(msg, "x-autorespond"):
        return True
    subject = _header(msg, "subject")
    strong = re.search(
        r"auto(?:matic)?[- ]?(?:reply|response|antwort)|autoreply|out of (?:the )?office|vacation|abwesen"
        r"|réponse automatique|read receipt|return receipt|^read:",
        subject,
        re.IGNORECASE,
    )
    if strong:
        return True
    if not automatic:
        return bool(_OUT_OF_OFFICE.search(reading.text[:600]))
    return bool(_AUTOREPLY_SUBJECT.search(subject) or _AUTOREPLY_BODY.search(reading.text[:20_000]))
