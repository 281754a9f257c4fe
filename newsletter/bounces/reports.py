"""Reports in the standard formats: delivery status (RFC 3464), dispositions (RFC 8098), complaints (ARF).

These carry their facts in fields (Final-Recipient, Status, Diagnostic-Code,
Feedback-Type), so they are read before anything heuristic, and their field values win
over the words around them. Feedback loops that are not ARF (Outlook.com's, Apple Mail's
unsubscribe button) are complaints too, and are recognised here.
"""

from __future__ import annotations

import re

from newsletter.bounces.findings import Failed, Finding, Kind, build_finding
from newsletter.bounces.freeform import (
    before_original,
    diagnostic_line,
    evidence,
    flufl_failures,
    near,
    text_after_original,
)
from newsletter.bounces.mime import MAX_RECIPIENTS, MAX_TEXT, Part, clean, field_blocks, parse_address
from newsletter.bounces.reading import Reading, references
from newsletter.bounces.status import classify_status, first_status, normal_status
from newsletter.bounces.words import Words

# --- RFC 3464 delivery status notifications -------------------------------------------

_NOT_FAILURES = {"delivered", "relayed", "expanded"}
_DIAGNOSTIC_TYPE = re.compile(r"\s*[A-Za-z][\w.-]{0,40}\s*;")


def _dsn_address(block: dict[str, str]) -> str:
    """The address a DSN names: the one we sent to (Original-Recipient) when it is an addr-spec, else the final one."""
    original = parse_address(block.get("original-recipient", ""))
    final = parse_address(block.get("final-recipient", "")) or parse_address(block.get("x-actual-recipient", ""))
    if "@" in original:
        return original
    return final or original


def from_dsn(reading: Reading, status_parts: list[Part], codes: tuple[str, ...]) -> Finding | None:
    recipients: list[Failed] = []
    used: set[str] = set()
    delivered = 0
    report_text = "\n".join(
        p.text()
        for p in reading.parts
        if p.nesting == status_parts[0].nesting and p.ctype in ("text/plain", "text/html")
    )[:MAX_TEXT]
    body = before_original(report_text)
    for part in status_parts:
        blocks = field_blocks(part)
        for block in blocks:
            if "final-recipient" not in block and "original-recipient" not in block:
                continue
            action = block.get("action", "").lower().split()[0] if block.get("action", "").strip() else ""
            if action in _NOT_FAILURES:
                delivered += 1
                continue
            address = _dsn_address(block)
            if "@" not in address:
                found = flufl_failures(reading)[1]
                address = next((a for a in found if a not in used), address)
            used.add(address)
            raw_diag = block.get("diagnostic-code", "")
            typed = _DIAGNOSTIC_TYPE.match(raw_diag)  # "smtp; 550 ...", "X-Postfix; ...": the type goes
            diag = clean(raw_diag[typed.end() :] if typed else raw_diag)
            status = normal_status(block.get("status", "")) or first_status(diag)
            context = near(body, address) if address else ""
            if not diag:
                diag = diagnostic_line(context, address)
            if action == "delayed":
                kind = Kind.SOFT
            else:
                words = diag
                if not status or status.endswith(".0.0"):
                    words = evidence(diag, context, body, reading.headers.first("subject"))
                if status.startswith("2"):
                    status = ""  # a 2.x.x on a failed recipient says nothing about why
                kind = classify_status(status, words)
            recipients.append(Failed(address, kind, status, diag))
            if len(recipients) >= MAX_RECIPIENTS:
                break
    nesting = status_parts[0].nesting
    ids, refs = references(reading.originals(nesting), text_after_original(report_text))
    if recipients:
        return build_finding(recipients[0].kind, tuple(recipients), codes, ids, refs, "", True)
    if delivered:
        return build_finding(Kind.AUTOREPLY, (), codes, ids, refs, "", True, "a delivery report: delivered")
    return None


# --- message disposition notifications (RFC 8098) --------------------------------------

_MDN_REFUSED = Words(r"\b(?:deleted|denied|failed|rejected|error)\b")


