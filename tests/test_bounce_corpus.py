"""The bounce classifier against real-world reports, and the cases the corpus cannot show.

Every message under tests/data/bounces (see SOURCES.md there) is classified and checked
against expected.toml: its kind, and that every failed (or reported) address is named.
The focused tests pin the rules the module docstring states, and the promises made to the
mailbox reader: ``classify`` never raises, never recurses with the input, and stays fast.
"""

from __future__ import annotations

import time
import tomllib
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path

import pytest

from newsletter.bounces import Failed, Finding, Kind, classify, classify_status

CORPUS = Path(__file__).parent / "data" / "bounces"
with (CORPUS / "expected.toml").open("rb") as _handle:
    EXPECTED: dict[str, dict[str, object]] = tomllib.load(_handle)


def parse(data: bytes) -> EmailMessage:
    """Parse as the mailbox reader does."""
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def addresses(finding: Finding) -> set[str]:
    return {failed.address for failed in finding.recipients}


def test_every_sample_has_an_expectation_and_every_expectation_a_sample() -> None:
    on_disk = {str(path.relative_to(CORPUS)) for path in CORPUS.glob("*/*.eml")}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 150


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_sample(name: str) -> None:
    truth = EXPECTED[name]
    finding = classify(parse((CORPUS / name).read_bytes()))
    assert finding.kind == Kind(str(truth["kind"])), finding.diagnostic
    for address in truth.get("recipients", []):  # type: ignore[union-attr]
        assert address in addresses(finding)
    if "status" in truth:
        assert finding.status == truth["status"]
    if finding.kind in (Kind.HARD, Kind.SOFT, Kind.SENDER, Kind.COMPLAINT):
        assert finding.automatic
        assert finding.recipients
    for failed in finding.recipients:
        assert len(failed.diagnostic) <= 300
        assert failed.address == failed.address.lower()
        assert not any(ord(ch) < 32 for ch in failed.diagnostic)


# --- classify_status ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        ("5.1.1", "", Kind.HARD),
        ("5.1.2", "", Kind.HARD),
        ("5.1.10", "", Kind.HARD),
        ("5.2.1", "mailbox disabled", Kind.HARD),
        ("5.2.2", "", Kind.SOFT),
        ("5.3.4", "message too big", Kind.SOFT),
        ("4.2.2", "mailbox full", Kind.SOFT),
        ("4.4.7", "delivery time expired", Kind.SOFT),
        ("4.1.1", "user unknown", Kind.SOFT),
        ("5.7.1", "", Kind.SENDER),
        ("5.7.26", "Unauthenticated email is not accepted", Kind.SENDER),
        ("5.7.1", "Recipient address rejected: Nonexistent user", Kind.HARD),
        ("5.4.4", "", Kind.HARD),
        ("5.4.1", "Recipient address rejected: Access denied", Kind.HARD),
        ("5.4.1", "no answer from host", Kind.SOFT),
        ("5.1.8", "", Kind.SENDER),
        # The sender's reputation in the words wins over a specific code ...
        ("5.1.1", "550 5.1.1 Service unavailable; client host blocked using Spamhaus", Kind.SENDER),
        ("4.7.1", "421 4.7.1 rate limited, too many messages", Kind.SENDER),
        # ... and the words decide where the code is generic.
        ("5.0.0", "550 user unknown", Kind.HARD),
        ("5.0.0", "552 mailbox is full", Kind.SOFT),
        ("5.0.0", "554 rejected: message looks like spam", Kind.SENDER),
        ("5.0.0", "DMARC policy of the sender's domain", Kind.SENDER),
        ("", "450 greylisted, please try again later", Kind.SOFT),
        ("", "550 No such user here", Kind.HARD),
        ("", "Host or domain name not found", Kind.HARD),
        ("", "relaying denied", Kind.SENDER),
        ("", "421 try again later", Kind.SOFT),
        ("", "", Kind.HARD),
        ("550", "", Kind.HARD),
        ("451", "", Kind.SOFT),
    ],
)
def test_classify_status(status: str, text: str, kind: Kind) -> None:
    assert classify_status(status, text) is kind


# --- building messages ---------------------------------------------------------------------

