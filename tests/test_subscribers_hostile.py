"""Hostile input to the subscriber commands: one clear line, the right exit code, nothing half-written.

Control characters that would retitle a terminal, values far over any limit, bytes that
are not UTF-8 (a command line hands them to Python as lone surrogates), duplicates,
devices and pipes where a file belongs. Each case runs the real command line on both
databases and then compares the whole list with what it should be.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.store import Store
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.subscribers import new_subscriber
from newsletter.web import create_app
from tests.test_cli import write_config

RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # in output, only line ends may appear
BASE = {"ana@example.org": ("active", "Ana"), "gone@example.org": ("unsubscribed", "Gone")}

Args = Callable[[Path], list[str]]


def plain(*args: str) -> Args:
    return lambda _tmp: list(args)


def with_file(content: bytes, *options: str) -> Args:
    def make(tmp: Path) -> list[str]:
        path = tmp / "list.csv"
        path.write_bytes(content)
        return ["subscribers", "import", str(path), *options]

    return make


def with_fifo(tmp: Path) -> list[str]:
    path = tmp / "pipe.csv"
    os.mkfifo(path)
    return ["subscribers", "import", str(path)]


MIXED = (
    b"email,name\n"
    b"zoe@example.org,Zo\xc3\xab\n"  # UTF-8
    b"jose@example.org,Jos\xe9\n"  # Latin-1 in a UTF-8 file
    b"nul@example.org,N\x00L\n"
    b"esc@example.org,Evil\x1b]0;owned\x07\n"
    b"ZOE@example.org,Zoe again\n"
    b"big@example.org," + b"x" * 300_000 + b"\n"
    b"li@example.org,Li Wei\n"
)

# (id, arguments, exit code, what the list gains: address -> (status, name))
CASES: list[tuple[str, Args, int, dict[str, tuple[str, str]]]] = [
    ("name-esc", plain("subscribers", "add", "x@example.org", "--name", "\x1b]0;owned\x07"), 2, {}),
    ("name-bel", plain("subscribers", "add", "x@example.org", "--name", "Ana\x07"), 2, {}),
    ("name-del", plain("subscribers", "add", "x@example.org", "--name", "Ana\x7f"), 2, {}),
    ("name-c1-csi", plain("subscribers", "add", "x@example.org", "--name", "Ana\x9b2J"), 2, {}),
    ("name-nul", plain("subscribers", "add", "x@example.org", "--name", "Ana\x00"), 2, {}),
    ("name-not-utf8", plain("subscribers", "add", "x@example.org", "--name", "Zo\udceb"), 2, {}),
    ("name-huge", plain("subscribers", "add", "x@example.org", "--name", "N" * 100_000), 2, {}),
    ("name-tab", plain("subscribers", "add", "x@example.org", "--name", "Li\tWei"), 0,
     {"x@example.org": ("active", "Li Wei")}),
    ("email-esc", plain("subscribers", "add", "x\x1b[2J@example.org"), 2, {}),
    ("email-huge", plain("subscribers", "add", "x" * 100_000 + "@example.org"), 2, {}),
    ("email-not-utf8", plain("subscribers", "add", "\udcff@example.org"), 2, {}),
    ("add-duplicate", plain("subscribers", "add", "ANA@example.org", "--name", "Other"), 0, {}),
    ("add-left-without-force", plain("subscribers", "add", "gone@example.org"), 0, {}),
    ("unsubscribe-unknown", plain("subscribers", "unsubscribe", "ana@example.org", "zed@example.org"), 2, {}),
    ("unsubscribe-esc", plain("subscribers", "unsubscribe", "ana@example.org", "\x1b]0;x\x07"), 2, {}),
    ("unsubscribe-huge", plain("subscribers", "unsubscribe", "a" * 100_000), 2, {}),
    ("unsubscribe-none", plain("subscribers", "unsubscribe"), 2, {}),
    ("unsubscribe-twice", plain("subscribers", "unsubscribe", "ana@example.org", "Ana@Example.org"), 0,
     {"ana@example.org": ("unsubscribed", "Ana")}),
    ("remove-unknown", plain("subscribers", "remove", "ana@example.org", "zed@example.org"), 2, {}),
    ("remove-not-utf8", plain("subscribers", "remove", "ana@example.org", "\udcff@example.org"), 2, {}),
    ("remove-twice", plain("subscribers", "remove", "ana@example.org", "ANA@example.org"), 0,
     {"ana@example.org": ("", "")}),
    ("list-after-huge", plain("subscribers", "list", "--after", "99999999999999999999999"), 2, {}),
    ("list-after-negative", plain("subscribers", "list", "--after", "-1"), 2, {}),
    ("list-after-text", plain("subscribers", "list", "--after", "\x1b[2J"), 2, {}),
    ("list-limit-zero", plain("subscribers", "list", "--limit", "0"), 2, {}),
    ("list-search-esc", plain("subscribers", "list", "--search", "\x1b]0;x\x07"), 2, {}),
    ("list-search-huge", plain("subscribers", "list", "--search", "s" * 100_000), 2, {}),
    ("import-dev-zero", plain("subscribers", "import", "/dev/zero"), 2, {}),
    ("import-fifo", with_fifo, 2, {}),
    ("import-directory", plain("subscribers", "import", "/"), 2, {}),
    ("import-source-esc", with_file(b"new@example.org\n", "--source", "crm\x1b[2J"), 2, {}),
    ("import-source-huge", with_file(b"new@example.org\n", "--source", "s" * 51), 2, {}),
    ("import-binary", with_file(b"\x00\x01\x02\x03" * 100), 2, {}),
    ("import-empty", with_file(b"\n\n  \n"), 2, {}),
    ("import-bad-rows", with_file(MIXED), 0,
     {"zoe@example.org": ("active", "Zoë"), "li@example.org": ("active", "Li Wei")}),
    ("import-dry-run", with_file(MIXED, "--dry-run"), 0, {}),
    ("import-left-without-force", with_file(b"email,name\ngone@example.org,Back\n"), 0, {}),
]  # fmt: skip


@pytest.fixture
def run(runner: CliRunner, tmp_path: Path, db_url: str, store: Store, clock: FixedClock) -> Callable[..., Result]:
    """The command line on ``db_url``, after seeding the list with BASE."""
    with store.session() as session:
        for email, (status, name) in BASE.items():
            session.add(new_subscriber(email, name, SubscriberStatus(status), "test", clock.now()))
    path = write_config(tmp_path / "newsletter.toml", db_url, None)
    return lambda *args: runner.invoke(cli, ["--config", str(path), *args])


def the_list(store: Store) -> dict[str, tuple[str, str]]:
    with store.session() as session:
        return {s.email: (s.status.value, s.name) for s in session.scalars(select(Subscriber))}


@pytest.mark.parametrize(("args", "code", "gains"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input(run, store, tmp_path, args: Args, code: int, gains: dict[str, tuple[str, str]]) -> None:
    result = run(*args(tmp_path))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert not RAW_CONTROL.search(result.output), repr(result.output)
    if code:
        # Ours are one line; click's own usage errors put theirs under a usage reminder.
        assert result.stdout == "", result.stdout
        errors = [line for line in result.stderr.splitlines() if line.startswith(("error: ", "Error: "))]
        assert len(errors) == 1 and (result.stderr.count("\n") == 1 or errors[0].startswith("Error: ")), result.stderr
    expected = {**BASE, **gains}
    assert the_list(store) == {email: row for email, row in expected.items() if row != ("", "")}
    if code:
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(SubscriberEvent)) == 0


def test_the_import_of_bad_rows_names_each_line(run, tmp_path) -> None:
    output = run(*with_file(MIXED)(tmp_path)).output
    assert output.splitlines()[:5] == [
        "line 3: rejected: not UTF-8, unlike the rest of the file: save the file as UTF-8",
        "line 4: rejected: contains a NUL byte (is part of this line binary?)",
        "line 5: rejected: a subscriber's name cannot contain control characters (found \\x1b)",
        "line 7: rejected: cannot be read as CSV (field larger than field limit (131072))",
        "line 6: skipped: zoe@example.org is already on line 2",
    ]
    assert output.splitlines()[-1].endswith("1 duplicate, 4 rejected: 2 of 7 rows imported")


def test_the_public_form_refuses_control_characters_in_a_name(config: Config, store: Store, clock: FixedClock):
    client = create_app(config, store=store, clock=clock).test_client()
    client.environ_base["HTTP_REFERER"] = "https://localhost/subscribe"
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/subscribe").get_data(as_text=True)).group(1)
    answer = client.post(
        "/subscribe", data={"csrf_token": token, "email": "x@example.org", "name": "Ana\x1b]0;owned\x07"}
    )
    assert answer.status_code == 400
    assert "cannot contain control characters" in answer.get_data(as_text=True)
    assert the_list(store) == {}


@pytest.mark.parametrize("group", ["subscribers", "staff"])
def test_help_texts_hold_no_control_characters(runner: CliRunner, group: str) -> None:
    for name in [None, *cli.commands[group].commands]:  # type: ignore[attr-defined]
        text = runner.invoke(cli, [group, *([name] if name else []), "--help"]).output
        assert "Example:" in text and not RAW_CONTROL.search(text), (group, name)
