"""DKIM: real keys, real messages from MessageTemplate, dkimpy as the judge, no DNS.

Every signature here is checked by dkimpy, the Python reference verifier, with a
``dnsfunc`` that serves the generated public keys; the signer itself shares no code with it.
"""

from __future__ import annotations

import base64
import os
import random
import re
import statistics
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from newsletter.cli import cli
from newsletter.config import DkimConfig, parse_config
from newsletter.demo.sink import free_port
from newsletter.dkim import (
    MAX_KEY_BYTES,
    OVERSIGNED_HEADERS,
    Signer,
    SigningKey,
    generate_key,
    load_key,
    load_signer,
    public_record,
    record_name,
    zone_file_value,
)
from newsletter.dkimcheck import check, verify
from newsletter.editions import EditionPlan, Section, Story, window_for
from newsletter.errors import DkimError
from newsletter.message import EditionHeaders, MessageTemplate, Reader
from newsletter.render import Branding, Links, build_environment, render_edition
from newsletter.transports import SMTPTransport
from tests.conftest import SMTPServer, make_config

DOMAIN = "news.example.com"
NOW = datetime(2026, 11, 24, 6, 30, tzinfo=UTC)  # in the past: dkimpy refuses a t= in the future
DAY = date(2026, 11, 24)
HEADERS = EditionHeaders(
    subject="Breakfast in red: Tuesday 24 November 2026",
    from_name="Breakfast in red",
    from_address=f"breakfast@{DOMAIN}",
    list_id=f"breakfast-in-red.{DOMAIN}",
    list_name="Breakfast in red",
    reply_to=f"desk@{DOMAIN}",
)
UNSUBSCRIBE = f"https://{DOMAIN}/newsletter/unsubscribe/IjEyMy1hYmNkZWYxMjM0Ig.Z0Jf6A.s1gnaturePart_-xyz"


# --- keys and messages --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pems() -> dict[str, tuple[bytes, str]]:
    """One key pair per algorithm, PEM and DNS record, as `dkim keygen` makes them."""
    return {algorithm: generate_key(algorithm) for algorithm in ("rsa-sha256", "ed25519-sha256")}


def signing_key(pems: dict[str, tuple[bytes, str]], algorithm: str, selector: str) -> SigningKey:
    return SigningKey(selector, algorithm, load_key(pems[algorithm][0].decode(), "", algorithm, "dkim.key"))


@pytest.fixture(scope="module")
def signers(pems: dict[str, tuple[bytes, str]]) -> dict[str, Signer]:
    rsa_key = signing_key(pems, "rsa-sha256", "breakfast2026")
    ed_key = signing_key(pems, "ed25519-sha256", "breakfast2026e")
    return {
        "rsa": Signer(DOMAIN, [rsa_key]),
        "ed25519": Signer(DOMAIN, [ed_key]),
        "dual": Signer(DOMAIN, [rsa_key, ed_key]),
    }


@pytest.fixture(scope="module")
def records(signers: dict[str, Signer]) -> dict[str, str]:
    return signers["dual"].records()


