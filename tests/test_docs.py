"""The documentation matches the program: every command has an example and is in the README,
and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from newsletter.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def commands(group: click.Command = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    """Every command and group below the top level, as "articles add" and so on."""
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            if command.hidden:
                continue
            yield " ".join((*path, name)), command
            yield from commands(command, (*path, name))


ALL = dict(commands())


def code_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)]


def test_there_are_commands_to_check() -> None:
    assert {"init", "db upgrade", "articles add", "subscribers add", "preview", "send", "status", "demo"} <= set(ALL)


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_command_has_help_with_an_example(name: str) -> None:
    command = ALL[name]
    with click.Context(command, info_name=f"newsletter {name}") as ctx:
        text = command.get_help(ctx)
    assert command.help and command.help.strip(), f"`newsletter {name}` has no help text"
    assert "Example" in text, f"`newsletter {name} --help` shows no example"
    assert f"newsletter {name}" in text.split("Example", 1)[1], f"`newsletter {name}`'s example does not use it"


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_command_is_in_the_readme(name: str) -> None:
    assert re.search(rf"\bnewsletter {re.escape(name)}\b", README), f"README.md does not mention `newsletter {name}`"


def test_help_runs_for_every_command(runner) -> None:
    for name in ALL:
        result = runner.invoke(cli, [*name.split(), "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage: " in result.output


def test_the_readme_starts_with_the_demo_command_then_the_test_command() -> None:
    demo, tests = code_blocks(README)[:2]
    assert demo == "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/newsletter demo"
    assert tests == "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest"


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    tests = code_blocks(README)[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()
    assert ci.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in ci
    assert re.search(
        r'^export NEWSLETTER_TEST_DATABASE_URL="?postgresql\+psycopg://postgres@127\.0\.0\.1:5432/test"?$', ci, re.M
    )