ORIGINAL = (
    "From: Breakfast in red <news@example.com>\r\n"
    "To: reader@example.org\r\n"
    "Subject: This morning\r\n"
    "Message-ID: <edition-7.reader@news.example.com>\r\n"
    "X-Newsletter-Delivery: 7-1a2b\r\n"
    "\r\n"
    "Hello.\r\n"
)


def dsn(
    blocks: list[str],
    *,
    to: str = "bounces+3f-1a2b-k7f2m9qpx4@news.example.com",
    original: str = ORIGINAL,
    original_type: str = "message/rfc822",
    extra_headers: str = "",
    charset: str = "us-ascii",
    human: bytes = b"This is the mail system at host mx.example.org.\r\n",
) -> bytes:
    """An RFC 3464 report with the given per-recipient blocks."""
    recipients = "\r\n".join(blocks)
    return (
        (
            "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
            f"To: {to}\r\n"
            f"{extra_headers}"
            "Subject: Undelivered Mail Returned to Sender\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
            "\r\n--B\r\n"
            f"Content-Type: text/plain; charset={charset}\r\n\r\n"
        ).encode()
        + human
        + (
            "\r\n--B\r\n"
            "Content-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.org\r\n\r\n"
            f"{recipients}\r\n"
            "--B\r\n"
            f"Content-Type: {original_type}\r\n\r\n"
            f"{original}"
            "\r\n--B--\r\n"
        ).encode()
    )


def block(address: str, action: str = "failed", status: str = "5.1.1", diagnostic: str = "") -> str:
    lines = [f"Final-Recipient: rfc822; {address}", f"Action: {action}", f"Status: {status}"]
    if diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    return "\r\n".join(lines) + "\r\n"


# --- return codes ----------------------------------------------------------------------------


def test_return_code_from_to() -> None:
    finding = classify(parse(dsn([block("reader@example.org")])))
    assert finding.return_codes == ("3f-1a2b-k7f2m9qpx4",)


@pytest.mark.parametrize("header", ["Delivered-To", "X-Original-To", "Envelope-To", "X-Rcpt-To"])
def test_return_code_from_envelope_headers_case_insensitive(header: str) -> None:
    data = dsn(
        [block("reader@example.org")],
        to="postmaster@news.example.com",
        extra_headers=f"{header}: BOUNCES+AB12-CD34@News.Example.com\r\n",
    )
    assert classify(parse(data)).return_codes == ("ab12-cd34",)


def test_return_codes_deduplicated_in_order_and_other_delimiter() -> None:
    data = dsn(
        [block("reader@example.org")],
        to="rtn-one@x.example, rtn-two@x.example",
        extra_headers="Delivered-To: rtn-one@x.example\r\nX-Original-To: not-rtn-three@x.example\r\n",
    )
    finding = classify(parse(data), return_local="rtn", delimiter="-")
    assert finding.return_codes == ("one", "two")
    assert classify(parse(data)).return_codes == ()


# --- the returned original -----------------------------------------------------------------


def test_ids_and_delivery_refs_from_message_rfc822() -> None:
    finding = classify(parse(dsn([block("reader@example.org")])))
    assert finding.message_ids == ("<edition-7.reader@news.example.com>",)
    assert finding.delivery_refs == ("7-1a2b",)


def test_ids_and_delivery_refs_from_text_rfc822_headers() -> None:
    finding = classify(parse(dsn([block("reader@example.org")], original_type="text/rfc822-headers")))
    assert finding.message_ids == ("<edition-7.reader@news.example.com>",)
    assert finding.delivery_refs == ("7-1a2b",)


# --- DSN details -----------------------------------------------------------------------------


def test_multi_recipient_dsn_with_mixed_kinds() -> None:
    data = dsn(
        [
            block("Gone@Example.org", status="5.1.1", diagnostic="550 5.1.1 <gone@example.org>: User unknown"),
            block("full@example.org", status="5.2.2", diagnostic="552 5.2.2 Mailbox full"),
            block("later@example.org", action="delayed", status="4.4.1", diagnostic="connection timed out"),
            block("spam@example.org", status="5.7.1", diagnostic="554 5.7.1 rejected by Spamhaus"),
            block("fine@example.org", action="delivered", status="2.0.0"),
        ]
    )
    finding = classify(parse(data))
    got = [(f.address, f.kind, f.status) for f in finding.recipients]
    assert got == [
        ("gone@example.org", Kind.HARD, "5.1.1"),
        ("full@example.org", Kind.SOFT, "5.2.2"),
        ("later@example.org", Kind.SOFT, "4.4.1"),
        ("spam@example.org", Kind.SENDER, "5.7.1"),
    ]
    assert finding.kind is Kind.HARD
    assert finding.status == "5.1.1"
    assert finding.diagnostic == "550 5.1.1 <gone@example.org>: User unknown"
    assert finding.automatic


