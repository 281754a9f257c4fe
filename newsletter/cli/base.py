"""The ``newsletter`` command's frame: the group, its options, and what every command shares.

Configuration is loaded once per invocation, lazily, so ``init``, ``demo`` and ``--help``
work before any config exists. Every ``NewsletterError`` becomes one line on stderr and an
exit code (2 for configuration and usage problems, 1 otherwise); nobody sees a traceback
for bad input. Each command builds its collaborators from ``App`` and calls one function.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from functools import cached_property
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from newsletter import __version__
from newsletter.clock import SystemClock
from newsletter.config import Config, load_config
from newsletter.context import Context
from newsletter.delivery import RunStats
from newsletter.errors import NewsletterError
from newsletter.signals import on_stop_signals
from newsletter.store import Store
from newsletter.subscribers import escape_controls
from newsletter.tokens import Tokens

log = logging.getLogger("newsletter")


class App:
    """What a command may need, each built on first use from the one configuration.

    A command hands the library ``context``; it reads ``config`` alone, or opens a session
    on ``store``, when that is all it does. Nothing is built before it is asked for, so a
    command that needs no database opens none, and one that signs no links needs no key.
    """

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.clock = SystemClock()

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)

    @cached_property
    def store(self) -> Store:
        store = Store(self.config.store.url)
        store.check_schema()
        return store

    def close(self) -> None:
        """Return the database connections when the command ends."""
        if "store" in self.__dict__:
            self.store.dispose()

    @cached_property
    def tokens(self) -> Tokens:
        """The secret key is asked for when the first link is signed or read (see ``signing_context``)."""
        return Tokens(self.config.require_secret_key, self.clock)

    @cached_property
    def context(self) -> Context:
        """What the library's operations take: the store is opened (and its schema checked) here."""
        return Context(self.config, self.store, self.clock, self.tokens)

    @property
    def signing_context(self) -> Context:
        """``context``, for a command that signs links: without a secret key it stops here, before doing anything."""
        context = self.context
        self.config.require_secret_key()
        return context


pass_app = click.make_pass_decorator(App)


FIRST_DAY, LAST_DAY = date(1970, 1, 2), date(9998, 12, 30)  # room for a window and a time zone either side


class DateType(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            day = date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date like 2026-11-24", param, ctx)
        if not FIRST_DAY <= day <= LAST_DAY:
            self.fail(f"{value!r} is out of range: editions are dated {FIRST_DAY.year} to {LAST_DAY.year}", param, ctx)
        return day


DATE = DateType()


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger("newsletter")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _set_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    app = ctx.find_object(App)
    if value and app is not None:
        app.config_path = value


class _Command(click.Command):
    """A command that also takes ``--config`` after its name, where people tend to type it."""

    def __init__(self, name: str | None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        if name not in ("init", "demo"):
            self.params.append(
                click.Option(
                    ["--config"],
                    metavar="PATH",
                    expose_value=False,
                    callback=_set_config,
                    help="Configuration file (may also come before the command).",
                )
            )


class _Group(click.Group):
    """Turns a ``NewsletterError`` anywhere below into one line and its exit code."""

    command_class = _Command
    group_class = type  # subgroups are _Group too, so their commands take --config as well

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # `newsletter status | head`: the reader has what it wanted; go quietly, and keep
            # Python's own flush at exit from failing on the closed pipe again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except NewsletterError as exc:
            # A message may echo input (a name, a path): never let it drive the terminal.
            click.echo(f"error: {escape_controls(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except SQLAlchemyError as exc:
            # A database that went away mid-command: the rows say where things stand, and
            # running the command again carries on from there.
            detail = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            click.echo(f"error: the database failed: {detail}", err=True)
            ctx.exit(1)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Configuration file (default: $NEWSLETTER_CONFIG, then ./newsletter.toml).",
)
@click.option("-v", "--verbose", count=True, help="Log more (-v: each step, -vv: debug).")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Breakfast in red: collect the day's articles, render one edition and send it to every reader.

    \b
    Start here:
      newsletter demo                 a whole morning on this machine, nothing to set up
      newsletter init                 write ./newsletter.toml and create the database
    """
    _setup_logging(verbose)
    ctx.obj = App(config_path)
    ctx.call_on_close(ctx.obj.close)


class Progress:
    """A progress bar with rate and ETA on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._shown = 0

    def __call__(self, stats: RunStats) -> None:
        if not self.enabled or not stats.to_send:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=stats.to_send,
                label="sending",
                show_pos=True,
                show_eta=True,
                item_show_func=lambda s: s,
                file=sys.stderr,
            )
            self._bar.__enter__()
        done = stats.done + stats.released
        self._bar.update(max(0, done - self._shown), f"{stats.rate:.0f} msg/s")
        self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@contextmanager
def graceful_stop() -> Iterator[threading.Event]:
    """First SIGINT/SIGTERM: finish what is in flight and record it. A second: stop at once."""
    stop = threading.Event()

    def react(name: str) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo(f"\n{name}: finishing messages in flight, then stopping (again to stop at once)", err=True)

    with on_stop_signals(react):
        yield stop


# --- entry point ------------------------------------------------------------------------


def main() -> None:
    cli(prog_name="newsletter")
