"""Messages: MIME shape, headers, each reader's values surviving the encoding, and header injection."""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time, timedelta
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from newsletter.editions import EditionPlan, Section, Story, window_for
from newsletter.errors import HeaderInjectionError, MessageError
from newsletter.message import EditionHeaders, MessageTemplate, Reader, check_address, check_header, greeting_for
from newsletter.publish import send_edition
from newsletter.render import Branding, Links, RenderedEdition, build_environment, fill_markers, render_edition
from newsletter.store.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from tests.conftest import add_article, add_subscribers, morning_articles

DAY = date(2026, 11, 24)
NOW = datetime(2026, 11, 24, 6, 30, tzinfo=UTC)
BASE = "https://news.example.com/newsletter/unsubscribe/"
MAILTO = "mailto:breakfast@news.example.com?subject=unsubscribe%20TOKEN"

HEADERS = EditionHeaders(
    subject="Breakfast in red: Tuesday 24 November 2026",
    from_name="Breakfast in red",
    from_address="breakfast@news.example.com",
    list_id="breakfast-in-red.news.example.com",
    list_name="Breakfast in red",
    reply_to="desk@news.example.com",
)

NAMES = [
    "",
    "Ana",
    "Ana García",
    'O\'Brien, "Jr"',
    "Zoë",
    "中村",
    "中村 太郎",
    "Siobhán Ní Bhriain-Ó Súilleabháin " * 5,
    "x" * 200,
    "=?utf-8?q?Mallory?=",
    "=start",
    "Ana = Bob",
    ".dot",
    ". leading dot and space",
    "..",
    "Nguyễn <nguyen@evil.example>",
    "tab\tseparated",
]
URLS = [
    BASE + "IjEyMy1hYmNkZWYxMjM0Ig.Z0Jf6A.s1gnaturePart_-xyz",
    BASE + "a." * 80 + "end",  # soft line breaks land on dots
    BASE + 'T?x=1&y=<2>&z="3"\'',  # escaped differently in HTML
    BASE + "." * 300,
    BASE + "%C3%A9=" * 40,
]


@pytest.fixture(scope="module")
def rendered() -> RenderedEdition:
    window = window_for(DAY, time(6), ZoneInfo("Europe/London"), None)
    lead = Story(
        "Zoë & José: “Cafés” <open> late — 東京 too",
        "https://news.example.com/cafes",
        standfirst=". A standfirst that starts with a dot, = and =?x?= " * 3,
        image_url="https://img.example.com/c.jpg",
        image_caption="Photo: Mei Chen",
    )
    stories = tuple(
        Story(f"Story {i}: {'.' * (i % 3)} “quoted” — dash", f"https://news.example.com/{i}", standfirst="Words. " * 30)
        for i in range(12)
    )
    plan = EditionPlan(DAY, window, HEADERS.subject, lead, (Section("News", stories),))
    branding = Branding("Breakfast in red", "The Example Gazette", "1 Quay Street, Portside")
    links = Links("https://news.example.com/newsletter/editions/2026-11-24", "https://news.example.com/subscribe")
    return render_edition(plan, branding, links, "m3ss4ge", build_environment())


@pytest.fixture(scope="module")
def template(rendered: RenderedEdition) -> MessageTemplate:
    return MessageTemplate.compile(rendered, HEADERS)


