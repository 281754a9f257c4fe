"""Bad input on the command line: one line, the right exit code, no traceback, nothing half-written.

Config files from /dev/zero or nested 100,000 deep, dates at the ends of the calendar, a
pipe closed by `head`, a database folder that does not exist, and a run that gives up on
deferred readers (which must say so instead of printing "sent 0").
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.context import Context
from newsletter.publish import send_edition
from newsletter.store import deliveries as delivery_log
from newsletter.store.editions import edition_for
from newsletter.store.models import DeliveryStatus
from tests.conftest import SMTPServer, add_subscribers, make_config, morning_articles
from tests.faults import Faults
from tests.test_cli import Site, write_config
from tests.test_delivery_faults import faulty_server


@pytest.fixture
def site(runner: CliRunner, tmp_path: Path, smtp_sink: SMTPServer) -> Site:
    path = write_config(tmp_path / "newsletter.toml", "sqlite:///site.db", smtp_sink)
    Site(runner, path)("db", "upgrade")
    return Site(runner, path)


def one_line(result) -> str:
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.output
    return result.stderr


def deep_toml(folder: Path) -> Path:
    path = folder / "deep.toml"
    path.write_text('[newsletter]\npublication = "x"\nsections = ' + "[" * 100_000 + "\n", encoding="utf-8")
    return path


def big_toml(folder: Path) -> Path:
    path = folder / "big.toml"
    path.write_text("# " + "x" * 1_100_000 + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda tmp: Path("/dev/zero"), "is not a regular file (a configuration is a text file of 1 MB at most)"),
        (deep_toml, "nested too deeply"),
        (big_toml, "is larger than 1 MB"),
        (lambda tmp: (tmp / "bad.toml").write_bytes(b"[newsletter]\npublication = \"\xff\"\n") and tmp / "bad.toml",
         "cannot be read"),
    ],
    ids=["dev-zero", "nested", "too-big", "not-utf8"],
)  # fmt: skip
def test_config_files_that_are_not_configs(runner: CliRunner, tmp_path: Path, make, words: str) -> None:
    result = runner.invoke(cli, ["--config", str(make(tmp_path)), "status"])
    assert result.exit_code == 2
    assert words in one_line(result)


@pytest.mark.parametrize(
    ("section", "key", "value", "words"),
    [
        ("web", "base_url", "http://[::1", "web.base_url: expected an http(s) URL"),
        ("newsletter", "subject", "{name:>300000000}", "newsletter.subject: expected a subject using only"),
        ("newsletter", "subject", "{name!r}", "newsletter.subject: expected a subject using only"),
        ("store", "url", "sqlite:///no/such/folder/site.db", "/no/such/folder does not exist"),
    ],
)
def test_config_values_that_used_to_crash(runner, tmp_path, section, key, value, words) -> None:
    path = write_config(tmp_path / "newsletter.toml", "sqlite:///site.db", None, **{section: {key: value}})
    for args in (["status"], ["send", "--dry-run"]):
        result = runner.invoke(cli, ["--config", str(path), *args])
        assert result.exit_code in (1, 2), result.output
        assert words in one_line(result)
    assert not (tmp_path / "no").exists()  # the missing folder was not created


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--date", "0001-01-01"],
        ["send", "--dry-run", "--date", "0001-01-01"],
        ["send", "--date", "9999-12-31"],
        ["preview", "--date", "0001-01-01"],
        ["status", "--date", "9999-12-31"],
        ["articles", "pin", "1", "--date", "0001-01-01"],
    ],
    ids=" ".join,
)
def test_dates_at_the_ends_of_the_calendar_are_usage_errors(site: Site, args: list[str]) -> None:
    result = site(*args, code=2)
    assert "Traceback" not in result.output and "out of range" in result.output


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`newsletter subscribers export | head -1` and `status | head`: no "Broken pipe" error."""
    path = write_config(tmp_path / "newsletter.toml", f"sqlite:///{tmp_path / 'site.db'}", None)
    command = [str(Path(sys.executable).parent / "newsletter")]
    env = {**os.environ, "NEWSLETTER_CONFIG": str(path)}
    subprocess.run([*command, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=60)
    people = "\n".join(f"reader{i}@example.org,Reader {i}" for i in range(20_000))
    (tmp_path / "people.csv").write_text("email,name\n" + people + "\n", encoding="utf-8")
    subprocess.run([*command, "subscribers", "import", str(tmp_path / "people.csv")], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    for args in (["subscribers", "export"], ["subscribers", "list", "--limit", "20000"]):
        pipeline = subprocess.run(
            f"{' '.join(command + args)} | head -n 1", shell=True, env=env, capture_output=True, text=True, timeout=120
        )
        assert pipeline.stdout.count("\n") == 1
        assert pipeline.stderr == "", pipeline.stderr


def test_a_run_that_gives_up_on_deferred_readers_says_so(db_url, store, clock, tokens) -> None:
    morning_articles(store, clock)
    emails = add_subscribers(store, clock, 3)
    with faulty_server(Faults(rcpt_temporary=1.0, close_421=False)) as (_server, port):
        config = make_config(db_url, None, smtp={"port": port}, delivery={"max_attempts": 1, "give_up_hours": 2})
        ctx = Context(config, store, clock, tokens)
        first = send_edition(ctx, day=date(2026, 11, 24))
        assert first.outcome == "incomplete" and first.stats.deferred == len(emails)
        clock.advance(3 * 3600)  # the morning is long gone
        again = send_edition(ctx, day=date(2026, 11, 24))
    assert "gave up on 3 deferred after 2 h (last reply: " in again.message
    assert not again.ok  # a cron job's exit code and the scheduler's log level both show it
    with store.session() as session:
        edition_id = edition_for(session, date(2026, 11, 24)).id
    with store.engine.connect() as conn:
        assert delivery_log.status_counts(conn, edition_id)[DeliveryStatus.FAILED] == 3
        assert delivery_log.given_up_count(conn, edition_id) == 3


def test_the_example_sender_never_reaches_real_readers(runner: CliRunner, tmp_path: Path) -> None:
    from newsletter.errors import ConfigError
    from newsletter.publish import refuse_example_sender

    remote = {"smtp": {"host": "smtp.relay.invalid", "port": 587}}
    path = write_config(tmp_path / "newsletter.toml", "sqlite:///site.db", None, **remote)
    Site(runner, path)("db", "upgrade")
    result = runner.invoke(cli, ["--config", str(path), "send"])
    assert result.exit_code == 2
    assert "sender.from_address: expected an address at your own domain" in one_line(result)
    for host, sender, refused in [
        ("smtp.relay.invalid", "breakfast@news.example.com", True),
        ("smtp.relay.invalid", "breakfast@example.org", True),
        ("smtp.relay.invalid", "news@paper.test", True),
        ("127.0.0.1", "breakfast@news.example.com", False),  # the demo and local trials
        ("localhost", "breakfast@news.example.com", False),
        ("smtp.relay.invalid", "breakfast@gazette.co.uk", False),
        ("smtp.relay.invalid", "breakfast@example.com.au", False),
    ]:
        config = make_config("sqlite:///x.db", smtp={"host": host}, sender={"from_address": sender})
        if refused:
            with pytest.raises(ConfigError):
                refuse_example_sender(config)
        else:
            refuse_example_sender(config)
