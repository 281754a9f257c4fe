"""Signed links: each token works for its purpose, its subscriber and its address, and only until it expires."""

from __future__ import annotations

import pytest

from newsletter.clock import FixedClock
from newsletter.errors import TokenError
from newsletter.tokens import CONFIRM, PURPOSES, UNSUBSCRIBE, Tokens, email_digest
from tests.conftest import SECRET

DAY = 86_400


@pytest.mark.parametrize("purpose", PURPOSES)
def test_round_trip(tokens: Tokens, purpose: str) -> None:
    token = tokens.make(purpose, 42, "ana@example.org")
    assert token.isascii() and len(token) < 80
    claim = tokens.read(purpose, token, max_age_days=7)
    assert claim.subscriber_id == 42
    assert claim.matches("ana@example.org")
    assert claim.matches(" Ana@Example.ORG ")  # the digest is of the normalised address


def test_tokens_differ_per_subscriber_and_purpose(tokens: Tokens) -> None:
    made = {
        tokens.make(UNSUBSCRIBE, 1, "ana@example.org"),
        tokens.make(UNSUBSCRIBE, 2, "ana@example.org"),
        tokens.make(UNSUBSCRIBE, 1, "bob@example.org"),
        tokens.make(CONFIRM, 1, "ana@example.org"),
    }
    assert len(made) == 4


@pytest.mark.parametrize(("made_for", "read_as"), [(CONFIRM, UNSUBSCRIBE), (UNSUBSCRIBE, CONFIRM)])
def test_a_token_for_one_purpose_is_refused_for_another(tokens: Tokens, made_for: str, read_as: str) -> None:
    token = tokens.make(made_for, 7, "ana@example.org")
    with pytest.raises(TokenError, match="not valid"):
        tokens.read(read_as, token, max_age_days=365)


def test_unknown_purpose_is_a_token_error(tokens: Tokens) -> None:
    token = tokens.make(UNSUBSCRIBE, 7, "ana@example.org")
    with pytest.raises(TokenError):
        tokens.read("delete-account", token, max_age_days=365)
    with pytest.raises(TokenError):
        tokens.make("delete-account", 7, "ana@example.org")


def test_tampered_tokens_are_refused(tokens: Tokens) -> None:
    token = tokens.make(UNSUBSCRIBE, 7, "ana@example.org")
    payload, _, rest = token.partition(".")
    other_payload = tokens.make(UNSUBSCRIBE, 8, "ana@example.org").partition(".")[0]
    middle = len(token) - 10  # inside the signature (its last character may only carry padding bits)
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    for forged in (flipped, other_payload + "." + rest, payload.replace("7", "8", 1) + "." + rest):
        with pytest.raises(TokenError, match="not valid"):
            tokens.read(UNSUBSCRIBE, forged, max_age_days=365)


def test_a_token_signed_with_another_key_is_refused(clock: FixedClock, tokens: Tokens) -> None:
    other = Tokens("another-secret-key-of-at-least-32-chars", clock)
    with pytest.raises(TokenError, match="not valid"):
        tokens.read(UNSUBSCRIBE, other.make(UNSUBSCRIBE, 7, "ana@example.org"), max_age_days=365)


def test_expiry_follows_the_clock(clock: FixedClock, tokens: Tokens) -> None:
    token = tokens.make(CONFIRM, 7, "ana@example.org")
    clock.advance(7 * DAY - 1)
    assert tokens.read(CONFIRM, token, max_age_days=7).subscriber_id == 7
    clock.advance(2)
    with pytest.raises(TokenError, match="expired"):
        tokens.read(CONFIRM, token, max_age_days=7)
    assert tokens.read(CONFIRM, token, max_age_days=8).subscriber_id == 7


def test_digest_mismatch_when_the_address_changed(tokens: Tokens) -> None:
    claim = tokens.read(UNSUBSCRIBE, tokens.make(UNSUBSCRIBE, 7, "ana@example.org"), max_age_days=365)
    assert claim.digest == email_digest("ana@example.org")
    assert not claim.matches("someone-else@example.org")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "...",
        "not-a-token",
        "7-abcdefghij",
        "7-abcdefghij.AAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBB",
        "ünïcödé.token.here",
        "x" * 257,
        "%2e%2e%2f",
        "\x00\r\n",
    ],
)
def test_garbage_is_refused_with_a_token_error(tokens: Tokens, garbage: str) -> None:
    with pytest.raises(TokenError, match="not valid"):
        tokens.read(UNSUBSCRIBE, garbage, max_age_days=365)


def test_a_secret_key_is_required(clock: FixedClock) -> None:
    with pytest.raises(TokenError, match="no secret key"):
        Tokens("", clock)
    assert Tokens(SECRET).make(CONFIRM, 1, "a@example.org")  # the system clock when none is given


def test_a_key_given_as_a_function_is_asked_for_when_a_token_is_first_made(clock: FixedClock) -> None:
    asked: list[str] = []

    def key() -> str:
        asked.append("key")
        return SECRET

    tokens = Tokens(key, clock)
    assert asked == []
    token = tokens.make(CONFIRM, 1, "a@example.org")
    assert tokens.read(CONFIRM, token, max_age_days=1).subscriber_id == 1 and asked == ["key"]
    assert token == Tokens(SECRET, clock).make(CONFIRM, 1, "a@example.org")
    with pytest.raises(TokenError, match="no secret key"):
        Tokens(lambda: "", clock).read(CONFIRM, token, max_age_days=1)


def test_an_expired_link_is_its_own_class_and_a_claim_says_when_it_was_signed() -> None:
    from datetime import UTC, datetime

    from newsletter.clock import FixedClock
    from newsletter.errors import TokenExpiredError
    from newsletter.tokens import CONFIRM, Tokens

    clock = FixedClock(datetime(2026, 11, 24, 6, 0, 30, 500_000, tzinfo=UTC))
    tokens = Tokens("k" * 40, clock)
    token = tokens.make(CONFIRM, 7, "ana@example.org")
    assert tokens.read(CONFIRM, token, 7).issued_at == datetime(2026, 11, 24, 6, 0, 30, tzinfo=UTC)
    clock.advance(8 * 86_400)
    with pytest.raises(TokenExpiredError):
        tokens.read(CONFIRM, token, 7)