def reader(name: str = "Ana", url: str = URLS[0], email: str = "ana@example.org") -> Reader:
    return Reader(
        email=email,
        name=name,
        unsubscribe_url=url,
        unsubscribe_mailto=MAILTO,
        message_id="<20261124.1.n@news.example.com>",
    )


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def raw_header(raw: bytes, name: str) -> str:
    """A header's value exactly as written, unfolded."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    match = re.search(rf"^{name}: (.*?)\r\n(?![ \t])", head, re.M | re.S)
    assert match, f"no {name} header"
    return re.sub(r"\r\n(?=[ \t])", "", match.group(1))


def display_name(raw_to: str) -> str:
    """The To display name as RFC 2047 says to read it (adjacent encoded-words join without spaces)."""
    if "=?" in raw_to:
        decoded = str(make_header(decode_header(raw_to)))
        return decoded.rsplit(" <", 1)[0]
    return parseaddr(raw_to)[0]


def parts(message: EmailMessage) -> tuple[str, str]:
    text_part, html_part = message.iter_parts()
    return (
        text_part.get_content().replace("\r\n", "\n"),
        html_part.get_content().replace("\r\n", "\n"),
    )


# --- shape ---------------------------------------------------------------------------------


def test_multipart_alternative_text_first_then_html_utf8_quoted_printable(template: MessageTemplate) -> None:
    message = parse(template.render(reader(), NOW))
    assert message.get_content_type() == "multipart/alternative"
    assert message["MIME-Version"] == "1.0"
    text_part, html_part = message.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    for part in (text_part, html_part):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert not message.defects and not text_part.defects and not html_part.defects


def test_wire_format_lines(template: MessageTemplate) -> None:
    for url in URLS:
        for name in ("Ana", "中村 太郎", ".dot"):
            raw = template.render(reader(name, url), NOW)
            assert raw.isascii()
            assert b"\n" not in raw.replace(b"\r\n", b"")
            assert raw.endswith(b"\r\n")
            head, body = raw.split(b"\r\n\r\n", 1)
            for line in head.split(b"\r\n"):
                assert len(line) <= 998
            for line in body.split(b"\r\n"):
                assert len(line) <= 76, line
                assert not line.startswith(b"."), line
                assert not line.endswith((b" ", b"\t")), line  # trailing white space is not kept by QP


def test_headers(template: MessageTemplate) -> None:
    raw = template.render(reader("Ana García"), NOW)
    message = parse(raw)
    assert message["Subject"] == "Breakfast in red: Tuesday 24 November 2026"
    assert message["From"] == "Breakfast in red <breakfast@news.example.com>"
    assert message["Reply-To"] == "desk@news.example.com"
    assert message["To"] == "Ana García <ana@example.org>"
    assert parsedate_to_datetime(message["Date"]) == NOW
    assert message["Message-ID"] == "<20261124.1.n@news.example.com>"
    assert message["List-Id"] == "Breakfast in red <breakfast-in-red.news.example.com>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"] == f"<{URLS[0]}>, <{MAILTO}>"
    assert message["Precedence"] == "bulk"
    for name in ("Subject", "From", "To", "Date", "Message-ID", "List-Id", "List-Unsubscribe", "MIME-Version"):
        assert len(message.get_all(name)) == 1, name


def test_list_unsubscribe_is_never_encoded(template: MessageTemplate) -> None:
    for url in URLS[:3]:
        raw = template.render(reader("中村 太郎", url), NOW)
        block = re.search(rb"^List-Unsubscribe: .*?\r\n(?![ \t])", raw, re.M | re.S)
        assert block is not None
        assert b"=?" not in block.group()
        assert block.group().startswith(f"List-Unsubscribe: <{url}>,".encode())
        assert f"<{MAILTO}>".encode() in block.group()
    assert URLS[0].startswith("https://")


def test_non_ascii_subject_and_names_round_trip(rendered: RenderedEdition) -> None:
    headers = EditionHeaders(
        subject="Café culture — “Zoë’s” guide: 東京",
        from_name="Le Petit Déjeuner",
        from_address="petit@news.example.com",
        list_id="petit.news.example.com",
        list_name="Le Petit Déjeuner",
    )
    message = parse(MessageTemplate.compile(rendered, headers).render(reader(), NOW))
    assert message["Subject"] == "Café culture — “Zoë’s” guide: 東京"
    assert message["From"].addresses[0].display_name == "Le Petit Déjeuner"
    assert message["List-Id"] == "Le Petit Déjeuner <petit.news.example.com>"


# --- each reader's values --------------------------------------------------------------------


@pytest.mark.parametrize("url", URLS, ids=["token", "dots", "html-special", "all-dots", "equals"])
@pytest.mark.parametrize("name", NAMES, ids=lambda n: repr(n[:12]))
def test_personal_values_decode_exactly_as_fill_markers_gives_them(
    template: MessageTemplate, rendered: RenderedEdition, name: str, url: str
) -> None:
    raw = template.render(reader(name, url), NOW)
    message = parse(raw)
    text, page = parts(message)
    greeting = greeting_for(name)
    assert page == fill_markers(rendered.html, rendered.markers, greeting=greeting, unsubscribe_url=url)
    assert text == fill_markers(rendered.text, rendered.markers, greeting=greeting, unsubscribe_url=url, escape=False)
    assert display_name(raw_header(raw, "To")) == name
    assert message["To"].addresses[0].addr_spec == "ana@example.org"
    for line in raw.split(b"\r\n"):
        assert not line.startswith(b".")
    for line in raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n"):
        assert len(line) <= 76
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        assert len(line) <= 78 or line.startswith(b"List-Unsubscribe: <")


def test_readers_get_their_own_values_only(template: MessageTemplate) -> None:
    ana = template.render(reader("Ana", BASE + "ANA"), NOW)
    bob = template.render(reader("Bob", BASE + "BOB", "bob@example.org"), NOW)
    assert b"ANA" in ana and b"ANA" not in bob
    text, _ = parts(parse(bob))
    assert "Good morning, Bob." in text and "Ana" not in text


def test_the_shared_segments_are_not_copied_per_reader(template: MessageTemplate) -> None:
    first = template.render_parts(reader("Ana"), NOW)
    second = template.render_parts(reader("Bob", email="bob@example.org"), NOW)
    shared = [a for a, b in zip(first, second, strict=True) if a is b]
    assert sum(len(s) for s in shared) > 0.9 * sum(len(p) for p in first)


# --- header injection --------------------------------------------------------------------------

BREAKS = ["\r\nBcc: victim@example.org", "\nX-Evil: 1", "\rX-Evil: 1", "\x00"]


@pytest.mark.parametrize("bad", BREAKS, ids=["crlf", "lf", "cr", "nul"])
@pytest.mark.parametrize("field", ["subject", "from_name", "list_name", "from_address", "reply_to", "envelope_from"])
def test_edition_headers_refuse_line_breaks(field: str, bad: str) -> None:
    values = {
        "subject": "Breakfast",
        "from_name": "Breakfast in red",
        "from_address": "breakfast@news.example.com",
        "list_id": "b.news.example.com",
        "list_name": "Breakfast",
        "reply_to": "desk@news.example.com",
        "envelope_from": "bounces@news.example.com",
    }
    values[field] += bad
    with pytest.raises(HeaderInjectionError):
        EditionHeaders(**values)


@pytest.mark.parametrize("list_id", ["b.news.example.com\r\nX: y", "has space.example.com", "<b.example.com>", ""])
def test_list_id_must_be_a_dotted_identifier(list_id: str) -> None:
    with pytest.raises(MessageError):
        EditionHeaders("s", "n", "b@news.example.com", list_id, "n")


@pytest.mark.parametrize("bad", BREAKS, ids=["crlf", "lf", "cr", "nul"])
@pytest.mark.parametrize("field", ["name", "email", "unsubscribe_url", "unsubscribe_mailto", "message_id"])
def test_reader_values_refuse_line_breaks(template: MessageTemplate, field: str, bad: str) -> None:
    values = {
        "email": "ana@example.org",
        "name": "Ana",
        "unsubscribe_url": URLS[0],
        "unsubscribe_mailto": MAILTO,
        "message_id": "<1.n@news.example.com>",
    }
    values[field] += bad
    with pytest.raises(MessageError):  # HeaderInjectionError is one
        template.render(Reader(**values), NOW)


@pytest.mark.parametrize(
    "address",
    ["ana@example.org\r\n", "Ana <ana@example.org>", "ana@", "zoë@example.org", "ana@example.org, bob@example.org", ""],
)
def test_check_address_accepts_only_plain_addresses(address: str) -> None:
    with pytest.raises(MessageError):
        check_address("To", address)


def test_check_header_passes_clean_values_through() -> None:
    assert check_header("Subject", "Zoë’s — ok") == "Zoë’s — ok"
    assert check_address("To", "o'brien+news@example.ie") == "o'brien+news@example.ie"
    with pytest.raises(HeaderInjectionError, match="line break"):
        check_header("Subject", "a\r\nb")


def test_a_reader_with_a_line_break_in_the_name_fails_alone(store, clock, ctx, smtp_sink) -> None:
    morning_articles(store, clock)
    good = add_subscribers(store, clock, 3)
    with store.session() as session:  # as an import that bypassed the checks might have stored it
        session.add(
            Subscriber(
                email="eve@example.org",
                name="Eve\r\nBcc: everyone@example.org",
                status=SubscriberStatus.ACTIVE,
                source="import",
                created_at=clock.now(),
                updated_at=clock.now(),
                confirmed_at=clock.now(),
            )
        )
    more = add_subscribers(store, clock, 2, prefix="later")
    report = send_edition(ctx)
    assert sorted(smtp_sink.handler.by_recipient()) == sorted(good + more)
    assert all(b"everyone@example.org" not in r.data for r in smtp_sink.handler.received)
    assert report.stats is not None and report.stats.sent == 5 and report.stats.failed == 1
    with store.session() as session:
        failed = session.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.FAILED)).one()
        assert session.get(Subscriber, failed.subscriber_id).email == "eve@example.org"
        assert "line break" in failed.last_error


# --- through the send loop: ids, sizes ----------------------------------------------------------


def test_message_ids_are_unique_on_the_senders_domain(store, clock, ctx, smtp_sink) -> None:
    morning_articles(store, clock)
    add_subscribers(store, clock, 6)
    send_edition(ctx)
    ids = [r.message["Message-ID"] for r in smtp_sink.handler.received]
    assert len(ids) == len(set(ids)) == 6
    assert all(re.fullmatch(r"<[^<>@\s]+@news\.example\.com>", i) for i in ids)
    for received in smtp_sink.handler.received:
        date_sent = parsedate_to_datetime(received.message["Date"])
        assert abs(date_sent - clock.now()) < timedelta(seconds=2)


def test_an_html_part_over_100_kb_is_sent_with_a_warning(store, clock, ctx, smtp_sink, caplog) -> None:
    for i in range(120):
        add_article(
            store,
            clock,
            f"long-{i}",
            datetime(2026, 11, 24, 5, 0, tzinfo=UTC) - timedelta(minutes=i),
            title=f"A long story number {i} — “with” Unicode, & ampersands",
            standfirst="Zoë said the façade was naïve. " * 20,
        )
    add_subscribers(store, clock, 2)
    with caplog.at_level(logging.WARNING, logger="newsletter"):
        report = send_edition(ctx)
    assert report.outcome == "sent"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Gmail clips" in w and "KB" in w for w in warnings), warnings
    for received in smtp_sink.handler.received:
        html_part = received.message.get_body(("html",))
        assert len(html_part.get_content().encode()) > 100 * 1024
        for line in received.data.split(b"\r\n"):
            assert not line.startswith(b".")


@pytest.mark.parametrize(
    ("name", "greeting"),
    [
        ("Ana García", "Good morning, Ana"),
        ("  Zoë  ", "Good morning, Zoë"),
        ("中村 太郎", "Good morning, 中村"),
        ("J. Smith", "Good morning, J"),
        ("Smith, Ana", "Good morning, Smith"),
        ("...", "Good morning"),
        ("", "Good morning"),
    ],
)
def test_greeting_uses_the_first_name_without_its_punctuation(name: str, greeting: str) -> None:
    assert greeting_for(name) == greeting