def dnsfunc(records: dict[str, str]) -> Any:
    """What dkimpy asks instead of DNS: ``selector._domainkey.domain.`` as bytes."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    return lookup


@pytest.fixture(scope="module")
def template() -> MessageTemplate:
    """A realistic edition: about 62 KB a copy, text and HTML, quoted-printable."""
    window = window_for(DAY, clock_time(6), ZoneInfo("Europe/London"), None)
    lead = Story(
        "Zoë & José: “Cafés” open late",
        "https://news.example.com/cafes",
        standfirst="A standfirst. " * 3,
        image_url="https://img.example.com/c.jpg",
    )
    stories = tuple(
        Story(f"Story {i}: “quoted” — dash", f"https://news.example.com/{i}", standfirst="Words. " * 30)
        for i in range(48)
    )
    plan = EditionPlan(DAY, window, HEADERS.subject, lead, (Section("News", stories),))
    branding = Branding("Breakfast in red", "The Example Gazette", "1 Quay Street, Portside")
    links = Links("https://news.example.com/newsletter/editions/2026-11-24", "https://news.example.com/subscribe")
    return MessageTemplate.compile(render_edition(plan, branding, links, "m3ss4ge", build_environment()), HEADERS)


def reader(i: int = 1, name: str = "Zoë García-Núñez") -> Reader:
    return Reader(
        email=f"reader{i}@example.org",
        name=name,
        unsubscribe_url=f"{UNSUBSCRIBE}{i}",
        unsubscribe_mailto=f"mailto:breakfast@{DOMAIN}?subject=unsubscribe%20TOKEN{i}",
        message_id=f"<20261124.{i}.n@{DOMAIN}>",
    )


@pytest.fixture(scope="module")
def parts(template: MessageTemplate) -> list[bytes]:
    return template.render_parts(reader(), NOW)


def signed(signer: Signer, parts: Sequence[bytes]) -> bytes:
    return signer.sign(parts, NOW) + b"".join(parts)


def dkimpy_verifies(message: bytes, records: dict[str, str], idx: int = 0) -> bool:
    """dkimpy's verdict on one signature (a body hash mismatch is an exception there, False here)."""
    try:
        return bool(dkimpy.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc(records)))
    except dkimpy.DKIMException:
        return False


def signature_tags(message: bytes, idx: int = 0) -> dict[str, str]:
    fields = re.findall(rb"^DKIM-Signature:(.*?)\r\n(?![ \t])", message, re.M | re.S)
    flat = re.sub(r"\s+", "", fields[idx].decode())
    return dict(item.split("=", 1) for item in flat.split(";") if item)


# --- signatures dkimpy accepts ------------------------------------------------------------------


def test_the_message_is_realistic(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    assert 55_000 < len(raw) < 70_000
    assert re.search(rb"\r\nTo: =\?utf-8\?[bq]\?[^?]+\?=\r\n <reader1@example.org>\r\n", raw)  # RFC 2047, folded
    assert re.search(rb"List-Unsubscribe: <https://[^>]+>,\r\n <mailto:[^>]+>\r\n", raw)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_a_signature_verifies_with_dkimpy(signers: dict[str, Signer], records: dict[str, str], parts, kind) -> None:
    message = signed(signers[kind], parts)
    assert dkimpy.verify(message, dnsfunc=dnsfunc(records))
    [found] = verify(message, records)
    assert (found.domain, found.algorithm) == (DOMAIN, {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}[kind])


def test_dual_signing_rsa_then_ed25519_both_verify(signers: dict[str, Signer], records: dict[str, str], parts) -> None:
    message = signed(signers["dual"], parts)
    assert message.count(b"DKIM-Signature:") == 2
    assert signature_tags(message, 0)["a"] == "rsa-sha256"
    assert signature_tags(message, 1)["a"] == "ed25519-sha256"
    assert dkimpy_verifies(message, records, 0) and dkimpy_verifies(message, records, 1)
    assert [v.algorithm for v in verify(message, records)] == ["rsa-sha256", "ed25519-sha256"]


def test_every_reader_gets_a_signature_that_verifies(signers, records, template: MessageTemplate) -> None:
    names = ["", "Ana", "中村 太郎", ".dot", 'O\'Brien, "Jr"', "x" * 200, "=?utf-8?q?Mallory?="]
    for i, name in enumerate(names):
        message = signed(signers["dual"], template.render_parts(reader(i, name), NOW))
        assert dkimpy_verifies(message, records, 0) and dkimpy_verifies(message, records, 1), name


def test_the_signature_field(signers: dict[str, Signer], parts: list[bytes]) -> None:
    header = signers["dual"].sign(parts, NOW)
    assert header.isascii() and header.endswith(b"\r\n")
    for line in header.split(b"\r\n")[:-1]:
        assert len(line) <= 78, line
    tags = signature_tags(header + b"".join(parts))
    assert tags["v"] == "1" and tags["c"] == "relaxed/simple" and tags["d"] == DOMAIN
    assert tags["t"] == str(int(NOW.timestamp()))
    assert "x" not in tags and "l" not in tags
    names = tags["h"].split(":")
    for name in ("from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe"):
        assert name in names
    for name in ("list-unsubscribe-post", "reply-to", "mime-version", "content-type"):
        assert name in names
    assert "precedence" not in names
    for name in OVERSIGNED_HEADERS:  # present once, listed twice
        assert names.count(name) == 2, name


def test_the_timestamp_comes_from_the_signers_clock(pems) -> None:
    class Clock:
        def now(self) -> datetime:
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

        def sleep(self, seconds: float) -> None: ...

    signer = Signer(DOMAIN, [signing_key(pems, "ed25519-sha256", "e")], Clock())
    parts = [b"From: a@news.example.com\r\nSubject: x\r\n", b"\r\nbody\r\n"]
    assert signature_tags(signer.sign(parts) + b"".join(parts))["t"] == "1767323045"


# --- what breaks it and what does not -----------------------------------------------------------


def test_a_changed_body_fails(signers: dict[str, Signer], records: dict[str, str], parts) -> None:
    message = signed(signers["dual"], parts)
    at = message.index(b"Here are")
    tampered = message[:at] + b"There are" + message[at + len(b"Here are") :]
    assert not dkimpy_verifies(tampered, records, 0) and not dkimpy_verifies(tampered, records, 1)
    with pytest.raises(DkimError, match="does not verify") as caught:
        verify(tampered, records)
    assert caught.value.reason == "verify"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Subject: Breakfast in red", b"Subject: Breakfast in blue"),
        (b"Message-ID: <20261124.1.n@", b"Message-ID: <20261124.2.n@"),
        (b"\r\n <mailto:", b"\r\n <mailto:x"),  # the List-Unsubscribe's folded second line
        (b"<reader1@example.org>", b"<reader2@example.org>"),  # To's folded second line
        (b"To: =?utf-8?", b"To: =?UTF-8?"),
    ],
)
def test_a_changed_header_fails(signers, records: dict[str, str], parts, old: bytes, new: bytes) -> None:
    message = signed(signers["rsa"], parts)
    assert old in message
    assert not dkimpy_verifies(message.replace(old, new, 1), records)


