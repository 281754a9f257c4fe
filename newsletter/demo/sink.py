"""A local SMTP server that keeps what it receives: the demo's outbox, the tests' inbox.

aiosmtpd does the protocol; the handlers only store or count.
``python -m newsletter.demo.sink`` runs one in its own process, so the sender and the
server each get a core, and prints "ready PORT" once it accepts connections.
"""

from __future__ import annotations

import argparse
import mailbox
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now; aiosmtpd cannot be given port 0 and report back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MaildirHandler:
    """Stores every accepted message in a Maildir, one file per recipient."""

    def __init__(self, path: str | Path) -> None:
        self.box = mailbox.Maildir(Path(path), create=True)
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        content = envelope.original_content or envelope.content
        data = content.replace(b"\r\n", b"\n")
        with self._lock:
            for rcpt in envelope.rcpt_tos:
                # As a delivering MTA writes them: the envelope sender (the VERP return path) and recipient.
                self.box.add(f"Return-Path: <{envelope.mail_from}>\nDelivered-To: {rcpt}\n".encode() + data)
                self.count += 1
        return "250 2.0.0 OK: stored"


class CountingHandler:
    """Accepts and forgets: a sink for measuring the sender, not the disk."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += len(envelope.rcpt_tos)
        return "250 2.0.0 OK"


def start_controller(handler: Any, host: str = "127.0.0.1", port: int | None = None) -> Controller:
    controller = Controller(handler, hostname=host, port=port or free_port(host), data_size_limit=64 * 1024 * 1024)
    controller.start()
    return controller


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local SMTP sink.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--maildir", help="store messages here; without it they are only counted")
    args = parser.parse_args(argv)
    handler: Any = MaildirHandler(args.maildir) if args.maildir else CountingHandler()
    controller = start_controller(handler, args.host, args.port or None)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"ready {controller.port}", flush=True)
    while not done.wait(0.5):
        pass
    controller.stop()
    print(f"received {handler.count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
