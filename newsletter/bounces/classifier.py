"""``classify``: which reader, which kind, which sending, for any message in the bounce mailbox.

The order of the checks is the order of trust: a feedback report, then an RFC 3464 status
part, then a disposition notification, then a feedback loop without ARF, then a bounce in
any other format, and only then an automatic reply or a person. A message that can be
read in a stricter way is never read in a looser one.
"""

from __future__ import annotations

from email.message import EmailMessage, Message

from newsletter.bounces.envelope import is_automatic, is_autoreply, looks_like_bounce, return_codes
from newsletter.bounces.findings import Finding, Kind, build_finding
from newsletter.bounces.freeform import from_text
from newsletter.bounces.mime import MAX_PARTS, Part, clean, param
from newsletter.bounces.reading import read_message, references
from newsletter.bounces.reports import complaint, from_dsn, from_mdn, non_arf_complaint


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
            automatic = is_automatic(Part.top(msg))
        except Exception:  # noqa: BLE001
            automatic = False
        return build_finding(Kind.UNKNOWN, (), (), (), (), "", automatic, clean(f"could not be read: {exc!r}"))


def _classify(msg: Message, return_local: str, delimiter: str) -> Finding:
    top = Part.top(msg)
    codes = return_codes(top.headers, return_local, delimiter)
    automatic = is_automatic(top)
    reading = read_message(top)
    report_type = param(top.part, "report-type") if top.ctype == "multipart/report" else ""

    feedback = _first_report(reading.parts, ("message/feedback-report",))
    if feedback is not None or report_type == "feedback-report":
        return complaint(reading, feedback, codes)

    status_parts = _first_report(reading.parts, ("message/delivery-status", "message/global-delivery-status"))
    if status_parts is not None:
        finding = from_dsn(reading, status_parts, codes)
        if finding is not None:
            return finding

    mdn = _first_report(reading.parts, ("message/disposition-notification",))
    if mdn is not None or report_type == "disposition-notification":
        return from_mdn(reading, mdn, codes)

    non_arf = non_arf_complaint(reading, codes)
    if non_arf is not None:
        return non_arf

    bounced = from_text(reading, codes)
    if bounced is not None:
        return bounced

    if is_autoreply(reading, automatic):
        ids, refs = references(reading.originals(), [])
        return build_finding(Kind.AUTOREPLY, (), codes, ids, refs, "", True, clean(reading.headers.first("subject")))

    ids, refs = references(reading.originals(), [])
    if status_parts is not None or (automatic and looks_like_bounce(reading.headers)):
        return build_finding(Kind.UNKNOWN, (), codes, ids, refs, "", True, "a delivery report naming no recipient")
    summary = "an automatic message" if automatic else "a message written by a person"
    if reading.truncated:
        summary += f" (only its first {MAX_PARTS} parts were read)"
    return build_finding(Kind.UNKNOWN, (), codes, ids, refs, "", automatic, summary)


def _first_report(parts: list[Part], ctypes: tuple[str, ...]) -> list[Part] | None:
    """The report parts of the given types at the shallowest nesting, so a bounce of a bounce reads as the outer."""
    matching = [p for p in parts if p.ctype in ctypes]
    if not matching:
        return None
    top = min(p.nesting for p in matching)
    return [p for p in matching if p.nesting == top]
