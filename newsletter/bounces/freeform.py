"""Bounces in every format but RFC 3464: addresses from flufl.bounce, reasons from the report's words.

Most MTAs before RFC 3464, and many since, write a bounce for people: qmail's "Hi. This
is the qmail-send program", Exim's "This message was created automatically", Postfix's
transcript. flufl.bounce (Mailman's detectors) knows where each of them puts the failed
addresses; the reason is read here, from the lines near each address, with the rules of
``status``. When nothing names an address but the bounce says why, the return code may
still say who, so the reason is kept with no address.
"""

from __future__ import annotations

import logging
import re
from email.utils import getaddresses

from flufl.bounce import all_failures

from newsletter.bounces.envelope import ROBOT_LOCAL, has_autoreply_subject, looks_like_bounce
from newsletter.bounces.findings import Failed, Finding, Kind, build_finding
from newsletter.bounces.mime import ADDR_SPEC, MAX_RECIPIENTS, Headers, clean, decode_words, parse_address
from newsletter.bounces.reading import Reading, references
from newsletter.bounces.status import SENDER_TEXT, classify_status, first_status, text_kind
from newsletter.bounces.words import Words

# flufl.bounce logs a full traceback when one of its detectors trips on malformed input;
# classify() already treats that as "nothing found", and a traceback must never reach
# the person running the command.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL + 1)

_ORIGINAL_MARKERS = re.compile(
    r"^[ \t>|*=]*(?:-{2,}\s*)?(?:below this line is a copy of the message|this is a copy of the message"
    r"|original message follows|the original message was|original message header|"
    r"-+ ?original message ?-+|unsent message below|a copy of the original message|returned message"
    r"|the header of the original message|message headers follow|------ this is a copy"
    r"|\s*received: from|return-path:|included is a copy"
    r"|your message reads|the text of your message)",
    re.IGNORECASE | re.MULTILINE,
)


def before_original(text: str) -> str:
    """The report's own words: the text before any copy of the original message."""
    match = _ORIGINAL_MARKERS.search(text, 40)
    return text[: match.start()] if match else text


def text_after_original(text: str) -> list[str]:
    """The copy of the original that follows the report's own words, if there is one."""
    match = _ORIGINAL_MARKERS.search(text, 40)
    return [text[match.start() :]] if match else []


def near(body: str, address: str) -> str:
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


_DIAG_LINE = Words(
    r"(?:(?<![\d.])[45]\d\d[ -]|(?<![\d.])[45]\.\d{1,3}\.\d{1,3}|said:|error:|reason:|diagnostic|sorry,? (?:no|the)|"
    r"unknown|does ?n[o']t exist|full|quota|refused|rejected|denied|not found|invalid|no such|disabled|blocked"
    r"|expired|timed? ?out|loops? back|not unique|discontinued|spam|not accepted|unavailable|too large|deferred"
    r"|temporar|delayed|postponed|couldn't|could not|not delivered|unable to (?:connect|route|find)|not enough"
    r"|not a valid|exceeded|error)"
)
_BOILERPLATE = Words(
    r"unable to deliver (?:your )?message to the following|this is a permanent error|i'm afraid i wasn't able"
    r"|could not be delivered to one or more|following address(?:es)? failed|unable to deliver your message to the"
    r" following|delivery to the following recipient|the following message to|was undeliverable|transcript of"
    r"|following recipients? (?:could not|failed)|your message (?:could not|did not|cannot) be delivered|"
    r"delivery has failed to these recipients|message (?:could not be|was not) delivered to|an error occurred while"
    r"|could not deliver the message in the time limit|^-+$|permanent fatal errors"
)


def diagnostic_line(context: str, address: str = "") -> str:
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
                or (ADDR_SPEC.search(follow) and not _DIAG_LINE.search(follow))
            ):
                break
            kept.append(follow)
        return clean(" ".join(kept))
    return ""