def from_mdn(reading: Reading, mdn: list[Part] | None, codes: tuple[str, ...]) -> Finding:
    """A read receipt is an automatic reply; an MDN saying the message was deleted or rejected is a bounce.

    Sieve's reject and Dovecot's quota refusals arrive this way, so they count as failures.
    """
    fields: dict[str, str] = {}
    for block in field_blocks(mdn[0]) if mdn else []:
        for name, value in block.items():
            fields.setdefault(name, value)
    ids, refs = references(reading.originals(), reading.texts)
    disposition = fields.get("disposition", "")
    rejected = (
        _MDN_REFUSED.search(disposition.split(";", 1)[-1])
        or "rejected" in reading.headers.first("auto-submitted").lower()
    )
    if not rejected:
        return build_finding(Kind.AUTOREPLY, (), codes, ids, refs, "", True, "read receipt")
    address = parse_address(fields.get("original-recipient", "")) or parse_address(fields.get("final-recipient", ""))
    body = before_original(reading.text)
    diag = diagnostic_line(near(body, address), address) or clean(body)
    kind = classify_status(first_status(diag), diag)
    return build_finding(kind, (Failed(address, kind, first_status(diag), diag),), codes, ids, refs, "", True)


# --- ARF (RFC 5965) and feedback loops -------------------------------------------------


def complaint(reading: Reading, feedback: list[Part] | None, codes: tuple[str, ...]) -> Finding:
    fields: dict[str, str] = {}
    nesting = 0
    if feedback:
        nesting = feedback[0].nesting
        for block in field_blocks(feedback[0]):
            for name, value in block.items():
                fields.setdefault(name, value)
    originals = reading.originals(nesting)
    address = parse_address(fields.get("original-rcpt-to", ""))
    if not address and originals:
        address = parse_address(originals[0].first("to"))
    if not address:
        address = parse_address(fields.get("removal-recipient", ""))
    feedback_type = clean(fields.get("feedback-type", ""), 64).lower() or "abuse"
    diag = clean(f"feedback report: {feedback_type}")
    ids, refs = references(originals, [])
    # An authentication-failure report (RFC 6591, DMARC's failure reports) is about how we
    # sign and send, not about a reader who complained: the sender's problem.
    kind = Kind.SENDER if feedback_type == "auth-failure" else Kind.COMPLAINT
    recipients = (Failed(address, kind, "", diag),)
    return build_finding(kind, recipients, codes, ids, refs, feedback_type, True)


_ABUSE_TEXT = Words(
    r"this is an (?:e-?mail )?abuse report|abuse report for an? (?:e-?mail )?message|feedback loop"
    r"|complaint (?:about|regarding) (?:a |this )?message|marked (?:it |this message |as )+spam"
    r"|reported (?:it |this message )?as spam|spam complaint"
)


def non_arf_complaint(reading: Reading, codes: tuple[str, ...]) -> Finding | None:
    """A feedback loop that is not ARF: an abuse report text with the complained-of message attached."""
    headers = reading.headers
    if headers.first("x-apple-unsubscribe").lower() == "true":
        # Apple Mail's "unsubscribe" button mails the List-Unsubscribe address for the reader:
        # an opt-out in ARF's terms (RFC 5965 feedback type "opt-out"), from the reader's own address.
        address = parse_address(headers.first("from"))
        return build_finding(
            Kind.COMPLAINT, (Failed(address, Kind.COMPLAINT, "", "opt-out"),), codes, (), (), "opt-out", True
        )
    originals = reading.originals()
    if not originals or not _ABUSE_TEXT.search(reading.text[:20_000] + "\n" + headers.first("subject")):
        return None
    # Outlook.com's feedback loop (JMRP) names the complaining reader in a header of the original.
    address = parse_address(originals[0].first("x-hmxmroriginalrecipient")) or parse_address(originals[0].first("to"))
    ids, refs = references(originals, [])
    recipients = (Failed(address, Kind.COMPLAINT, "", "abuse report"),)
    return build_finding(Kind.COMPLAINT, recipients, codes, ids, refs, "abuse", True)
