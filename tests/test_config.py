"""Configuration: every bad input is one line naming the file, the key and what was expected."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Any

import pytest

from newsletter.cli import cli
from newsletter.config import _SECTIONS, Config, FeedConfig, load_config, parse_config
from newsletter.errors import ConfigError
from newsletter.message import check_address
from tests.conftest import SECRET

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
PASSWORD = "correct-horse-battery-staple"


def minimal() -> dict[str, dict[str, Any]]:
    """The smallest valid configuration: the three required keys."""
    return {
        "newsletter": {"publication": "The Example Gazette"},
        "sender": {"from_address": "breakfast@news.example.com"},
        "web": {"base_url": "https://news.example.com/newsletter"},
    }


def toml_text(data: dict[str, Any]) -> str:
    """Write simple nested dicts as TOML (JSON strings, numbers and lists are valid TOML values)."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def config_error(data: dict[str, Any], environ: dict[str, str] | None = None, source: str = "/etc/nl.toml") -> str:
    """The one-line message parse_config gives for ``data``."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, source, environ or {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{source}: ")
    return message


def with_value(section: str, key: str, value: Any) -> dict[str, Any]:
    data = minimal()
    data.setdefault(section, {})[key] = value
    return data


# --- valid configurations ----------------------------------------------------------------


def test_minimal_config_takes_the_documented_defaults() -> None:
    config = parse_config(minimal(), "<memory>", {})
    assert config.newsletter.name == "Breakfast in red"
    assert config.newsletter.timezone == "Europe/London"
    assert config.newsletter.send_time == time(6, 0)
    assert config.newsletter.send_when_empty is False
    assert config.store.url == "sqlite:///newsletter.db"
    assert config.smtp.security == "starttls" and config.smtp.effective_port == 587
    assert config.list_id == "breakfast-in-red.news.example.com"
    assert config.from_name == "Breakfast in red"


def test_values_are_converted_and_normalised() -> None:
    data = minimal()
    data["newsletter"].update(timezone=" America/New_York ", send_time="7:05")
    data["store"] = {"url": "postgresql://newsletter@db.example.com/news"}
    data["smtp"] = {"security": "ssl", "timeout": 12}
    data["web"]["base_url"] = "https://news.example.com/newsletter/"
    data["scheduler"] = {"days": ["Friday", "mon"]}
    config = parse_config(data, "<memory>", {})
    assert config.newsletter.timezone == "America/New_York"
    assert config.newsletter.zone.key == "America/New_York"
    assert config.newsletter.send_time == time(7, 5)
    assert config.store.url == "postgresql+psycopg://newsletter@db.example.com/news"
    assert config.smtp.effective_port == 465 and config.smtp.timeout == 12.0
    assert config.web.base_url == "https://news.example.com/newsletter"
    assert config.scheduler.days == ("mon", "fri")


def test_toml_local_time_is_accepted_for_send_time(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.toml"
    path.write_text(
        toml_text(minimal()).replace("[newsletter]", "[newsletter]\nsend_time = 05:45:00"), encoding="utf-8"
    )
    assert load_config(path, environ={}).newsletter.send_time == time(5, 45)


# --- bad values: one line naming the file, the key and what was expected -----------------

BAD_VALUES = [
    # (section, key, value, words the message must contain)
    ("newsletter", "publication", "", "the publication's name"),
    ("newsletter", "publication", 42, "the publication's name"),
    ("newsletter", "name", ["a"], "the newsletter's name"),
    ("newsletter", "name", "Breakfast\nin red", "no line breaks"),
    ("newsletter", "timezone", "Mars/Olympus_Mons", "IANA time zone"),
    ("newsletter", "timezone", "../../etc/passwd", "IANA time zone"),
    ("newsletter", "timezone", 0, "IANA time zone"),
    ("newsletter", "send_time", "25:00", '"HH:MM"'),
    ("newsletter", "send_time", "6am", '"HH:MM"'),
    ("newsletter", "send_time", 600, '"HH:MM"'),
    ("newsletter", "send_when_empty", "yes", "true or false"),
    ("newsletter", "send_when_empty", 1, "true or false"),
    ("newsletter", "subject", "{nam}", "{name}, {publication}, {date} and {count}"),
    ("newsletter", "subject", "{date.year}", "{name}, {publication}, {date} and {count}"),
    ("newsletter", "subject", "{count[0]}", "{name}, {publication}, {date} and {count}"),
    ("newsletter", "subject", "{0}", "{name}, {publication}, {date} and {count}"),
    ("newsletter", "subject", "{date", "{name}, {publication}, {date} and {count}"),
    ("newsletter", "address", 7, "postal address"),
    ("store", "url", "mysql://db.example.com/news", "database URL"),
    ("store", "url", 5, "database URL"),
    ("smtp", "host", "", "a host name"),
    ("smtp", "port", 0.5, "port number from 1 to 65535"),
    ("smtp", "port", -1, "port number from 1 to 65535, or 0 for the usual one"),
    ("smtp", "port", 70000, "port number from 1 to 65535"),
    ("smtp", "port", "25", "port number from 1 to 65535"),
    ("smtp", "port", True, "port number from 1 to 65535"),
    ("smtp", "security", "tls", '"none", "starttls" or "ssl"'),
    ("smtp", "timeout", 0, "seconds, from 1 to 600"),
    ("smtp", "timeout", "30", "seconds, from 1 to 600"),
    ("smtp", "connections", 65, "from 1 to 64"),
    ("smtp", "max_messages_per_connection", 0, "from 1 to 1000000"),
    ("smtp", "max_per_second", -1, "messages per second"),
    ("sender", "from_address", "breakfast", "email address"),
    ("sender", "from_address", "Breakfast <breakfast@news.example.com>", "email address"),
    ("sender", "from_address", "zoë@news.example.com", "email address"),
    ("sender", "from_address", "a..b@news.example.com", "email address"),
    ("sender", "from_address", "breakfast@localhost", "email address"),
    ("sender", "reply_to", "desk@", "email address"),
    ("sender", "unsubscribe_address", "x y@example.org", "email address"),
    ("sender", "envelope_from", "bounces@example.org\r\nBcc: x@evil.example", "no line breaks"),
    ("web", "base_url", "news.example.com", "http(s) URL"),
    ("web", "base_url", "ftp://news.example.com", "http(s) URL"),
    ("web", "base_url", "https://", "http(s) URL"),
    ("web", "base_url", "https://news.example.com/nl?x=1", "http(s) URL"),
    ("web", "base_url", "https://news.example.com/a b", "http(s) URL"),
    ("web", "base_url", "https://news.example.com/<x>", "http(s) URL"),
    ("web", "base_url", "https://news.example.com:99999/", "http(s) URL"),
    ("web", "production", "true", "true or false"),
    ("web", "confirm_days", 0, "days, from 1 to 90"),
    ("web", "unsubscribe_days", 29, "days, from 30 to 3650"),
    ("delivery", "batch_size", 0, "from 1 to 10000"),
    ("delivery", "max_attempts", 21, "from 1 to 20"),
    ("delivery", "backoff_seconds", -0.5, "seconds, from 0 to 600"),
    ("delivery", "lease_seconds", 5, "seconds, from 10 to 86400"),
    ("delivery", "transport", "mbox", '"smtp" or "maildir"'),
    ("scheduler", "days", [], "weekdays"),
    ("scheduler", "days", ["mon", "someday"], "weekdays"),
    ("scheduler", "days", ["mon", "monday"], "weekdays"),
    ("scheduler", "days", "mon", "weekdays"),
    ("scheduler", "grace_minutes", 1441, "minutes, from 0 to 1440"),
    ("scheduler", "fetch_feeds", "no", "true or false"),
    ("newsletter", "sections", "News", "list of distinct section names"),
    ("newsletter", "sections", ["News", "news"], "list of distinct section names"),
    ("newsletter", "sections", ["News", ""], "list of distinct section names"),
    ("newsletter", "sections", ["News\nBcc"], "no line breaks"),
    ("newsletter", "sections", ["x" * 101], "list of distinct section names"),
    ("newsletter", "sections", [1], "list of distinct section names"),
    ("newsletter", "more_stories", "", "heading"),
    ("newsletter", "max_age_hours", 0, "hours, from 1 to 8760"),
    ("newsletter", "max_age_hours", 10**30, "hours, from 1 to 8760"),
    ("design", "logo_url", "javascript:alert(1)", "http(s) URL"),
    ("design", "logo_url", "//cdn.example.com/logo.png", "http(s) URL"),
    ("design", "logo_width", 0, "pixels, from 16 to 600"),
    ("design", "thumbnails", "yes", "true or false"),
    ("design", "logo_alt", "a\x00b", "no line breaks"),
    ("preflight", "block_on_error", "yes", "true or false"),
    ("preflight", "notify", "desk@news.example.com", "list of distinct email addresses"),
    ("preflight", "notify", ["desk@news.example.com", "Desk@news.example.com"], "list of distinct email addresses"),
    ("preflight", "notify", ["desk"], "email address"),
    ("preflight", "link_timeout_seconds", 0, "seconds, from 0.1 to 120"),
    ("preflight", "link_check_seconds", 0.5, "seconds, from 1 to 3600"),
    ("preflight", "link_concurrency", 0, "from 1 to 64"),
    ("preflight", "user_agent", "", "user agent"),
    ("preflight", "user_agent", "Frühstück/1.0", "printable ASCII"),
    ("preflight", "max_redirects", 21, "from 0 to 20"),
    ("preflight", "spam_threshold", "5", "SpamAssassin score"),
    ("preflight", "screenshots", 1, "true or false"),
    ("preflight", "screenshot_dir", "", "directory path"),
]


@pytest.mark.parametrize(
    "priorities",
    [{"Breaking": 1001}, {"Breaking": "high"}, {"": 1}, {"Breaking": True}, "Breaking", {"x" * 101: 1}],
    ids=str,
)
def test_a_feeds_priority_table_is_checked(priorities: Any) -> None:
    data = minimal()
    data["feeds"] = [{"url": "https://news.example.com/feed.xml", "priorities": priorities}]
    assert "feeds[0].priorities: expected a table of category = priority" in config_error(data)


@pytest.mark.parametrize(("section", "key", "value", "expected"), BAD_VALUES, ids=lambda v: str(v)[:30])
def test_bad_value_names_file_key_expectation_and_value(section: str, key: str, value: Any, expected: str) -> None:
    message = config_error(with_value(section, key, value))
    assert message.startswith(f"/etc/nl.toml: {section}.{key}: expected ")
    assert expected in message
    assert f"got {value!r}" in message


def test_every_address_the_config_accepts_can_be_written_into_a_header() -> None:
    for address in ["breakfast@news.example.com", "a.b+c@x-y.example.org", "o'brien@example.ie", "x@b.co"]:
        config = parse_config(with_value("sender", "reply_to", address), "<memory>", {})
        assert check_address("Reply-To", config.sender.reply_to) == address


def test_unknown_section() -> None:
    data = minimal()
    data["mail"] = {"host": "x"}
    message = config_error(data)
    assert message.startswith("/etc/nl.toml: mail: unknown section; expected one of: newsletter, store, smtp")


def test_unknown_key_lists_the_known_ones() -> None:
    message = config_error(with_value("smtp", "hostname", "mail.example.com"))
    assert message.startswith("/etc/nl.toml: smtp.hostname: unknown key; expected one of: host, port, security")


def test_a_section_that_is_not_a_table() -> None:
    data: dict[str, Any] = minimal()
    data["smtp"] = "mail.example.com"
    assert config_error(data) == "/etc/nl.toml: smtp: expected a table of keys"


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("newsletter", "publication", "the publication's name"),
        ("sender", "from_address", "an email address"),
        ("web", "base_url", "an http(s) URL"),
    ],
)
def test_missing_required_key(section: str, key: str, expected: str) -> None:
    data = minimal()
    del data[section][key]
    message = config_error(data)
    assert message.startswith(f"/etc/nl.toml: {section}.{key}: missing; expected {expected}")


def test_missing_required_section_names_its_key() -> None:
    data = minimal()
    del data["web"]
    assert "web.base_url: missing" in config_error(data)


def test_feeds() -> None:
    data: dict[str, Any] = minimal()
    data["feeds"] = [{"url": "https://news.example.com/feed.xml", "section": "News"}, {"url": "local.xml"}]
    config = parse_config(data, "<memory>", {})
    assert config.feeds == (
        FeedConfig(url="https://news.example.com/feed.xml", section="News"),
        FeedConfig(url="local.xml"),
    )
    data["feeds"] = {"url": "x"}
    assert config_error(data) == "/etc/nl.toml: feeds: expected [[feeds]] tables, each with a url"
    data["feeds"] = [{"section": "News"}]
    assert config_error(data).startswith("/etc/nl.toml: feeds[0].url: missing; expected a feed URL")
    data["feeds"] = [{"url": "x", "title": "y"}]
    assert config_error(data).startswith("/etc/nl.toml: feeds[0].title: unknown key")


def test_short_secret_key_is_refused_with_a_way_to_make_one() -> None:
    message = config_error(with_value("web", "secret_key", "too-short"))
    assert message.startswith("/etc/nl.toml: web.secret_key: expected at least 32 characters")
    assert "secrets.token_urlsafe" in message
    assert "too-short" not in message


def test_short_secret_key_from_the_environment_says_where_it_came_from() -> None:
    message = config_error(minimal(), {"NEWSLETTER_SECRET_KEY": "too-short"})
    assert message.startswith("/etc/nl.toml: web.secret_key (from $NEWSLETTER_SECRET_KEY): expected at least 32")


def test_bad_database_url_from_the_environment_says_where_it_came_from() -> None:
    message = config_error(minimal(), {"NEWSLETTER_DATABASE_URL": "mysql://u:hunter2@db/news"})
    assert message.startswith("/etc/nl.toml: store.url (from $NEWSLETTER_DATABASE_URL): expected a database URL")
    assert "hunter2" not in message and "u:***@db" in message


def test_password_over_the_network_without_encryption_is_refused() -> None:
    data = minimal()
    data["smtp"] = {"host": "mail.example.com", "security": "none", "username": "news", "password": PASSWORD}
    message = config_error(data)
    assert message.startswith('/etc/nl.toml: smtp.security: expected "starttls" or "ssl"')
    assert "mail.example.com" in message and PASSWORD not in message
    # the same login to a server on this machine is fine, and so is no login at all
    data["smtp"]["host"] = "127.0.0.1"
    assert parse_config(data, "<memory>", {}).smtp.username == "news"
    data["smtp"] = {"host": "mail.example.com", "security": "none"}
    assert parse_config(data, "<memory>", {}).smtp.security == "none"


def test_secrets_never_appear_in_repr_or_errors() -> None:
    data = minimal()
    data["smtp"] = {"username": "news", "password": PASSWORD}
    data["web"]["secret_key"] = SECRET
    config = parse_config(data, "<memory>", {})
    assert config.smtp.password == PASSWORD and config.web.secret_key == SECRET
    for text in (repr(config), str(config), repr(config.smtp), repr(config.web)):
        assert PASSWORD not in text and SECRET not in text
    for section, key, bad in [
        ("smtp", "password", PASSWORD + "\n"),
        ("smtp", "password", PASSWORD + "é"),  # smtplib sends logins as ASCII: said up front
        ("imap", "password", PASSWORD + "é"),
        ("web", "secret_key", SECRET + "\n"),
    ]:
        broken = minimal()
        broken.setdefault(section, {})[key] = bad
        message = config_error(broken)
        assert bad.strip() not in message and "(hidden)" in message
    env_message = config_error(minimal(), {"NEWSLETTER_SMTP_PASSWORD": PASSWORD + "\r\nx"})
    assert PASSWORD not in env_message


def test_a_database_password_is_masked_in_repr() -> None:
    data = with_value("store", "url", f"postgresql+psycopg://news:{PASSWORD}@db.example.com/news")
    config = parse_config(data, "<memory>", {})
    assert config.store.url == f"postgresql+psycopg://news:{PASSWORD}@db.example.com/news"
    assert PASSWORD not in repr(config) and "news:***@db.example.com" in repr(config.store)


def test_missing_secret_key_is_asked_for_only_when_signing() -> None:
    config = parse_config(minimal(), "/etc/nl.toml", {})
    with pytest.raises(ConfigError) as info:
        config.require_secret_key()
    assert str(info.value) == ("/etc/nl.toml: web.secret_key: missing: set it in the file or in $NEWSLETTER_SECRET_KEY")


# --- the environment ---------------------------------------------------------------------


def test_environment_overrides_file_values() -> None:
    data = minimal()
    data["smtp"] = {"password": "from-file"}
    data["web"]["secret_key"] = "f" * 40
    data["store"] = {"url": "sqlite:///file.db"}
    environ = {
        "NEWSLETTER_SMTP_PASSWORD": PASSWORD,
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_DATABASE_URL": "postgresql+psycopg://news@db.example.com/news",
    }
    config = parse_config(data, "/etc/newsletter/nl.toml", environ)
    assert config.smtp.password == PASSWORD
    assert config.web.secret_key == SECRET
    assert config.store.url == "postgresql+psycopg://news@db.example.com/news"


def test_empty_environment_values_do_not_override() -> None:
    data = minimal()
    data["smtp"] = {"password": "from-file"}
    config = parse_config(data, "<memory>", {"NEWSLETTER_SMTP_PASSWORD": "", "NEWSLETTER_DATABASE_URL": ""})
    assert config.smtp.password == "from-file" and config.store.url == "sqlite:///newsletter.db"


# --- files: search order, relative paths, broken files --------------------------------------


def test_search_order_flag_then_environment_then_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def named(publication: str, path: Path) -> Path:
        data = minimal()
        data["newsletter"]["publication"] = publication
        return write(path, data)

    flag = named("From the flag", tmp_path / "flag.toml")
    env = named("From the environment", tmp_path / "env.toml")
    here = tmp_path / "cwd"
    here.mkdir()
    named("From the current directory", here / "newsletter.toml")
    monkeypatch.chdir(here)
    environ = {"NEWSLETTER_CONFIG": str(env)}
    assert load_config(flag, environ).newsletter.publication == "From the flag"
    assert load_config(None, environ).newsletter.publication == "From the environment"
    assert load_config(None, {}).newsletter.publication == "From the current directory"
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(env))
    assert load_config().newsletter.publication == "From the environment"


def test_no_config_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(None, {})
    assert str(info.value) == (
        "newsletter.toml: no configuration found: pass --config PATH, set $NEWSLETTER_CONFIG, "
        "or run `newsletter init` here"
    )


def test_missing_file(tmp_path: Path) -> None:
    for path, environ in [(tmp_path / "nope.toml", {}), (None, {"NEWSLETTER_CONFIG": str(tmp_path / "nope.toml")})]:
        with pytest.raises(ConfigError) as info:
            load_config(path, environ)
        assert str(info.value) == f"{tmp_path / 'nope.toml'}: file not found"


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, {})
    assert str(info.value).startswith(f"{tmp_path}: is not a regular file")


@pytest.mark.parametrize(
    "text",
    [
        "[newsletter\npublication = 'x'\n",
        "[newsletter]\npublication = The Example Gazette\n",
        "[newsletter]\npublication = 'a'\npublication = 'b'\n",
        b"[newsletter]\npublication = '\xff'\n",
    ],
    ids=["unclosed table", "unquoted string", "duplicate key", "not UTF-8"],
)
def test_broken_file_is_one_line(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / "newsletter.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert "not valid TOML" in message or "cannot be read" in message


def test_error_in_a_file_names_that_file(tmp_path: Path) -> None:
    path = write(tmp_path / "newsletter.toml", with_value("smtp", "port", 99999))
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value) == (
        f"{path}: smtp.port: expected a port number from 1 to 65535, or 0 for the usual one of smtp.security, got 99999"
    )


def test_relative_paths_resolve_next_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    data = minimal()
    data["store"] = {"url": "sqlite:///data/news.db"}
    data["delivery"] = {"maildir": "outbox"}
    data["newsletter"]["templates"] = "my-templates"
    (config_dir / "ca.pem").write_text("not checked until TLS is used\n")
    data["smtp"] = {"ca_file": "ca.pem"}
    data["imap"] = {"ca_file": "ca.pem"}
    path = write(config_dir / "newsletter.toml", data)
    monkeypatch.chdir(tmp_path)  # somewhere else, as cron would be
    config = load_config(Path("etc/newsletter.toml"), {})
    assert config.smtp.ca_file == config.imap.ca_file == str(config_dir.resolve() / "ca.pem")
    assert config.store.url == f"sqlite:///{config_dir.resolve() / 'data' / 'news.db'}"
    assert config.delivery.maildir == str(config_dir.resolve() / "outbox")
    assert config.newsletter.templates == str(config_dir.resolve() / "my-templates")
    # absolute paths and the environment's relative database URL
    data.pop("smtp"), data.pop("imap")
    data["store"] = {"url": f"sqlite:///{tmp_path}/abs.db"}
    data["delivery"] = {"maildir": f"{tmp_path}/box"}
    write(path, data)
    config = load_config(path, {})
    assert config.store.url == f"sqlite:///{tmp_path}/abs.db"
    assert config.delivery.maildir == f"{tmp_path}/box"
    config = load_config(path, {"NEWSLETTER_DATABASE_URL": "sqlite:///env.db"})
    assert config.store.url == f"sqlite:///{config_dir.resolve() / 'env.db'}"


def test_default_database_is_next_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path / "newsletter.toml", minimal())
    assert load_config(path, {}).store.url == f"sqlite:///{tmp_path.resolve() / 'newsletter.db'}"


def test_preflight_defaults_and_its_screenshots_next_to_the_config_file(tmp_path: Path) -> None:
    preflight = parse_config(minimal(), "<memory>", {}).preflight
    assert preflight.block_on_error is True and preflight.notify == ()
    assert preflight.spam_threshold == 5.0 and preflight.screenshots is True
    assert preflight.screenshot_dir == "preflight"
    path = write(tmp_path / "newsletter.toml", minimal())
    assert load_config(path, {}).preflight.screenshot_dir == str(tmp_path.resolve() / "preflight")
    data = minimal()
    data["preflight"] = {"screenshot_dir": "/var/tmp/shots", "notify": ["desk@news.example.com"], "max_redirects": 0}
    preflight = load_config(write(path, data), {}).preflight
    assert preflight.screenshot_dir == "/var/tmp/shots"
    assert preflight.notify == ("desk@news.example.com",) and preflight.max_redirects == 0


# --- the example file ------------------------------------------------------------------


def _documented_keys() -> dict[str, list[str]]:
    sections = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in _SECTIONS.items()}
    sections["feeds"] = [f.name for f in dataclasses.fields(FeedConfig)]
    return sections


def test_example_config_loads_with_a_secret_key_from_the_environment() -> None:
    config = load_config(EXAMPLE, {"NEWSLETTER_SECRET_KEY": SECRET})
    assert isinstance(config, Config)
    assert config.web.secret_key == SECRET
    assert config.require_secret_key() == SECRET


def test_example_config_sets_every_key_of_every_section() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for section, keys in _documented_keys().items():
        if section == "feeds":
            continue  # an optional list of tables: shown commented out, checked below
        assert sorted(data[section]) == sorted(keys), f"[{section}] in config.example.toml"


def test_example_config_has_a_comment_above_every_key() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    section = ""
    documented: dict[str, set[str]] = {}
    for number, line in enumerate(lines):
        header = re.fullmatch(r"#?\s*\[\[?(\w+)\]\]?", line.strip())
        if header:
            section = header.group(1)
            continue
        key = re.match(r"#?\s*(\w+)\s*=", line)
        if key and section:
            above = lines[number - 1].strip()
            assert above.startswith("#") and not re.match(r"#\s*\w+\s*=", above), (
                f"config.example.toml line {number + 1}: [{section}] {key.group(1)} has no comment above it"
            )
            documented.setdefault(section, set()).add(key.group(1))
    for section, keys in _documented_keys().items():
        missing = set(keys) - documented.get(section, set())
        assert not missing, f"config.example.toml does not document [{section}] {sorted(missing)}"


# --- through the command line --------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (toml_text(with_value("smtp", "port", "twenty-five")), "smtp.port: expected a port number from 1 to 65535"),
        ("[newsletter\n", "is not valid TOML"),
        ("[nonsense]\n", "nonsense: unknown section"),
        (toml_text(with_value("newsletter", "timezone", "Europe/Londn")), "newsletter.timezone: expected an IANA"),
    ],
    ids=["wrong type", "invalid TOML", "unknown section", "bad timezone"],
)
def test_cli_turns_a_bad_config_into_one_line_and_exit_code_2(runner, tmp_path: Path, content, expected) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(cli, ["--config", str(path), "status"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {path}: ")
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_without_any_config_says_how_to_get_one(runner, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["status"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: newsletter.toml: no configuration found: pass --config PATH, set $NEWSLETTER_CONFIG, "
        "or run `newsletter init` here\n"
    )


def test_cli_finds_the_config_through_the_environment(runner, tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path / "elsewhere.toml", with_value("smtp", "security", "maybe"))
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(path))
    result = runner.invoke(cli, ["subscribers", "list"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: smtp.security: expected one of")
