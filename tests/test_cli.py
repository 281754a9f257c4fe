"""The command line, through click's runner: every command against a real database and SMTP server."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from newsletter.cli import cli
from newsletter.config import load_config
from newsletter.demo.sink import free_port
from newsletter.editions import cutoff, edition_date_due, long_date
from newsletter.store import Store
from newsletter.store.models import Delivery, Edition, EditionStatus
from tests.conftest import SECRET, SMTPServer

LONDON = ZoneInfo("Europe/London")


def due_day() -> date:
    """The edition the real clock says is due now (the CLI runs on the real clock)."""
    return edition_date_due(datetime.now(UTC), time(6), LONDON)


def write_config(path: Path, db_url: str, server: SMTPServer | None, **extra: dict[str, Any]) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "newsletter": {"publication": "The Example Gazette", "address": "1 Quay Street, Portside"},
        "store": {"url": db_url},
        "smtp": {"host": "127.0.0.1", "port": server.port if server else 2525, "security": "none", "timeout": 5},
        "sender": {"from_address": "breakfast@news.example.com"},
        "web": {"base_url": "https://news.example.com/newsletter", "secret_key": SECRET},
    }
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Site:
    """A configuration file plus a runner that passes it: ``site("send", "--dry-run")``."""

    def __init__(self, runner: CliRunner, path: Path) -> None:
        self.runner = runner
        self.path = path

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(cli, ["--config", str(self.path), *args])
        assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result

    @property
    def config(self):
        return load_config(self.path, {})

    def store(self) -> Store:
        return Store(self.config.store.url)


@pytest.fixture
def site(runner: CliRunner, tmp_path: Path, smtp_sink: SMTPServer) -> Site:
    """A migrated SQLite site talking to the recording SMTP server."""
    path = write_config(tmp_path / "newsletter.toml", "sqlite:///site.db", smtp_sink)
    Site(runner, path)("db", "upgrade")
    return Site(runner, path)


def one_error_line(result: Result) -> str:
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    return result.stderr


def add_morning(site: Site, day: date, count: int = 3) -> None:
    end = cutoff(day, time(6), LONDON)
    for i in range(count):
        site(
            "articles", "add", "--title", f"Story {i}: Zoë & “José” <b>", "--url", f"https://news.example.com/{i}",
            "--standfirst", f"About story {i}.", "--section", ["News", "Sport"][i % 2],
            "--published", (end - timedelta(hours=i + 1)).isoformat(),
        )  # fmt: skip


# --- init and db upgrade ------------------------------------------------------------------


def test_init_writes_a_config_that_loads_and_creates_the_database(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "site"
    result = runner.invoke(cli, ["init", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    path = folder / "newsletter.toml"
    assert f"wrote {path}" in result.stdout and "is at schema" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load_config(path, {})
    assert len(config.require_secret_key()) >= 32
    assert config.store.url == f"sqlite:///{folder.resolve() / 'newsletter.db'}"
    store = Store(config.store.url)
    try:
        store.check_schema()  # migrated to the newest revision
    finally:
        store.dispose()

    again = runner.invoke(cli, ["init", "--dir", str(folder)])
    assert again.exit_code == 2
    assert "already exists" in one_error_line(again) and "--force" in again.stderr
    assert load_config(path, {}).web.secret_key == config.web.secret_key

    forced = runner.invoke(cli, ["init", "--dir", str(folder), "--force"])
    assert forced.exit_code == 0, forced.output
    assert load_config(path, {}).web.secret_key != config.web.secret_key


def test_init_in_the_current_directory(runner: CliRunner, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli, ["init"]).exit_code == 0
    assert (tmp_path / "newsletter.toml").exists() and (tmp_path / "newsletter.db").exists()
    result = runner.invoke(cli, ["status"])  # found as ./newsletter.toml
    assert result.exit_code == 0, result.output
    assert "no editions yet" in result.stdout


def test_db_upgrade_creates_and_is_safe_to_repeat(runner: CliRunner, tmp_path: Path) -> None:
    path = write_config(tmp_path / "newsletter.toml", "sqlite:///data/new.db", None)
    site = Site(runner, path)
    assert "data does not exist" in one_error_line(site("db", "upgrade", code=1))  # a typo is not a wish
    (tmp_path / "data").mkdir()
    first = site("db", "upgrade")
    assert re.fullmatch(r"database sqlite:///\S+/data/new\.db is at schema \S+\n", first.stdout)
    assert site("db", "upgrade").stdout == first.stdout
    assert (tmp_path / "data" / "new.db").exists()


def test_commands_refuse_an_unmigrated_database(runner: CliRunner, tmp_path: Path) -> None:
    site = Site(runner, write_config(tmp_path / "newsletter.toml", "sqlite:///empty.db", None))
    result = site("subscribers", "list", code=1)
    assert "run `newsletter db upgrade` first" in one_error_line(result)


def test_a_file_that_is_not_a_database_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_bytes(b"these are my notes, not a database\n" * 100)
    site = Site(runner, write_config(tmp_path / "newsletter.toml", "sqlite:///notes.db", None))
    assert "the database failed: file is not a database" in one_error_line(site("status", code=1))


def test_an_output_path_that_cannot_be_written_is_one_line(site: Site, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    assert str(missing) in one_error_line(site("preview", "--out", str(missing / "edition.html"), code=1))
    assert str(missing) in one_error_line(site("subscribers", "export", "--out", str(missing / "list.csv"), code=1))


# --- articles -------------------------------------------------------------------------------


def test_articles_add_and_list(site: Site) -> None:
    bridge = ["--url", "https://news.example.com/bridge", "--published", "2026-11-24T05:30"]
    details = ["--standfirst", "Traffic flows again.", "--section", "News"]
    first = site("articles", "add", "--title", "Bridge reopens", *bridge, *details)
    assert first.stdout == "new: #1 Bridge reopens\n"
    assert first.stderr.startswith("warning: it was published too long before the next edition")
    assert "`newsletter articles pin 1` sends it anyway" in first.stderr
    same = site("articles", "add", "--title", "Bridge reopens", *bridge, *details)
    assert same.stdout == "unchanged: #1 Bridge reopens\n"
    changed = site("articles", "add", "--title", "Bridge reopens at last", *bridge)
    assert changed.stdout == "updated: #1 Bridge reopens at last\n"
    now = site("articles", "add", "--title", "Fresh", "--url", "https://news.example.com/fresh", "--priority", "3")
    assert now.stdout.startswith("new: #2 Fresh\nit goes in the next edition, of ")
    listing = site("articles", "list").stdout.splitlines()
    assert listing[0].split() == ["ID", "PUBLISHED", "STATE", "PRI", "SECTION", "TITLE"]
    assert re.fullmatch(r" 2  \d{4}-\d\d-\d\d \d\d:\d\d  waiting  \+3  \s*  Fresh", listing[1]), listing
    assert re.fullmatch(r" 1  2026-11-24 05:30  too old  \s+Bridge reopens at last", listing[2]), listing


def test_editors_steer_the_edition_from_the_cli(site: Site, tmp_path: Path) -> None:
    url = "https://news.example.com/theatre"
    site("articles", "add", "--title", "Theatre review", "--url", url, "--section", "Culture",
         "--image-url", "https://img.example.com/t.jpg", "--image-alt", "The stage")  # fmt: skip
    site("articles", "add", "--title", "Council approves plan", "--url", "https://news.example.com/council",
         "--section", "News", "--body", "<p>The council approved a <b>£40m</b> plan.</p><p>More.</p>")  # fmt: skip
    assert "leads the edition of" in site("articles", "pin", "2").stdout
    assert "lead 20" in site("articles", "list").stdout
    out = tmp_path / "p.html"
    site("preview", "--out", str(out))
    html = out.read_text(encoding="utf-8")
    assert html.index("Council approves plan") < html.index("Theatre review")
    assert "The council approved a £40m plan." in html  # the standfirst, taken from --body
    assert "hidden: it goes in no edition" in site("articles", "hide", url).stdout
    assert "hidden" in site("articles", "list", "--hidden").stdout
    site("preview", "--out", str(out))
    assert "Theatre review" not in out.read_text(encoding="utf-8")
    assert "shown again" in site("articles", "unhide", "1").stdout
    edited = site("articles", "edit", url, "--title", "Review: Les Mis", "--priority", "4")
    assert edited.stdout == "#1 “Review: Les Mis”: changed title, priority\n"
    assert "no longer leads" in site("articles", "unpin", "2").stdout
    for args, words in [
        (["pin", "77"], "no article has the id or URL 77"),
        (["hide", "https://nowhere.example/"], "no article has the id or URL"),
        (["edit", "1"], "say what to change"),
        (["edit", "1", "--title", "  "], "title is empty"),
        (["edit", "1", "--image-url", "javascript:alert(1)"], "whole http(s)"),
        (["edit", "1", "--priority", "5000"], "5000 is not in the range"),
        (["pin", "1", "--date", "2001-01-01"], "that edition's send time has passed"),
        (["pin", "1", "--date", "2090-01-01"], "within 60 days of the next one"),
    ]:
        result = site("articles", *args, code=2)
        assert words in result.stderr and "Traceback" not in result.output, (args, result.output)


def test_articles_list_when_empty(site: Site) -> None:
    assert "no articles yet" in site("articles", "list").stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--title", "T", "--url", "ftp://x"], "URL must start with http"),
        (["--title", " ", "--url", "https://x.example"], "title is empty"),
        (["--title", "T", "--url", "https://x.example", "--published", "yesterday"], "expected a time like"),
        (["--title", "T", "--url", "https://"], "name a host"),
        (["--title", "T", "--url", 'https://x.example/a b"onmouseover=x'], "name a host"),
        (["--title", "T", "--url", "https://x.example", "--image-url", "javascript:alert(1)"], "whole http(s)"),
        (["--title", "T", "--url", "https://x.example", "--image-url", "/img/a.jpg"], "whole http(s)"),
        (["--title", "T" * 501, "--url", "https://x.example"], "title is longer than 500 characters"),
    ],
)
def test_articles_add_bad_input_is_one_line(site: Site, args: list[str], words: str) -> None:
    assert words in one_error_line(site("articles", "add", *args, code=2))


# --- subscribers ------------------------------------------------------------------------------


def test_subscribers_add_and_list(site: Site) -> None:
    assert site("subscribers", "add", "Ana@Example.org", "--name", "Ana García").stdout == (
        "added: ana@example.org (active)\n"
    )
    assert site("subscribers", "add", "ana@example.org").stdout == "already listed: ana@example.org (active)\n"
    assert site("subscribers", "add", "bob@example.net", "--pending").stdout == "added: bob@example.net (pending)\n"
    listing = site("subscribers", "list").stdout.splitlines()
    assert re.fullmatch(r"\s*1\s+active\s+ana@example\.org\s+Ana García", listing[0])
    assert re.fullmatch(r"\s*2\s+pending\s+bob@example\.net\s*", listing[1])
    assert "1 pending" in listing[-1] and "1 active" in listing[-1]
    only = site("subscribers", "list", "--status", "pending").stdout
    assert "bob@example.net" in only and "ana@example.org" not in only


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["not-an-address"], "is not a valid email address"),
        (["ana@"], "is not a valid email address"),
        (["ana@example.org\r\nBcc: x@example.org"], "line break"),
        (["ana@example.org", "--name", "Ana\nBcc: x@example.org"], "line breaks"),
    ],
)
def test_subscribers_add_bad_input_is_one_line_and_exit_2(site: Site, args: list[str], words: str) -> None:
    assert words in one_error_line(site("subscribers", "add", *args, code=2))
    assert "0 active" in site("subscribers", "list").stdout


# --- preview, send, status --------------------------------------------------------------------


def test_preview_writes_the_edition_without_recording_anything(site: Site, tmp_path: Path) -> None:
    day = due_day()
    add_morning(site, day)
    out = tmp_path / "out" / "edition.html"
    out.parent.mkdir()
    result = site("preview", "--date", day.isoformat(), "--out", str(out))
    assert result.stdout.startswith(
        f"wrote {out} (edition of {day} as it would go out now (not made): 3 articles; HTML "
    )
    page = out.read_text(encoding="utf-8")
    assert "Story 0: Zoë &amp; “José” &lt;b&gt;" in page and 'style="' in page
    assert "Good morning, Ana" in page and "https://news.example.com/newsletter/unsubscribe/PREVIEW" in page
    text = tmp_path / "edition.txt"
    site("preview", "--date", day.isoformat(), "--out", str(text), "--text")
    assert "Story 0: Zoë & “José” <b>" in text.read_text(encoding="utf-8")
    store = site.store()
    try:
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(Edition)) == 0
    finally:
        store.dispose()


def test_an_article_added_after_the_send_time_is_in_the_next_edition(site: Site, smtp_sink, tmp_path: Path) -> None:
    """The README's first steps at any hour: the article just added shows in the preview
    and the test copy, and `send` says where it went instead of an unexplained skip."""
    due = due_day()
    site("subscribers", "add", "ana@example.org")
    site("articles", "add", "--title", "Bridge reopens", "--url", "https://news.example.com/bridge")
    out = tmp_path / "preview.html"
    result = site("preview", "--out", str(out))
    assert f"edition of {due + timedelta(days=1)} as it would go out now (not made): 1 article" in result.stdout
    assert "Bridge reopens" in out.read_text(encoding="utf-8")
    site("send", "--to", "me@example.org")
    (copy,) = smtp_sink.handler.received
    assert "Bridge reopens" in copy.message.get_body(("plain",)).get_content()
    skipped = site("send").stdout
    assert f"{due}: no articles for the edition of {due}: nothing sent (1 newer article waits" in skipped
    # Today's edition was skipped; an article dated before its cutoff is not lost: it goes in
    # tomorrow's, or in today's if that is sent after all.
    before = (cutoff(due, time(6), LONDON) - timedelta(hours=1)).isoformat()
    late = site("articles", "add", "--title", "Late", "--url", "https://news.example.com/late", "--published", before)
    assert f"or in the edition of {due}, skipped for want of articles, if that is sent now" in late.stdout
    assert "Late" in site("articles", "list").stdout and late.stderr == ""
    # Two days after today on the newsroom's clock (between midnight and 06:00 that is due + 3).
    later = (datetime.now(LONDON).date() + timedelta(days=2)).isoformat()
    assert "can be previewed as it stands" in one_error_line(site("preview", "--date", later, code=2))
    both = site("send", "--to", "me@example.org", "--dry-run", code=2)
    assert "cannot be combined" in one_error_line(both)
    assert len(smtp_sink.handler.received) == 1
    assert f"{due}: sent 1," in site("send", "--date", due.isoformat()).stdout
    assert "Late" in smtp_sink.handler.received[1].message.get_body(("plain",)).get_content()


def test_send_dry_run_sends_and_records_nothing(site: Site, smtp_sink: SMTPServer) -> None:
    day = due_day()
    add_morning(site, day, 2)
    site("subscribers", "add", "ana@example.org")
    site("subscribers", "add", "bob@example.org")
    result = site("send", "--dry-run", "--date", day.isoformat())
    assert re.fullmatch(rf"{day}: would send 2 articles to 2 active subscribers; HTML \d+ KB\n", result.stdout)
    assert smtp_sink.handler.received == []
    assert "no edition for" in site("status", "--date", day.isoformat()).stdout


def test_send_to_one_address_records_nothing(site: Site, smtp_sink: SMTPServer) -> None:
    day = due_day()
    add_morning(site, day)
    site("subscribers", "add", "ana@example.org")
    result = site("send", "--to", "Editor@Example.NET", "--date", day.isoformat())
    assert result.stdout.startswith(f"test copy of the edition of {day} sent to editor@example.net: 250")
    (received,) = smtp_sink.handler.received
    assert received.rcpt_tos == ["editor@example.net"]
    assert received.message["Subject"].startswith("[Test] Breakfast in red: ")
    assert "no edition for" in site("status", "--date", day.isoformat()).stdout
    assert one_error_line(site("send", "--to", "not an address", code=2))


def test_only_the_commands_that_sign_links_ask_for_the_secret_key(
    runner: CliRunner, tmp_path: Path, smtp_sink: SMTPServer
) -> None:
    """Preview and status run without [web] secret_key; every kind of send stops at once, having made nothing."""
    path = write_config(tmp_path / "newsletter.toml", "sqlite:///site.db", smtp_sink, web={"secret_key": ""})
    site = Site(runner, path)
    site("db", "upgrade")
    day = due_day()
    add_morning(site, day)
    site("subscribers", "add", "ana@example.org")
    assert "3 articles" in site("preview", "--date", day.isoformat(), "--out", str(tmp_path / "p.html")).stdout
    for args in (["--date", day.isoformat()], ["--dry-run"], ["--to", "me@example.org"], ["--scheduled"]):
        assert "web.secret_key: missing" in one_error_line(site("send", *args, code=2))
    assert "web.secret_key: missing" in one_error_line(site("preflight", "--no-links", code=2))
    assert smtp_sink.handler.received == []
    assert "no edition for" in site("status", "--date", day.isoformat()).stdout
    assert "no editions yet" in site("status").stdout


def test_send_and_status(runner: CliRunner, tmp_path: Path, db_url: str, smtp_sink: SMTPServer) -> None:
    site = Site(runner, write_config(tmp_path / "newsletter.toml", db_url, smtp_sink))
    day = due_day()
    add_morning(site, day)
    for i in range(4):
        site("subscribers", "add", f"reader{i}@example.org", "--name", f"Reader {i}")
    site("subscribers", "add", "later@example.org", "--pending")

    result = site("send", "--date", day.isoformat())
    assert re.fullmatch(
        rf"{day}: sent 4, deferred 0, failed 0, skipped 0 in [\d.]+s \(\d+ messages/s\)\n", result.stdout
    )
    assert sorted(smtp_sink.handler.by_recipient()) == [f"reader{i}@example.org" for i in range(4)]

    again = site("send", "--date", day.isoformat())
    assert again.stdout == f"{day}: the edition of {day} was already sent to 4 readers; nothing to do\n"
    assert len(smtp_sink.handler.received) == 4

    status = site("status").stdout.splitlines()
    assert re.match(rf"{day}\s+sent\s+3 articles\s+4 readers: 4 sent\s+— Breakfast in red: ", status[0]), status
    assert "subscribers: 1 pending, 4 active, 0 unsubscribed, 0 bounced" in status
    detail = site("status", "--date", day.isoformat()).stdout.splitlines()
    assert detail[0] == f"edition of {day} (sent): Breakfast in red: {long_date(day)}"
    assert re.fullmatch(r"  window:   published \d{4}-\d\d-\d\d 06:00 GMT to \d{4}-\d\d-\d\d 06:00 GMT", detail[1])
    assert detail[3:7] == ["  articles: 3", "    #1 Story 0: Zoë & “José” <b>", "    #2 Story 1: Zoë & “José” <b>",
                           "    #3 Story 2: Zoë & “José” <b>"]  # fmt: skip
    assert detail[7] == "  readers:  4: 4 sent"
    following = site("status", "--date", (day + timedelta(days=1)).isoformat()).stdout
    assert following.startswith(f"no edition for {day + timedelta(days=1)} yet: it would hold 0 articles now")
    store = Store(db_url)
    try:
        with store.session() as session:
            edition = session.scalars(select(Edition)).one()
            assert edition.status == EditionStatus.SENT and edition.sent_count == 4
            assert session.scalar(select(func.count()).select_from(Delivery)) == 4
    finally:
        store.dispose()


def test_send_with_no_articles_is_skipped_and_exits_0(site: Site, smtp_sink: SMTPServer) -> None:
    day = due_day()
    site("subscribers", "add", "ana@example.org")
    result = site("send", "--date", day.isoformat())
    assert result.stdout == f"{day}: no articles for the edition of {day}: nothing sent\n"
    assert smtp_sink.handler.received == []


def test_send_a_future_edition_is_refused(site: Site) -> None:
    future = (datetime.now(UTC) + timedelta(days=3)).date()
    assert "is not due yet" in one_error_line(site("send", "--date", future.isoformat(), code=2))


def test_bad_date_is_a_usage_error(site: Site) -> None:
    result = site("status", "--date", "24/11/2026", code=2)
    assert "is not a date like 2026-11-24" in result.stderr


def test_send_to_an_unreachable_server_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    path = write_config(tmp_path / "newsletter.toml", "sqlite:///site.db", None, smtp={"port": port})
    site = Site(runner, path)
    site("db", "upgrade")
    day = due_day()
    add_morning(site, day, 1)
    site("subscribers", "add", "ana@example.org")
    result = site("send", "--date", day.isoformat(), code=1)
    assert f"cannot connect to SMTP server 127.0.0.1:{port}" in one_error_line(result)


# --- demo ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_sends_over_smtp_into_the_outbox_and_runs_twice(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    for _ in range(2):
        result = runner.invoke(cli, ["demo", "--dir", str(folder), "--subscribers", "20"])
        assert result.exit_code == 0, result.output
        out = result.stdout
        outbox = folder.resolve() / "outbox"
        assert len(os.listdir(outbox / "new")) == 20
        assert re.search(r"^messages sent:\s+20$", out, re.M), out
        assert re.search(r"^elapsed:\s+[\d.]+ s$", out, re.M)
        assert re.search(r"^messages/second:\s+\d+$", out, re.M)
        assert f"delivered to outbox: 20 messages in {outbox}/new" in out
        assert f"preview of the edition: {folder.resolve() / 'preview.html'}" in out
        assert (folder / "preview.html").read_text(encoding="utf-8").count("Good morning, Ana") == 1
    one = next((folder / "outbox" / "new").iterdir()).read_bytes()
    assert b"List-Unsubscribe: <https://news.example.com/newsletter/unsubscribe/" in one


@pytest.mark.slow
def test_demo_with_zones_releases_each_zone_at_six_on_its_clock(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = runner.invoke(cli, ["demo", "--zones", "--dir", str(folder), "--subscribers", "22"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    rows = [line for line in out.splitlines() if re.match(r"^\w{3} \d\d \d\d:\d\d ", line)]
    assert len(rows) == 11, out  # one release per zone
    assert all(" 06:00 " in row.split(maxsplit=4)[-1] for row in rows), out
    assert re.search(r"^\w{3} \d\d 1[01]:00 (GMT|BST)\s+America/New_York\s+\w{3} \d\d 06:00 E[SD]T\s+2\s+2$", out, re.M)
    assert re.search(r"sent 22 across 11 releases$", out, re.M), out
    assert len(os.listdir(folder.resolve() / "outbox" / "new")) == 22
    assert "per_reader_timezone = true" in (folder / "newsletter.toml").read_text()


def test_demo_refuses_a_directory_it_did_not_make(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = runner.invoke(cli, ["demo", "--dir", str(tmp_path), "--subscribers", "1"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "was not made by `newsletter demo`" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
