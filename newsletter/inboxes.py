"""Where returned mail is read from: a Maildir, an IMAP folder, or (to look only) an mbox or .eml file.

Bounces, complaints and mailed unsubscribe requests arrive as ordinary mail. Each source
hands out its messages one at a time as ``(key, raw bytes)``, so a mailbox of ten thousand
messages is processed in the memory of one, and a single message is read only up to
``MAX_MESSAGE_BYTES``: past that it is reported as too large, never loaded.

Only Maildir and IMAP can be *processed*: a message handled is marked seen and moved into
a "Processed" folder (Maildir's ``.Processed``, or ``[imap] processed_mailbox``), so the
next run skips it, and a message nobody could act on stays where it is, unread, for a
person to look at. Nothing is ever deleted unread. An mbox or a single message file is
read-only: good for ``--dry-run``, to see what would happen.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from newsletter.config import ImapConfig
from newsletter.errors import MailboxError, UsageError

PROCESSED_FOLDER = "Processed"
MAX_MESSAGE_BYTES = 10_000_000  # a bounce returns at most one edition (~100 KB); 10 MB is not mail for us


class TooLarge(bytes):
    """The first bytes of a message that passed ``MAX_MESSAGE_BYTES``; ``size`` is its size."""

    size: int


class Unreadable(bytes):
    """Stands for a message that could not be read at all (no permission, not a file); ``reason`` says why."""

    reason: str


def _unreadable(reason: str) -> Unreadable:
    found = Unreadable(b"")
    found.reason = reason
    return found


class Inbox(Protocol):
    """One mailbox, opened: its waiting messages, and a way to file one away once handled."""

    name: str
    writable: bool

    def pending(self) -> Iterator[tuple[str, bytes]]: ...

    def file_away(self, key: str) -> None: ...

    def close(self) -> None: ...


def _read_bounded(handle: Any, size: int = 0) -> bytes:
    data = handle.read(MAX_MESSAGE_BYTES + 1)
    if len(data) <= MAX_MESSAGE_BYTES:
        return bytes(data)
    large = TooLarge(data[:4096])
    large.size = max(size, len(data))
    return large


def open_path(path: Path) -> Inbox:
    """A Maildir (processable), or an mbox or single message file (read-only)."""
    if path.is_dir():
        if not all((path / sub).is_dir() for sub in ("new", "cur", "tmp")):
            raise UsageError(f"{path} is not a Maildir (it needs new/, cur/ and tmp/ folders)")
        return MaildirInbox(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise UsageError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path} is not a Maildir, an mbox file or a message file")
    try:
        with path.open("rb") as handle:
            start = handle.read(5)
    except OSError as exc:
        raise UsageError(f"{path} cannot be read: {exc.strerror or exc}") from None
    return MboxInbox(path) if start == b"From " else FileInbox(path)


class MaildirInbox:
    """A Maildir; handled messages move into its ``.Processed`` folder, marked seen."""

    writable = True

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            self.box = mailbox.Maildir(path, factory=None, create=False)
            self._done: mailbox.Maildir | None = None
        except OSError as exc:
            raise MailboxError(f"{path}: {exc.strerror or exc}") from None

    def pending(self) -> Iterator[tuple[str, bytes]]:
        try:
            keys = sorted(self.box.keys())
        except OSError as exc:
            raise MailboxError(f"{self.name}: {exc.strerror or exc}") from None
        for key in keys:
            try:
                path = Path(self.box._path) / self.box._lookup(key)  # type: ignore[attr-defined]  # private, unstubbed
                mode = path.lstat()
                if not stat.S_ISREG(mode.st_mode):  # a FIFO would block the run, a device never end
                    yield key, _unreadable("not a regular file")
                    continue
                with path.open("rb") as handle:
                    raw = _read_bounded(handle, mode.st_size)
            except (KeyError, FileNotFoundError):
                continue  # taken by a concurrent run
            except OSError as exc:  # one bad file must not stop the others, nor the morning's send
                yield key, _unreadable(exc.strerror or type(exc).__name__)
                continue
            yield key, raw

    def file_away(self, key: str) -> None:
        try:
            if self._done is None:
                exists = PROCESSED_FOLDER in self.box.list_folders()
                self._done = self.box.get_folder(PROCESSED_FOLDER) if exists else self.box.add_folder(PROCESSED_FOLDER)
            # A rename, not a copy, of the file Maildir's own (private) lookup finds.
            source = Path(self.box._path) / self.box._lookup(key)  # type: ignore[attr-defined]  # private, unstubbed
            name = Path(source).name.split(":", 1)[0]
            os.replace(source, Path(self._done._path) / "cur" / f"{name}:2,S")
        except (KeyError, FileNotFoundError):
            return  # filed by a concurrent run
        except OSError as exc:
            raise MailboxError(f"{self.name}: cannot move a handled message aside: {exc.strerror or exc}") from None

    def close(self) -> None:
        self.box.close()


class MboxInbox:
    """An mbox file, read-only: its messages are read one at a time from their offsets."""

    writable = False

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.path = path
        try:
            self.box = mailbox.mbox(path, factory=None, create=False)
        except OSError as exc:
            raise MailboxError(f"{path}: {exc.strerror or exc}") from None

    def pending(self) -> Iterator[tuple[str, bytes]]:
        try:
            keys = list(self.box.keys())
        except OSError as exc:
            raise MailboxError(f"{self.name}: {exc.strerror or exc}") from None
        for key in keys:
            with self.box.get_file(key) as handle:
                # An mbox numbers its messages from 0.
                yield f"{self.path.name}:{key + 1}", _read_bounded(handle)  # type: ignore[operator]  # stubs: str keys

    def file_away(self, key: str) -> None:
        raise UsageError(f"{self.name} is an mbox file: it is read only with --dry-run")

    def close(self) -> None:
        self.box.close()


class FileInbox:
    """One message in a file (``.eml``), read-only."""

    writable = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def pending(self) -> Iterator[tuple[str, bytes]]:
        try:
            with self.path.open("rb") as handle:
                raw = _read_bounded(handle, self.path.stat().st_size)
        except OSError as exc:
            raise MailboxError(f"{self.name}: {exc.strerror or exc}") from None
        yield self.path.name, raw

    def file_away(self, key: str) -> None:
        raise UsageError(f"{self.name} is a single message file: it is read only with --dry-run")

    def close(self) -> None:
        pass


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: Any) -> str:
    if isinstance(value, BaseException):
        value = value.args[0] if value.args else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:300]


class ImapInbox:
    """One logged-in IMAP session on ``[imap] mailbox``.

    Every message not yet filed away is handled, read or not (someone at the desk may have
    opened it). Messages are fetched with BODY.PEEK, so one left for a person stays
    unread. Each is filed only after its changes are committed: marked seen and moved
    (MOVE where the server has it, else COPY, flag deleted and expunge that one message).
    """

    writable = True

    def __init__(self, cfg: ImapConfig) -> None:
        self.cfg = cfg
        self.name = f"IMAP server {cfg.host}:{cfg.effective_port}"
        self.client = self._connect()
        try:
            self._open_folders()
        except (OSError, imaplib.IMAP4.error) as exc:
            self.close()
            raise MailboxError(f"{self.name}: {_text(exc) or type(exc).__name__}") from None
        except BaseException:
            self.close()
            raise

    def _connect(self) -> imaplib.IMAP4:
        cfg = self.cfg
        context = ssl.create_default_context(cafile=cfg.ca_file or None)
        try:
            if cfg.security == "ssl":
                client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    cfg.host, cfg.effective_port, ssl_context=context, timeout=cfg.timeout
                )
            else:
                client = imaplib.IMAP4(cfg.host, cfg.effective_port, timeout=cfg.timeout)
                if cfg.security == "starttls":
                    client.starttls(ssl_context=context)
        except ssl.SSLError as exc:
            raise MailboxError(
                f"TLS with {self.name} failed: {exc.reason or exc}; check imap.security, imap.port and imap.ca_file"
            ) from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"cannot reach {self.name}: {exc or type(exc).__name__}") from None
        try:
            client.login(_quoted(cfg.username), cfg.password)  # imaplib quotes only the password
        except imaplib.IMAP4.error as exc:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()
            raise MailboxError(
                f"{self.name} refused the login for {cfg.username!r}: {_text(exc)}; "
                "check imap.username and the password"
            ) from None
        return client

    def _open_folders(self) -> None:
        self.capabilities = set(_text(self._ok("CAPABILITY", self.client.capability())[0]).upper().split())
        self.processed = _quoted(self.cfg.processed_mailbox)
        listed = self._ok("LIST", self.client.list('""', self.processed))
        if listed == [None]:
            self._ok(f"CREATE {self.cfg.processed_mailbox}", self.client.create(self.processed))
        self._ok(f"SELECT {self.cfg.mailbox}", self.client.select(_quoted(self.cfg.mailbox)))

    def _ok(self, what: str, reply: tuple[str, list[Any]]) -> list[Any]:
        status, data = reply
        if status != "OK":
            raise MailboxError(f"{self.name}: {what} failed: {_text(data[0] if data else status)}")
        return data

    def pending(self) -> Iterator[tuple[str, bytes]]:
        try:
            found = b" ".join(part for part in self._ok("SEARCH", self.client.uid("SEARCH", "UNDELETED")) if part)
            for uid in found.split():
                key = uid.decode("ascii")
                fetched = self._ok(f"FETCH {key}", self.client.uid("FETCH", key, "(RFC822.SIZE)"))
                size = _imap_size(fetched)
                if size > MAX_MESSAGE_BYTES:
                    large = TooLarge(b"")
                    large.size = size
                    yield key, large
                    continue
                fetched = self._ok(f"FETCH {key}", self.client.uid("FETCH", key, "(BODY.PEEK[])"))
                raw = next((part[1] for part in fetched if isinstance(part, tuple)), None)
                if raw is not None:  # else taken by a concurrent run
                    yield key, raw
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"{self.name}: {exc or type(exc).__name__}") from None

    def file_away(self, key: str) -> None:
        uid = self.client.uid
        try:
            self._ok(f"STORE {key}", uid("STORE", key, "+FLAGS.SILENT", r"(\Seen)"))
            if "MOVE" in self.capabilities:
                self._ok(f"MOVE {key}", uid("MOVE", key, self.processed))
                return
            self._ok(f"COPY {key}", uid("COPY", key, self.processed))
            self._ok(f"STORE {key}", uid("STORE", key, "+FLAGS.SILENT", r"(\Deleted)"))
            if "UIDPLUS" in self.capabilities:
                self._ok(f"EXPUNGE {key}", uid("EXPUNGE", key))
            else:
                self._ok("EXPUNGE", self.client.expunge())
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"{self.name}: {exc or type(exc).__name__}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self.client.logout()


def _imap_size(fetched: list[Any]) -> int:
    """RFC822.SIZE from a FETCH answer such as ``[b'1 (UID 7 RFC822.SIZE 2048)']``; 0 when absent."""
    for part in fetched:
        line = part[0] if isinstance(part, tuple) else part
        if isinstance(line, bytes) and b"RFC822.SIZE" in line.upper():
            words = line.upper().replace(b"(", b" ").replace(b")", b" ").split()
            index = words.index(b"RFC822.SIZE")
            if index + 1 < len(words) and words[index + 1].isdigit():
                return int(words[index + 1])
    return 0
