"""Staff accounts from the command line: list, new password and removal, and the admin sessions they end."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.errors import UsageError
from newsletter.store import Store
from newsletter.store.models import StaffUser
from newsletter.web import create_app
from newsletter.web.auth import UnknownStaffError, remove_staff_user, session_stamp, set_staff_password
from tests.test_cli import write_config

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Staff:
    """Runs ``newsletter staff ...`` against the test database and checks for a traceback."""

    def __init__(self, runner: CliRunner, path: Path) -> None:
        self.runner = runner
        self.path = path

    def __call__(self, *args: str, code: int = 0, input: str | None = None) -> Result:
        result = self.runner.invoke(cli, ["--config", str(self.path), "staff", *args], input=input)
        assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result


@pytest.fixture
def staff(runner: CliRunner, tmp_path: Path, db_url: str, store: Store) -> Staff:
    return Staff(runner, write_config(tmp_path / "newsletter.toml", db_url, None))


def one_error_line(result: Result) -> str:
    assert result.stdout == "", result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr


def add(staff: Staff, name: str, password: str = PASSWORD) -> None:
    staff("add", name, "--password-stdin", input=password + "\n")


def logged_in(config: Config, store: Store, clock: FixedClock, name: str, password: str) -> FlaskClient:
    client = create_app(config, store=store, clock=clock).test_client()
    client.environ_base["HTTP_REFERER"] = "https://localhost/admin/"
    token = CSRF.search(client.get("/admin/login").get_data(as_text=True)).group(1)
    answer = client.post("/admin/login", data={"csrf_token": token, "username": name, "password": password})
    assert answer.status_code == 302, answer.status_code
    assert client.get("/admin/subscribers").status_code == 200
    return client


def is_logged_out(client: FlaskClient) -> bool:
    answer = client.get("/admin/subscribers")
    return answer.status_code == 302 and "/admin/login" in answer.headers["Location"]


# --- list -------------------------------------------------------------------------------------


def test_list_shows_name_created_and_last_login_in_aligned_columns(staff, store):
    assert staff("list").output == "no staff accounts: `newsletter staff add NAME` creates one\n"
    add(staff, "ana")
    add(staff, "bartholomew")
    with store.session() as session:
        for user in session.scalars(select(StaffUser)):
            user.created_at = datetime(2026, 7, 1, 8, 5, tzinfo=UTC)  # 09:05 in London (BST)
            if user.username == "ana":
                user.last_login_at = datetime(2026, 11, 24, 6, 30, tzinfo=UTC)
    assert staff("list").output.splitlines() == [
        "name         created           last login",
        "ana          2026-07-01 09:05  2026-11-24 06:30",
        "bartholomew  2026-07-01 09:05  never",
    ]


# --- password ---------------------------------------------------------------------------------


def test_a_new_password_ends_the_open_sessions(staff, config, store, clock):
    add(staff, "ana")
    client = logged_in(config, store, clock, "ana", PASSWORD)
    typed = staff("password", "ana", input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert typed.stdout.endswith("new password set for staff user ana; their open admin sessions have ended\n")
    assert NEW_PASSWORD not in typed.output  # typed at a hidden prompt
    assert is_logged_out(client)
    again = logged_in(config, store, clock, "ana", NEW_PASSWORD)
    staff("password", "ana", "--password-stdin", input=NEW_PASSWORD + "\n")  # the same one: a new hash
    assert is_logged_out(again)
    logged_in(config, store, clock, "ana", NEW_PASSWORD)


def test_the_password_is_asked_twice_and_must_match(staff, store):
    add(staff, "ana")
    with store.session() as session:
        before = session.scalars(select(StaffUser.password_hash)).one()
    result = staff("password", "ana", input=f"{NEW_PASSWORD}\nsomething else entirely\n", code=1)
    assert "do not match" in result.output
    with store.session() as session:
        assert session.scalars(select(StaffUser.password_hash)).one() == before


@pytest.mark.parametrize(
    ("args", "stdin", "words"),
    [
        (["password", "nobody", "--password-stdin"], NEW_PASSWORD + "\n", "there is no staff user 'nobody'"),
        (["password", "nobody"], "", "there is no staff user 'nobody'"),  # before any prompt
        (["password", "ana", "--password-stdin"], "short\n", "at least 12 characters"),
        (["password", "ana", "--password-stdin"], "\x00" * 5000, "too long: at most 1024 characters"),
        (["password", "an\x1ba", "--password-stdin"], NEW_PASSWORD + "\n", "printable characters without spaces"),
        (["remove", "nobody"], None, "there is no staff user 'nobody'"),
        (["remove", "a" * 10_000], None, "1 to 100 printable characters"),
    ],
)
def test_unknown_names_and_bad_passwords_are_one_line_and_exit_2(staff, store, args, stdin, words):
    add(staff, "ana")
    with store.session() as session:
        before = session.scalars(select(StaffUser.password_hash)).one()
    assert words in one_error_line(staff(*args, input=stdin, code=2))
    with store.session() as session:
        assert session.scalars(select(StaffUser.password_hash)).all() == [before]


def test_library_helpers_raise_unknown_staff_error(store):
    with store.session() as session:
        with pytest.raises(UnknownStaffError) as caught:
            set_staff_password(session, "nobody", NEW_PASSWORD)
        assert caught.value.username == "nobody" and isinstance(caught.value, UsageError)
        with pytest.raises(UnknownStaffError):
            remove_staff_user(session, "nobody")


# --- remove -----------------------------------------------------------------------------------


def test_removing_an_account_ends_its_sessions_and_says_when_none_is_left(staff, config, store, clock):
    add(staff, "ana")
    add(staff, "tom")
    ana = logged_in(config, store, clock, "ana", PASSWORD)
    tom = logged_in(config, store, clock, "tom", PASSWORD)
    assert staff("remove", "ana").output == "removed staff user ana; their admin sessions have ended\n"
    assert is_logged_out(ana) and not is_logged_out(tom)
    with store.session() as session:
        stamp = session_stamp(session.scalars(select(StaffUser)).one())
    last = staff("remove", "tom").output
    assert last == (
        "removed staff user tom; their admin sessions have ended\n"
        "no staff account is left: `newsletter staff add NAME` creates one\n"
    )
    assert is_logged_out(tom)
    add(staff, "tom")  # the same name (and on SQLite perhaps the same id) again: the old session stays out
    with store.session() as session:
        assert session_stamp(session.scalars(select(StaffUser)).one()) != stamp
    assert is_logged_out(tom)


@pytest.mark.parametrize("name", ["list", "password", "remove"])
def test_each_command_has_help_with_an_example(runner, name):
    text = runner.invoke(cli, ["staff", name, "--help"]).output
    assert f"newsletter staff {name}" in text.split("Example:")[1]


@pytest.mark.parametrize(
    ("check", "value", "field", "reason"),
    [
        ("check_username", "two words", "user name", "invalid"),
        ("check_username", "x" * 101, "user name", "invalid"),
        ("check_password", "short", "password", "too-short"),
        ("check_password", "p" * 1025, "password", "too-long"),
        ("check_password", "half \ud800 a surrogate", "password", "encoding"),
    ],
)
def test_a_bad_name_or_password_says_which_field_and_why_in_attributes(
    check: str, value: str, field: str, reason: str
) -> None:
    """Callers (the login, the CLI, the admin) branch on the field and reason, never on the words."""
    from newsletter import web
    from newsletter.errors import ValidationError

    with pytest.raises(ValidationError) as raised:
        getattr(web.auth, check)(value)
    assert (raised.value.field, raised.value.reason) == (field, reason)
    assert raised.value.exit_code == 2
