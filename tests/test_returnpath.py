"""VERP return paths: each message's envelope sender names its edition and reader, signed."""

from __future__ import annotations

import pytest

from newsletter.config import parse_config
from newsletter.errors import ConfigError, TokenError
from newsletter.returnpath import Attribution, ReturnPaths, return_paths

KEY = "k" * 40


def test_a_code_names_edition_and_reader_and_survives_case_folding() -> None:
    paths = ReturnPaths(KEY, "bounces@news.example.com")
    code = paths.code(12, 345678)
    assert paths.mail_from(code) == f"bounces+{code}@news.example.com"
    assert code == code.lower() and len(code) <= 32
    assert paths.read(code) == Attribution(12, 345678)
    assert paths.read(code.upper()) == Attribution(12, 345678)  # some servers fold local parts
    biggest = paths.code(2**31 - 1, 2**31 - 1)
    assert len(biggest) == 32 and paths.read(biggest) == Attribution(2**31 - 1, 2**31 - 1)


@pytest.mark.parametrize(
    "forge",
    [
        lambda code: code.replace(code.split("-")[1], "1", 1),  # another reader, same signature
        lambda code: code[:-1] + ("0" if code[-1] != "0" else "1"),  # one character of the signature
        lambda code: "",
        lambda code: "x" * 10_000,
        lambda code: code + "\r\nBcc: victim@example.org",
        lambda code: code.replace("-", "\x00"),
        lambda code: "ffffffffffffffffffff-1-" + code.rsplit("-", 1)[1],
    ],
)
def test_forged_or_damaged_codes_are_refused(forge) -> None:
    paths = ReturnPaths(KEY, "bounces@news.example.com")
    with pytest.raises(TokenError):
        paths.read(forge(paths.code(3, 77)))


def test_another_installation_cannot_make_codes_for_this_one() -> None:
    ours, theirs = ReturnPaths(KEY, "b@x.example.com"), ReturnPaths("z" * 40, "b@x.example.com")
    with pytest.raises(TokenError):
        ours.read(theirs.code(1, 1))


def test_verp_off_uses_the_single_address() -> None:
    paths = ReturnPaths(KEY, "bounces@news.example.com", verp=False)
    assert paths.mail_from(paths.code(1, 2)) == "bounces@news.example.com"


def _config(**bounces: object):
    data = {
        "newsletter": {"name": "Breakfast in red", "publication": "Gazette"},
        "sender": {"from_address": "breakfast@news.example.com", "envelope_from": "returns@news.example.com"},
        "web": {"base_url": "https://news.example.com", "secret_key": KEY},
        "bounces": bounces,
    }
    return parse_config(data, "<memory>", {})


def test_the_bounce_address_falls_back_to_the_envelope_sender_and_the_delimiter_is_configurable() -> None:
    paths = return_paths(_config())
    assert paths.mail_from("c0de").startswith("returns+c0de@")
    paths = return_paths(_config(address="bounce@news.example.com", delimiter="-"))
    assert paths.mail_from("c0de") == "bounce-c0de@news.example.com"


def test_a_local_part_too_long_for_a_code_is_refused_when_the_config_is_read() -> None:
    with pytest.raises(ConfigError) as info:
        _config(address="a" * 40 + "@news.example.com")
    assert info.value.key == "bounces.address"
    assert _config(address="a" * 40 + "@news.example.com", verp=False).bounces.verp is False


def test_a_bounce_address_holding_the_delimiter_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        _config(address="news-bounces@news.example.com", delimiter="-")
    assert info.value.key == "bounces.address" and "delimiter" in str(info.value)
    assert _config(address="news-bounces@news.example.com").bounces.delimiter == "+"