def flufl_failures(reading: Reading) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Temporary and permanent addresses found by Mailman's detectors; none for oversized messages.

    The detectors walk every part and scan every line without limit, so a message past our
    bounds is left to our own bounded reading. They are asked once a message, and read it
    through views (see ``views.Views``): each detector reads the same few headers again,
    and parsing them was most of what the detectors cost.
    """
    if reading.failures is None:
        reading.failures = _ask_flufl(reading)
    return reading.failures


def _ask_flufl(reading: Reading) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if reading.oversized:
        return (), ()
    try:
        temporary, permanent = all_failures(reading.top.views.tree())
    except Exception:  # noqa: BLE001 - a detector tripping over a malformed message finds nobody
        return (), ()

    def decoded(found: frozenset[bytes]) -> tuple[str, ...]:
        out: list[str] = []
        for raw in sorted(found):
            addr = parse_address(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
            if addr and addr not in out:
                out.append(addr)
        return tuple(out)

    return decoded(temporary), decoded(permanent)


def from_text(reading: Reading, codes: tuple[str, ...]) -> Finding | None:
    """A bounce in any format but RFC 3464: addresses from flufl.bounce and X-Failed-Recipients."""
    headers = reading.headers
    if has_autoreply_subject(headers) and not looks_like_bounce(headers):
        return None
    temporary, permanent = flufl_failures(reading)
    failed_header = []
    for value in headers.raw("x-failed-recipients"):
        for _name, addr in getaddresses([decode_words(value)[:4000]]):
            address = parse_address(addr)
            if address and address not in failed_header:
                failed_header.append(address)
    addresses = [*failed_header, *(a for a in permanent if a not in failed_header)]
    addresses += [a for a in temporary if a not in addresses]
    body = before_original(reading.text)
    if not addresses and looks_like_bounce(headers):
        addresses = _addresses_in_report(headers, body)
        if not addresses:
            return _unattributed(reading, body, codes)
    if not addresses:
        return None
    recipients = []
    for address in addresses[:MAX_RECIPIENTS]:
        context = near(body, address)
        diag = diagnostic_line(context, address)
        status = first_status(diag) or first_status(context)
        if address in temporary and address not in permanent:
            kind = Kind.SENDER if SENDER_TEXT.search(diag) else Kind.SOFT
        else:
            kind = classify_status(status, evidence(diag, context, body, headers.first("subject")))
        recipients.append(Failed(address, kind, status, diag))
    ids, refs = references(reading.originals(), text_after_original(reading.text))
    return build_finding(recipients[0].kind, tuple(recipients), codes, ids, refs, "", True)


def evidence(diag: str, context: str, body: str, subject: str) -> str:
    """The fewest words that say something: the diagnostic, then its paragraph, then the whole report."""
    for words in (diag, f"{diag}\n{context}", f"{diag}\n{context}\n{body[:5000]}\n{subject}"):
        if text_kind(words) is not None:
            return words
    return diag


def _addresses_in_report(headers: Headers, body: str) -> list[str]:
    """Addresses a bounce's own words name, when no detector found any: not ours, not the reporter's."""
    own = {parse_address(v) for name in ("from", "to", "sender", "reply-to") for v in headers.raw(name)}
    found: list[str] = []
    for match in ADDR_SPEC.finditer(body[:20_000]):
        address = match.group(0).strip(".").lower()
        local = address.split("@", 1)[0]
        if address in own or address in found or ROBOT_LOCAL.match(local):
            continue
        found.append(address)
    return found[:5]


def _unattributed(reading: Reading, body: str, codes: tuple[str, ...]) -> Finding | None:
    """A bounce that names nobody but says why (the return code may still say who): one Failed with no address."""
    diag = diagnostic_line(body)
    if not diag or text_kind(diag) is None:
        return None
    status = first_status(diag)
    kind = classify_status(status, diag)
    ids, refs = references(reading.originals(), text_after_original(reading.text))
    return build_finding(kind, (Failed("", kind, status, diag),), codes, ids, refs, "", True)
