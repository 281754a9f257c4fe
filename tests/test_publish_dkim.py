"""DKIM on the real send path: every copy signed per reader, verified after crossing an SMTP server."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest

from newsletter.context import Context
from newsletter.dkim import generate_key, record_name
from newsletter.dkimcheck import verify
from newsletter.errors import DkimError
from newsletter.publish import send_edition, send_test_copy
from newsletter.store.models import SubscriberStatus
from tests.conftest import add_subscribers, make_config, morning_articles


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("dkim")
    found = {}
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        pem, record = generate_key(algorithm)
        path = folder / f"{algorithm}.pem"
        path.write_bytes(pem)
        found[algorithm] = (path, record)
    return found


def test_every_copy_is_signed_twice_and_verifies_after_smtp(db_url, smtp_sink, store, clock, tokens, keys) -> None:
    rsa_path, rsa_record = keys["rsa-sha256"]
    ed_path, ed_record = keys["ed25519-sha256"]
    config = make_config(
        db_url,
        smtp_sink,
        dkim={
            "domain": "news.example.com",
            "selector": "brk2026",
            "key_file": str(rsa_path),
            "ed25519_selector": "brk2026e",
            "ed25519_key_file": str(ed_path),
        },
    )
    morning_articles(store, clock)
    add_subscribers(store, clock, 3)
    with store.session() as session:  # a name that needs RFC 2047 in To
        from newsletter.store.readers import subscribers_by_email

        subscribers_by_email(session, ["reader1@example.org"])["reader1@example.org"].name = "Zoë García-Núñez"
    assert send_edition(Context(config, store, clock, tokens)).outcome == "sent"
    records = {
        record_name("brk2026", "news.example.com"): rsa_record,
        record_name("brk2026e", "news.example.com"): ed_record,
    }
    got = smtp_sink.handler.by_recipient()
    assert len(got) == 3
    signatures = set()
    for (received,) in got.values():
        verified = verify(received.data, records)  # the bytes as the server received them
        assert [v.algorithm for v in verified] == ["rsa-sha256", "ed25519-sha256"]
        message = email.message_from_bytes(received.data, policy=policy.default)
        assert "\r\n " in received.data.split(b"List-Unsubscribe:", 1)[1].split(b"\r\n\r\n")[0].decode()
        signatures.add(str(message["DKIM-Signature"]))
    assert len(signatures) == 3  # personal headers and body: one signature each
    assert "=?utf-8?" in got["reader1@example.org"][0].data.decode("ascii")  # the encoded name was signed too


def test_a_test_copy_is_signed_too(db_url, smtp_sink, store, clock, tokens, keys) -> None:
    path, record = keys["ed25519-sha256"]
    config = make_config(
        db_url,
        smtp_sink,
        dkim={"domain": "example.com", "selector": "s1", "algorithm": "ed25519-sha256", "key_file": str(path)},
        sender={"from_address": "breakfast@news.example.com"},
    )
    morning_articles(store, clock)
    send_test_copy(Context(config, store, clock, tokens), None, "desk@news.example.com")
    (received,) = smtp_sink.handler.by_recipient()["desk@news.example.com"]
    assert [v.domain for v in verify(received.data, {record_name("s1", "example.com"): record})] == ["example.com"]


def test_a_key_that_cannot_be_read_stops_the_send_before_anyone_gets_mail(
    db_url, smtp_sink, store, clock, tokens, tmp_path
) -> None:
    bad = tmp_path / "garbage.pem"
    bad.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    config = make_config(db_url, smtp_sink, dkim={"domain": "news.example.com", "selector": "s", "key_file": str(bad)})
    morning_articles(store, clock)
    add_subscribers(store, clock, 2)
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    with pytest.raises(DkimError) as info:
        send_edition(Context(config, store, clock, tokens))
    assert info.value.reason == "key" and "not a key" not in str(info.value)
    assert smtp_sink.handler.by_recipient() == {}