@pytest.mark.parametrize(
    "added",
    [
        b"From: Mallory <mallory@evil.example>\r\n",
        b"Subject: Urgent: confirm your password\r\n",
        b"List-Unsubscribe: <https://evil.example/phish>\r\n",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    ],
)
def test_an_added_header_fails_because_it_is_over_signed(signers, records, parts, added: bytes) -> None:
    message = signed(signers["ed25519"], parts)
    head_end = message.index(b"\r\n\r\n") + 2
    for at in (head_end, message.index(b"Date:")):  # below and above the others
        assert not dkimpy_verifies(message[:at] + added + message[at:], records), (added, at)


def test_relays_may_refold_headers_and_add_trailing_empty_lines(signers, records: dict[str, str], parts) -> None:
    message = signed(signers["dual"], parts)
    refolded = message.replace(b",\r\n <mailto:", b", <mailto:").replace(b"?=\r\n <reader1", b"?=  <reader1")
    refolded = refolded.replace(b"Subject: Breakfast in red:", b"Subject:  Breakfast in\r\n\tred:")
    assert refolded != message
    assert dkimpy_verifies(refolded, records, 0) and dkimpy_verifies(refolded, records, 1)
    assert dkimpy_verifies(message + b"\r\n\r\n", records, 1)
    relayed = b"Received: from mx.example.org by relay.example.net\r\n" + message
    assert dkimpy_verifies(relayed, records, 0)


def test_how_the_message_is_cut_into_parts_does_not_matter(signers, records, parts) -> None:
    """Ed25519 signatures are deterministic: any cut of the same bytes must give the same field."""
    signer = signers["ed25519"]
    whole = b"".join(parts)
    expected = signer.sign([whole], NOW)
    rng = random.Random(8)
    head_end = whole.index(b"\r\n\r\n")
    cuts_near_the_empty_line = [[head_end + d] for d in range(-3, 6)]
    random_cuts = [sorted(rng.sample(range(1, len(whole)), rng.randint(1, 40))) for _ in range(40)]
    field_cuts = [[m.start() for m in re.finditer(rb"\r\n(?=[A-Z])", whole[:head_end])]]
    for cut in cuts_near_the_empty_line + random_cuts + field_cuts:
        pieces = [whole[a:b] for a, b in zip([0, *cut], [*cut, len(whole)], strict=True)]
        assert signer.sign(pieces, NOW) == expected, cut
    assert signer.sign(parts, NOW) == expected
    assert signer.sign([*parts[:2], b"", *parts[2:]], NOW) == expected