def test_success_only_report_is_not_a_failure() -> None:
    finding = classify(parse(dsn([block("fine@example.org", action="relayed", status="2.0.0")])))
    assert finding.kind is Kind.AUTOREPLY
    assert finding.recipients == ()


def test_dsn_naming_an_address_we_never_mailed_is_still_reported() -> None:
    finding = classify(parse(dsn([block("stranger@elsewhere.example")])))
    assert addresses(finding) == {"stranger@elsewhere.example"}
    assert finding.kind is Kind.HARD


def test_bounce_of_a_bounce_reads_the_outer_report() -> None:
    inner = dsn([block("reader@example.org")]).decode().replace("\r\n", "\n").replace("--B", "--C")
    inner = inner.replace('boundary="B"', 'boundary="C"')
    outer = dsn(
        [block("mailer-daemon@news.example.com", status="5.2.2", diagnostic="552 mailbox full")],
        original=inner.replace("\n", "\r\n"),
    )
    finding = classify(parse(outer))
    assert [f.address for f in finding.recipients] == ["mailer-daemon@news.example.com"]
    assert finding.kind is Kind.SOFT
    # Both originals are named, nearest first: the bounce, then our edition inside it.
    assert "<edition-7.reader@news.example.com>" in finding.message_ids
    assert finding.delivery_refs == ("7-1a2b",)


@pytest.mark.parametrize(
    ("charset", "human"),
    [
        ("shift_jis", "宛先のメールアドレスは存在しません。".encode("shift_jis")),
        ("iso-2022-jp", "宛先のメールアドレスは存在しません。".encode("iso-2022-jp")),
        ("utf-8", b"caf\xc3 \xff\xfe invalid \x80 bytes"),
        ("x-no-such-charset", b"\xe9t\xe9 \x00\x1b"),
    ],
)
def test_non_utf8_and_broken_charsets(charset: str, human: bytes) -> None:
    data = dsn([block("reader@example.org", diagnostic="550 5.1.1 unknown")], charset=charset, human=human)
    finding = classify(parse(data))
    assert finding.kind is Kind.HARD
    assert addresses(finding) == {"reader@example.org"}


def test_diagnostic_is_decoded_one_line_capped() -> None:
    long = "=?utf-8?q?Bo=C3=AEte?= pleine\x07\x1b " + "x" * 500
    finding = classify(parse(dsn([block("reader@example.org", status="5.2.2", diagnostic=long)])))
    assert finding.diagnostic.startswith("Boîte pleine x")
    assert len(finding.diagnostic) == 300
    assert "\x07" not in finding.diagnostic


def test_malformed_dsn_names_nobody_and_is_unknown_automatic() -> None:
    data = dsn(["Garbage-Field-Without-Recipient: yes\r\n"]).replace(b"Undelivered Mail Returned", b"Report")
    finding = classify(parse(data))
    assert finding.kind is Kind.UNKNOWN
    assert finding.automatic


def test_deeply_nested_multipart_is_quick_and_never_recurses() -> None:
    # Built bottom-up without a parser (parsing it would itself recurse); the inner parts use
    # the compat32 Message, whose header setting is cheap, so building takes a second, not forty.
    message = Message()
    message.set_payload("innermost")
    for _ in range(100_000):
        parent = Message()
        parent["Content-Type"] = "multipart/mixed"
        parent.set_payload([message])
        message = parent
    top = EmailMessage()
    top["From"] = "MAILER-DAEMON@example.org"
    top["Subject"] = "Undelivered Mail Returned to Sender"
    top["Content-Type"] = "multipart/mixed"
    top.set_payload([message])
    started = time.perf_counter()
    finding = classify(top)
    assert time.perf_counter() - started < 1.0
    assert finding.kind is Kind.UNKNOWN
    assert finding.automatic


