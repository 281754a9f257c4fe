"""The kind of one failed recipient, from its RFC 3463 status code and the words of the reply.

The rules are in the package docstring, in order. They are pure functions of two strings,
so the same rules serve every report format: a DSN's Status and Diagnostic-Code, an MDN's
disposition text, and the sentence an older MTA wrote around an address.
"""

from __future__ import annotations

import functools
import re

from newsletter.bounces.findings import Kind
from newsletter.bounces.mime import MAX_PART_TEXT, SPACES
from newsletter.bounces.words import Words

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d])")
_REPLY_CODE = re.compile(r"(?<![\d.#-])([45]\d\d)(?:[ -]|$)", re.MULTILINE)

_GREYLIST = Words(r"gr[ae]y[- ]?list")
SENDER_TEXT = Words(
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
    r"|(?:host|network|ip) (?:network )?not allowed"
)
_FULL_TEXT = Words(
    r"mailbox (?:is )?full|mail ?box full|mailfolder is full|over ?quota|quota exceed|exceeded (?:\w+ )?quota"
    r"|exceed(?:s|ed)? (?:the )?(?:storage|its|their|his|her) (?:allocation|quota|limit)|storage allocation"
    r"|insufficient (?:storage|space|disk)|(?:have|has) enough (?:disk )?space|not enough (?:storage|space)"
    r"|space not enough|mailbox size|mailbox has exceeded"
    r"|disk quota|\bquota\b|too large|too big|size (?:exceeds|limit)|message size|exceeds (?:the )?(?:maximum )?size"
    r"|user is over|is over (?:the )?(?:storage |disk )?(?:quota|limit)|out of (?:disk )?space|full mailbox"
)
_HARD_TEXT = Words(
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
    r"|this user doesn|recipient not found|access denied|no longer exists"
)
_SOFT_FIRST = Words(
    r"host not found, try again|loops? back to myself|mail loop|message looping|routing loop|too many hops"
    r"|failed \d+ attempts|maximum delivery attempts|aborted after \d|command died|not been collected"
)
_SOFT_TEXT = Words(
    r"try (?:again )?later|temporar|deferred|delayed|delivery (?:has been )?delay|timed? ?out|connection"
    r" (?:refused|reset|lost|timed|dropped|was dropped)|connection to mail exchanger failed|did not respond"
    r"|system error|internal error|processing error|error while being processed|postponed"
    r"|will (?:continue|keep) (?:trying|to try)|still trying|retry|expired"
    r"|could not be delivered (?:for|within|in)|not (?:yet )?been delivered|has not been able|queue|resources"
    r"|too busy|service (?:not )?available|unavailable at the moment|try to send it again|not reachable"
    r"|unreachable|no route to host|network|not responding|not delivered within"
)

_HARD_CODES = {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1", "5.1.4"}
_SOFT_CODES = {"5.2.2", "5.2.3", "5.3.4"}
_SENDER_CODES = {"5.1.7", "5.1.8"}


@functools.lru_cache(maxsize=16)
def text_kind(text: str) -> Kind | None:
    """What the words alone say, or None when they say nothing we know.

    Remembered for the last few texts: a diagnostic is often judged alone first (is it
    evidence?) and then again by ``classify_status``.
    """
    if _GREYLIST.search(text):
        return Kind.SOFT
    if SENDER_TEXT.search(text):
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
    the sender wins over any code (see the package docstring for the whole table). A
    failure that says nothing is HARD: a permanent refusal we cannot explain is still one.

    :param status: an enhanced status such as "5.1.1"; a bare SMTP reply code ("550") or ""
        is taken from ``text`` when it has one.
    :param text: the diagnostic (the remote server's reply), or any words around it.
    """
    text = SPACES.sub(" ", text or "")[:MAX_PART_TEXT]
    code = normal_status(status) or first_status(text)
    words = text_kind(text)
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


def normal_status(status: str) -> str:
    """ "5.1.1" from "5.1.1", "#5.1.1" or "5.1.1 (user unknown)"; "" when there is none."""
    return first_status(status or "")


def first_status(text: str) -> str:
    match = _STATUS.search(text)
    if not match:
        return ""
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"