@pytest.mark.parametrize(
    "body",
    [b"", b"\r\n", b"\r\n\r\n\r\n", b"one line", b"one line\r\n", b"line\r\n\r\n\r\n", b"\r\n\r\nlate\r\n", b"x\r\r\n"],
)
def test_simple_body_canonicalization_matches_dkimpy(signers, records, body: bytes) -> None:
    head = b"From: Desk <desk@news.example.com>\r\nTo: a@example.org\r\nSubject:   spaced  out \t\r\n"
    for pieces in ([head + b"\r\n" + body], [head, b"\r\n" + body], [head, b"\r\n", *[bytes([c]) for c in body]]):
        message = signed(signers["dual"], pieces)
        assert dkimpy_verifies(message, records, 0) and dkimpy_verifies(message, records, 1), (body, len(pieces))


def test_duplicate_signed_headers_are_signed_bottom_up(signers, records) -> None:
    pieces = [b"From: a@news.example.com\r\nTo: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n"]
    message = signed(signers["dual"], pieces)
    assert signature_tags(message)["h"].split(":").count("to") == 2
    assert dkimpy_verifies(message, records, 0) and dkimpy_verifies(message, records, 1)
    swapped = message.replace(b"a@example.org\r\nTo: b@", b"b@example.org\r\nTo: a@")
    assert not dkimpy_verifies(swapped, records, 0)


def test_a_header_with_a_bare_line_feed_is_refused(signers) -> None:
    from newsletter.errors import MessageError

    with pytest.raises(MessageError, match="malformed"):
        signers["rsa"].sign([b"From: a@news.example.com\nSubject: x\r\n\r\nbody\r\n"], NOW)


# --- over SMTP ----------------------------------------------------------------------------------


def test_signed_bytes_cross_smtp_unchanged_and_verify_there(smtp_sink: SMTPServer, signers, records, template) -> None:
    transport = SMTPTransport(make_config("sqlite:///unused.db", smtp_sink).smtp)
    sent = []
    try:
        for i, name in enumerate(["Zoë García-Núñez", ".leading dot", "中村 太郎"]):
            parts = template.render_parts(reader(i, name), NOW)
            message = signers["dual"].sign(parts, NOW) + b"".join(parts)
            transport.send(HEADERS.from_address, f"reader{i}@example.org", message, canonical=True)
            sent.append(message)
    finally:
        transport.close()
    received = [item.data for item in smtp_sink.handler.received]
    assert received == sent
    for data in received:
        assert [v.selector for v in verify(data, records)] == ["breakfast2026", "breakfast2026e"]


# --- keys ---------------------------------------------------------------------------------------


def test_generated_records(pems) -> None:
    pem, record = pems["rsa-sha256"]
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert record.startswith("v=DKIM1; k=rsa; p=MII")
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert public_record(key) == record
    assert len(record) > 255
    strings = re.findall(r'"([^"]*)"', zone_file_value(record))
    assert "".join(strings) == record and all(len(s) <= 255 for s in strings) and len(strings) >= 2

    pem, record = pems["ed25519-sha256"]
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(record.split("p=")[1])) == 32  # the raw key (RFC 8463), not DER
    assert record_name("sel", DOMAIN) == f"sel._domainkey.{DOMAIN}"


def dkim_config(**values: Any) -> DkimConfig:
    return DkimConfig(**{"domain": DOMAIN, "selector": "breakfast2026", **values})


