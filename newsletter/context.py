"""What every operation runs with: the configuration, the store, the clock and the token signer.

Preparing an edition, sending it, a worker's loop, a scheduled pass, reading the bounce
mailbox: each needs the same four, and used to be handed them one by one, in the same
order, down every call. ``Context`` carries them together. An interface builds it once
and hands it down: a CLI command (``cli.base.App.context``), the web app
(``web.create_app``), the scheduler daemon and ``send --scheduled`` (on a store of their
own, named for the process), a ``newsletter worker``. Below that the edges are passed in,
never reached for: nothing opens its own database, reads the time from the system or
signs with a key of its own finding, so a test runs the real code on a pinned clock and a
throwaway database by building one ``Context``.

A function that needs only the configuration (or the configuration and one other part)
takes just those; a ``Context`` is for what needs three or more of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.clock import Clock
from newsletter.config import Config
from newsletter.store import Store
from newsletter.tokens import Tokens


@dataclass(frozen=True)
class Context:
    """The configuration, the store, the clock and the token signer of one interface, built once."""

    config: Config
    store: Store
    clock: Clock
    tokens: Tokens


__all__ = ["Context"]