@pytest.mark.parametrize(
    "body",
    [
        b"<reader@example.org>:\r\n" + b"x" * 5_000_000,  # one 5 MB line: no quadratic address search
        b"550 user unknown reader@example.org " * 150_000,  # 5 MB of words: flufl.bounce is not asked
    ],
)
def test_huge_bodies_are_read_only_in_part(body: bytes) -> None:
    data = b"From: MAILER-DAEMON@example.org\r\nSubject: failure notice\r\n\r\n" + body
    message = parse(data)
    started = time.perf_counter()
    finding = classify(message)
    assert time.perf_counter() - started < 1.0
    assert addresses(finding) == {"reader@example.org"}
    assert finding.kind is Kind.HARD


def test_return_codes_are_bounded() -> None:
    headers = b"".join(b"To: bounces+c%d@example.com\r\n" % i for i in range(2_000))
    finding = classify(parse(headers + b"Subject: hi\r\n\r\nhello\r\n"))
    assert finding.return_codes[:2] == ("c0", "c1")
    assert len(finding.return_codes) == 20


def test_classify_never_raises_on_a_broken_message() -> None:
    class Exploding(EmailMessage):
        def raw_items(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

        def get_content_type(self) -> str:
            raise RuntimeError("boom")

    finding = classify(Exploding())
    assert finding.kind is Kind.UNKNOWN


# --- complaints ------------------------------------------------------------------------------


def arf(feedback: str) -> bytes:
    return (
        "From: staff@hotmail.example\r\n"
        "To: bounces+ab-cd@news.example.com\r\n"
        "Subject: complaint about message from 192.0.2.1\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="A"\r\n'
        "\r\n--A\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--A\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"{feedback}"
        "\r\n--A\r\nContent-Type: message/rfc822\r\n\r\n"
        f"{ORIGINAL}"
        "\r\n--A--\r\n"
    ).encode()


def test_arf_with_original_rcpt_to() -> None:
    feedback = (
        "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        "Original-Rcpt-To: <Other@Example.org>\r\n"
    )
    finding = classify(parse(arf(feedback)))
    assert finding.kind is Kind.COMPLAINT
    assert finding.feedback_type == "abuse"
    assert finding.recipients == (Failed("other@example.org", Kind.COMPLAINT, "", "feedback report: abuse"),)
    assert finding.message_ids == ("<edition-7.reader@news.example.com>",)
    assert finding.delivery_refs == ("7-1a2b",)
    assert finding.return_codes == ("ab-cd",)


def test_arf_without_original_rcpt_to_uses_the_originals_to() -> None:
    finding = classify(parse(arf("Feedback-Type: fraud\r\nUser-Agent: X/1\r\nVersion: 1\r\n")))
    assert finding.kind is Kind.COMPLAINT
    assert finding.feedback_type == "fraud"
    assert addresses(finding) == {"reader@example.org"}


# --- people and robots -----------------------------------------------------------------------


def test_a_person_thanking_us_is_unknown_and_not_automatic() -> None:
    data = (
        b"From: Ana Garcia <ana@example.org>\r\nTo: news@example.com\r\nSubject: Re: This morning\r\n"
        b"In-Reply-To: <edition-7.reader@news.example.com>\r\n\r\n"
        b"Thanks for the newsletter, I read it every morning with my coffee!\r\n"
    )
    finding = classify(parse(data))
    assert finding.kind is Kind.UNKNOWN
    assert not finding.automatic
    assert finding.recipients == ()


def test_vacation_reply_is_autoreply() -> None:
    data = (
        b"From: ana@example.org\r\nTo: news@example.com\r\nSubject: Out of Office: This morning\r\n"
        b"Auto-Submitted: auto-replied\r\n\r\nI am out of the office until Monday.\r\n"
    )
    finding = classify(parse(data))
    assert finding.kind is Kind.AUTOREPLY
    assert finding.automatic


def test_read_receipt_is_autoreply() -> None:
    data = (
        b"From: ana@example.org\r\nTo: news@example.com\r\nSubject: Read: This morning\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/plain\r\n\r\nYour message was displayed.\r\n"
        b"--R\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Final-Recipient: rfc822; ana@example.org\r\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--R--\r\n"
    )
    finding = classify(parse(data))
    assert finding.kind is Kind.AUTOREPLY
    assert finding.recipients == ()