def test_load_signer_from_file_and_from_the_environment(pems, tmp_path: Path, records) -> None:
    assert load_signer(DkimConfig()) is None
    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(pems["rsa-sha256"][0])
    ed_file = tmp_path / "ed.pem"
    ed_file.write_bytes(pems["ed25519-sha256"][0])
    signer = load_signer(
        dkim_config(key_file=str(rsa_file), ed25519_selector="breakfast2026e", ed25519_key_file=str(ed_file))
    )
    assert signer is not None and [k.algorithm for k in signer.keys] == ["rsa-sha256", "ed25519-sha256"]
    assert signer.records() == records

    data = {
        "newsletter": {"publication": "Gazette"},
        "sender": {"from_address": f"breakfast@{DOMAIN}"},
        "web": {"base_url": "https://news.example.com/newsletter"},
        "dkim": {"domain": DOMAIN, "selector": "breakfast2026"},
    }
    env = {"NEWSLETTER_DKIM_KEY": pems["rsa-sha256"][0].decode()}
    from_env = load_signer(parse_config(data, "<memory>", env).dkim)
    assert from_env is not None and from_env.records() == {record_name("breakfast2026", DOMAIN): pems["rsa-sha256"][1]}
    one_line = pems["rsa-sha256"][0].decode().strip().replace("\n", "\\n")  # as some service managers pass it
    assert load_signer(dkim_config(key=one_line)) is not None


def test_an_ed25519_key_as_dknewkey_writes_it(parts) -> None:
    """dkimpy's ``dknewkey`` stores the 32-byte seed in base64, not PEM; it is read as well."""
    seed = base64.b64encode(os.urandom(32)).decode()
    cfg = dkim_config(algorithm="ed25519-sha256", key=seed + "\n")
    signer = load_signer(cfg)
    assert signer is not None
    assert verify(signed(signer, parts), signer.records())[0].algorithm == "ed25519-sha256"
    assert check(cfg, NOW, dns=False).ok
    with pytest.raises(DkimError, match="not a PEM private key"):
        load_signer(dkim_config(key=seed))  # a seed is no RSA key


def openssl_key(tmp_path: Path, *args: str) -> bytes:
    out = tmp_path / "k.pem"
    subprocess.run(["openssl", "genpkey", *args, "-out", str(out)], check=True, capture_output=True, timeout=60)
    return out.read_bytes()


def key_problem(cfg: DkimConfig) -> DkimError:
    with pytest.raises(DkimError) as caught:
        load_signer(cfg)
    assert caught.value.reason == "key"
    assert "\n" not in str(caught.value)
    return caught.value


def test_unusable_keys_are_one_clear_line_without_the_key(pems, tmp_path: Path) -> None:
    rsa_pem, ed_pem = pems["rsa-sha256"][0], pems["ed25519-sha256"][0]
    secret_line = rsa_pem.splitlines()[5].decode()
    encrypted = serialization.load_pem_private_key(rsa_pem, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = (
        serialization.load_pem_private_key(rsa_pem, None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    garbage = rsa_pem.replace(secret_line.encode(), secret_line[::-1].encode())
    cases = {
        "not a PEM private key": dkim_config(key="-----BEGIN PRIVATE KEY-----\n" + secret_line),
        "encrypted with a passphrase": dkim_config(key=encrypted.decode()),
        "an Ed25519 key, but the algorithm is rsa-sha256": dkim_config(key=ed_pem.decode()),
        "a 2048-bit RSA key, but the algorithm is ed25519-sha256": dkim_config(
            key=rsa_pem.decode(), algorithm="ed25519-sha256"
        ),
        "an EC (ECDSA) key, but the algorithm is rsa-sha256": dkim_config(key=ec_pem.decode()),
        "a public key": dkim_config(key=public_pem.decode()),
    }
    for expected, cfg in cases.items():
        problem = key_problem(cfg)
        assert expected in str(problem), (expected, str(problem))
        assert secret_line not in str(problem) and secret_line[:20] not in str(problem)
    assert "dkim.key (or $NEWSLETTER_DKIM_KEY)" in str(key_problem(dkim_config(key=garbage.decode())))

    big = tmp_path / "big.pem"
    big.write_bytes(rsa_pem + b"\n" * MAX_KEY_BYTES)
    assert "larger than 100 KB" in str(key_problem(dkim_config(key_file=str(big))))
    assert "no such file" in str(key_problem(dkim_config(key_file=str(tmp_path / "missing.pem"))))
    assert "not a regular file" in str(key_problem(dkim_config(key_file="/dev/zero")))
    assert "not a regular file" in str(key_problem(dkim_config(key_file=str(tmp_path))))
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert "not a regular file" in str(key_problem(dkim_config(key_file=str(fifo))))
    assert time.monotonic() - started < 5  # refused, not waited on
    wrong = tmp_path / "ed.pem"
    wrong.write_bytes(ed_pem)
    problem = key_problem(dkim_config(key_file=str(wrong)))
    assert str(problem).startswith(f"dkim.key_file {wrong}: an Ed25519 key")


def test_rsa_key_sizes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    small = openssl_key(tmp_path, "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512")
    assert "a 512-bit RSA key; receivers reject keys under 1024 bits" in str(
        key_problem(dkim_config(key=small.decode()))
    )
    weak = openssl_key(tmp_path, "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024")
    with caplog.at_level("WARNING", logger="newsletter.dkim"):
        assert load_signer(dkim_config(key=weak.decode())) is not None
    assert "1024-bit RSA key; RFC 8301 asks for 2048 bits" in caplog.text
    assert weak.decode().splitlines()[3] not in caplog.text


# --- check --------------------------------------------------------------------------------------


@pytest.fixture
def key_files(pems, tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for algorithm, (pem, _) in pems.items():
        path = paths[algorithm] = tmp_path / f"{algorithm}.pem"
        path.write_bytes(pem)
        path.chmod(0o600)
    return paths


def test_check_signs_verifies_and_compares_the_published_record(key_files, pems) -> None:
    cfg = dkim_config(
        key_file=str(key_files["rsa-sha256"]),
        ed25519_selector="breakfast2026e",
        ed25519_key_file=str(key_files["ed25519-sha256"]),
    )
    published = {
        record_name("breakfast2026", DOMAIN): pems["rsa-sha256"][1].replace("; p=", ";  p=").encode(),
        record_name("breakfast2026e", DOMAIN): pems["ed25519-sha256"][1].encode(),
    }
    asked = []

    def resolver(name: str) -> bytes | None:
        asked.append(name)
        return published.get(name)

    result = check(cfg, NOW, resolver)
    assert result.ok and result.dns_checked, result
    assert asked == list(published)
    text = "\n".join(result.lines)
    assert "rsa-sha256 (2048-bit RSA), selector breakfast2026" in text
    assert "ed25519-sha256 d=news.example.com s=breakfast2026e verifies" in text
    assert "DNS: breakfast2026._domainkey.news.example.com publishes this key" in text

    offline = check(cfg, NOW, dns=False)
    assert offline.ok and not offline.dns_checked and "DNS check skipped" in offline.lines[-1]


def test_check_problems_with_dns(key_files, pems) -> None:
    cfg = dkim_config(key_file=str(key_files["rsa-sha256"]))
    name = record_name("breakfast2026", DOMAIN)
    other = generate_key("rsa-sha256")[1]

    def unreachable(_name: str) -> bytes | None:
        raise TimeoutError("no answer within 3 s")

    skipped = check(cfg, NOW, unreachable)
    assert skipped.ok and not skipped.dns_checked
    assert skipped.lines[-1].startswith(f"DNS check skipped: {name} could not be looked up (no answer within 3 s)")

    for published, expected in [
        (None, "has no TXT record; publish: v=DKIM1; k=rsa; p="),
        (other.encode(), "publishes a different key than the configured one"),
        (b"v=DKIM1; k=rsa; p=", "empty p=, which revokes the key"),
        (pems["rsa-sha256"][1].replace("k=rsa", "k=ed25519").encode(), "publishes a different key"),
    ]:
        result = check(cfg, NOW, lambda _n, p=published: p)
        assert result.problem is not None and result.problem.reason == "dns"
        assert expected in str(result.problem), str(result.problem)


def test_resolve_txt_gives_up_quickly_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no reachable name server the lookup is an OSError within its timeout, never a hang."""
    dns_resolver = pytest.importorskip("dns.resolver")
    from newsletter.dkimcheck import resolve_txt

    resolver = dns_resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = free_port()  # nobody answers there
    monkeypatch.setattr(dns_resolver, "default_resolver", resolver)
    started = time.monotonic()
    with pytest.raises(OSError):
        resolve_txt(record_name("s", DOMAIN), timeout=0.5)
    assert time.monotonic() - started < 3


# --- the commands -------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_and_prints_the_record(runner, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["dkim", "keygen", "--domain", DOMAIN, "--selector", "breakfast2026"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "dkim" / f"breakfast2026.{DOMAIN}.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    record = public_record(key)  # type: ignore[arg-type]
    assert f"name:  breakfast2026._domainkey.{DOMAIN}\n" in result.output
    assert f"value: {record}\n" in result.output
    assert '"v=DKIM1; k=rsa; "' in result.output
    assert f'key_file = "dkim/breakfast2026.{DOMAIN}.pem"' in result.output
    assert record.split("p=")[1][:40] in result.output

    again = runner.invoke(cli, ["dkim", "keygen", "--domain", DOMAIN, "--selector", "breakfast2026"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert serialization.load_pem_private_key(path.read_bytes(), None).public_key() == key.public_key()

    forced = runner.invoke(cli, ["dkim", "keygen", "--domain", DOMAIN, "--selector", "breakfast2026", "--force"])
    assert forced.exit_code == 0, forced.output
    assert path.stat().st_mode & 0o777 == 0o600
    assert serialization.load_pem_private_key(path.read_bytes(), None).public_key() != key.public_key()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_keygen_ed25519_beside_the_configuration(runner, tmp_path: Path) -> None:
    config = tmp_path / "conf" / "newsletter.toml"
    config.parent.mkdir()
    config.write_text("")
    args = ["dkim", "keygen", "--domain", DOMAIN, "--selector", "ed1", "--algorithm", "ed25519-sha256"]
    result = runner.invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "conf" / "dkim" / f"ed1.{DOMAIN}.pem").stat().st_mode & 0o777 == 0o600
    assert "value: v=DKIM1; k=ed25519; p=" in result.output
    assert 'ed25519_selector = "ed1"' in result.output
    assert f'ed25519_key_file = "dkim/ed1.{DOMAIN}.pem"' in result.output

    out = tmp_path / "elsewhere" / "key.pem"
    result = runner.invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0 and out.stat().st_mode & 0o777 == 0o600
    bad = runner.invoke(cli, ["dkim", "keygen", "--domain", "not a domain", "--selector", "s"])
    assert bad.exit_code == 2 and "a domain name" in bad.output


def write_config(tmp_path: Path, **dkim: str) -> Path:
    lines = [
        '[newsletter]\npublication = "The Example Gazette"',
        f'[sender]\nfrom_address = "breakfast@{DOMAIN}"',
        '[web]\nbase_url = "https://news.example.com/newsletter"',
        "[dkim]",
        *(f'{key} = "{value}"' for key, value in dkim.items()),
    ]
    path = tmp_path / "newsletter.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_check_command(runner, tmp_path: Path, key_files, pems) -> None:
    config = write_config(
        tmp_path,
        domain=DOMAIN,
        selector="breakfast2026",
        key_file=key_files["rsa-sha256"].name,  # relative to the configuration
        ed25519_selector="breakfast2026e",
        ed25519_key_file=str(key_files["ed25519-sha256"]),
    )
    result = runner.invoke(cli, ["dkim", "check", "--no-dns", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "rsa-sha256 d=news.example.com s=breakfast2026 verifies (dkimpy)" in result.output
    assert "ed25519-sha256 d=news.example.com s=breakfast2026e verifies (dkimpy)" in result.output
    assert "DNS check skipped" in result.output

    env_config = write_config(tmp_path, domain=DOMAIN, selector="breakfast2026")
    env = {"NEWSLETTER_DKIM_KEY": pems["rsa-sha256"][0].decode()}
    result = runner.invoke(cli, ["dkim", "check", "--no-dns", "--config", str(env_config)], env=env)
    assert result.exit_code == 0, result.output
    assert "from dkim.key" in result.output


def test_check_command_failures(runner, tmp_path: Path, key_files, pems) -> None:
    rsa_pem = pems["rsa-sha256"][0]
    encrypted = serialization.load_pem_private_key(rsa_pem, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    files = {"garbage.pem": rsa_pem[:300] + b"!!" + rsa_pem[302:], "encrypted.pem": encrypted}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    cases = {
        "/dev/zero": "not a regular file",
        "garbage.pem": "not a PEM private key",
        "encrypted.pem": "encrypted with a passphrase",
        str(key_files["ed25519-sha256"]): "an Ed25519 key, but the algorithm is rsa-sha256",
    }
    for key_file, expected in cases.items():
        config = write_config(tmp_path, domain=DOMAIN, selector="breakfast2026", key_file=key_file)
        result = runner.invoke(cli, ["dkim", "check", "--no-dns", "--config", str(config)])
        assert result.exit_code == 2, (key_file, result.output)  # a key that cannot be used: configuration
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], (key_file, result.output)
        assert not any(line.decode() in result.output for line in rsa_pem.splitlines()[1:-1])

    env_config = write_config(tmp_path, domain=DOMAIN, selector="breakfast2026")
    result = runner.invoke(
        cli, ["dkim", "check", "--no-dns", "--config", str(env_config)], env={"NEWSLETTER_DKIM_KEY": "not a key"}
    )
    assert result.exit_code == 2 and "error: dkim.key (or $NEWSLETTER_DKIM_KEY): not a PEM private key" in result.output

    unconfigured = write_config(tmp_path)
    result = runner.invoke(cli, ["dkim", "check", "--config", str(unconfigured)])
    assert result.exit_code == 2 and "dkim.domain: missing: DKIM signing is off" in result.output


# --- speed --------------------------------------------------------------------------------------


def test_signing_a_62_kb_copy_with_ed25519_takes_well_under_a_millisecond(signers, template) -> None:
    """The budget is about 0.1 ms (body hash, a dozen header fields, one signature); 1 ms
    leaves room for a slow, shared CI machine while catching a return to pure-Python signing."""
    signer = signers["ed25519"]
    messages = [template.render_parts(reader(i), NOW) for i in range(200)]
    timings = []
    for parts in messages:
        started = time.perf_counter()
        signer.sign(parts, NOW)
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.001, f"median {statistics.median(timings) * 1e6:.0f} µs"


def test_keygen_never_writes_over_something_that_is_not_a_key_file(runner, tmp_path: Path) -> None:
    import os

    device_like = tmp_path / "null"
    os.symlink("/dev/null", device_like)  # --out /dev/null --force once replaced the device
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (device_like, fifo):
        args = ["dkim", "keygen", "--domain", DOMAIN, "--selector", "s1", "--out", str(path), "--force"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and "not a regular file" in result.output, result.output
    assert os.readlink(device_like) == "/dev/null" and Path("/dev/null").is_char_device()


def test_the_second_selector_must_differ_from_the_first() -> None:
    from newsletter.errors import ConfigError

    data = {
        "newsletter": {"publication": "Gazette"},
        "sender": {"from_address": "breakfast@news.example.com"},
        "web": {"base_url": "https://news.example.com", "secret_key": "k" * 40},
        "dkim": {"domain": DOMAIN, "selector": "s1", "key": "x", "ed25519_selector": "S1", "ed25519_key": "y"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "<memory>", {})
    assert info.value.key == "dkim.ed25519_selector"


def test_a_key_that_cannot_be_used_is_a_configuration_error_exit_2(runner, tmp_path: Path) -> None:
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'[newsletter]\npublication = "Gazette"\n[sender]\nfrom_address = "breakfast@{DOMAIN}"\n'
        f'[web]\nbase_url = "https://{DOMAIN}"\nsecret_key = "{"k" * 40}"\n'
        f'[dkim]\ndomain = "{DOMAIN}"\nselector = "s1"\nkey_file = "/dev/zero"\n'
    )
    result = runner.invoke(cli, ["--config", str(config), "dkim", "check", "--no-dns"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "not a regular file" in result.output
