"""A private Postfix, started from a throw-away configuration, for tests that need a real MTA.

Bounce handling is only worth testing against the reports a real mail server writes, so
this starts Debian's Postfix (``/usr/sbin/postfix``) the way the IMAP tests start
Dovecot: its own ``main.cf`` and ``master.cf`` in a fresh folder, its own queue and data
directories, one SMTP listener on a free 127.0.0.1 port, and nothing shared with a
system instance, which need not run (``/etc/postfix`` is never written; Postfix's start-up
script only reads it, to look for a multi-instance setup).

What the instance does with mail:

* ``@readers.test`` (``local_domain``) is a local domain whose recipients are all
  accepted at RCPT time (``local_recipient_maps`` is empty). The ``known`` readers are
  aliases to Maildirs; anyone else bounces at local delivery with a real delivery status
  notification (5.1.1 "unknown user"), as a remote MTA's mailbox server would.
* ``bounces@news.test`` (``return_domain``), and with ``recipient_delimiter = +`` every
  ``bounces+CODE@news.test``, is a virtual mailbox: the DSNs land in the Maildir
  :attr:`Postfix.bounce_maildir`.
* Anything else is refused by the ``error`` transport: no mail leaves the machine.

Postfix's master must start as root (it drops to ``mail_owner`` for its daemons), so
without root there is no instance; :func:`unavailable_reason` says why. Its delivery
agents never write as root either: Maildirs belong to ``nobody``, which is why the folder
is a fresh ``/tmp`` directory anyone may traverse rather than pytest's private one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from newsletter.demo.sink import free_port

POSTFIX = Path("/usr/sbin/postfix")
POSTQUEUE = Path("/usr/sbin/postqueue")
DELIVERY_USER = "nobody"  # Postfix's delivery agents refuse to write mail as root
PREFIX = "newsletter-postfix-"  # of each instance's folder in the temporary directory
NO_RELAY = "error:5.7.1 this test instance delivers nothing off the machine"


def unavailable_reason() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if not POSTFIX.exists():
        return f"{POSTFIX} is not installed (Debian package postfix)"
    if os.geteuid() != 0:
        return "Postfix's master process must be started as root"
    try:
        pwd.getpwnam("postfix")
        pwd.getpwnam(DELIVERY_USER)
    except KeyError as exc:
        return f"the user Postfix needs is missing: {exc}"
    return None


@dataclass(frozen=True)
class Postfix:
    """A running private instance: where to send, and where its mail ends up."""

    folder: Path
    port: int
    local_domain: str
    return_domain: str
    return_local: str
    process: subprocess.Popen[bytes]

    @property
    def config_dir(self) -> Path:
        return self.folder / "etc"

    @property
    def return_address(self) -> str:
        """The address the DSNs go to; ``local+anything@domain`` reaches it as well."""
        return f"{self.return_local}@{self.return_domain}"

    @property
    def bounce_maildir(self) -> Path:
        return self.folder / "mail" / self.return_local

    def reader_maildir(self, local_part: str) -> Path:
        """Where a known reader's mail is delivered."""
        return self.folder / "mail" / "readers" / local_part

    def log(self) -> str:
        """Postfix's own log of this instance, for failure messages."""
        path = self.folder / "maillog"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(no log)"

    def flush(self) -> None:
        """Ask the queue manager to retry anything deferred now rather than in minutes."""
        subprocess.run([str(POSTQUEUE), "-c", str(self.config_dir), "-f"], capture_output=True, timeout=10, check=False)

    def delivered(self, maildir: Path) -> list[Path]:
        """The messages in a Maildir's new/ and cur/, oldest first."""
        found = [p for sub in ("new", "cur") if (maildir / sub).is_dir() for p in (maildir / sub).iterdir()]
        return sorted(found, key=lambda p: p.stat().st_mtime_ns)

    def wait_for(self, maildir: Path, count: int, timeout: float = 30) -> list[Path]:
        """Wait until ``count`` messages are in ``maildir``; fail with the log if they never come.

        Delivery is asynchronous (queue manager, local delivery, bounce daemon, virtual
        delivery), so the only honest check is to look until a deadline.
        """
        deadline = time.monotonic() + timeout
        next_flush = time.monotonic() + 2
        while True:
            found = self.delivered(maildir)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} messages reached {maildir} in {timeout:g} s; Postfix log:\n{self.log()}"
                )
            if time.monotonic() > next_flush:
                self.flush()
                next_flush = time.monotonic() + 2
            time.sleep(0.05)


def _main_cf(folder: Path, local_domain: str, return_domain: str) -> str:
    nobody = pwd.getpwnam(DELIVERY_USER)
    return f"""\
# A private test instance: nothing here is read from or written to /etc/postfix.
compatibility_level = 3.6
queue_directory = {folder}/queue
data_directory = {folder}/data
mail_spool_directory = {folder}/spool
maillog_file = {folder}/maillog
maillog_file_prefixes = {folder}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.{local_domain}
mydomain = {local_domain}
myorigin = {local_domain}
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
biff = no
notify_classes =

# Readers: every address is accepted at RCPT; unknown ones bounce at local delivery (a DSN).
mydestination = {local_domain}
local_recipient_maps =
alias_maps = texthash:{folder}/etc/aliases
alias_database =
forward_path =
allow_mail_to_commands =
default_privs = {DELIVERY_USER}

# The return path: bounces@ and bounces+CODE@ both land in one Maildir.
recipient_delimiter = +
virtual_mailbox_domains = {return_domain}
virtual_mailbox_base = {folder}/mail
virtual_mailbox_maps = texthash:{folder}/etc/virtual
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}

# Nothing leaves this machine.
relay_domains =
default_transport = {NO_RELAY}
relay_transport = {NO_RELAY}
"""


def _master_cf(port: int) -> str:
    # No chroot anywhere: the daemons work in the private folder, not in a jail built for them.
    services = [
        f"127.0.0.1:{port} inet n - n - - smtpd",
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "local unix - n n - - local",
        "virtual unix - n n - - virtual",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    return "\n".join(services) + "\n"


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        return sock.recv(100).startswith(b"220")
    return False


def _own_processes(config_dir: Path) -> list[int]:
    """Processes of this instance only: Postfix hands ``MAIL_CONFIG`` to all its daemons."""
    marker = f"MAIL_CONFIG={config_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _stop(instance: Postfix) -> None:
    """``postfix stop``, then make sure: the master and every daemon of this instance are gone."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [str(POSTFIX), "-c", str(instance.config_dir), "stop"], capture_output=True, timeout=15, check=False
        )
    try:
        instance.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(instance.process.pid, signal.SIGKILL)
        instance.process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while (leftovers := _own_processes(instance.config_dir)) and time.monotonic() < deadline:
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_abandoned() -> None:
    """Stop instances whose test run was killed before its finalizer could (a SIGKILL, a CI timeout).

    Each instance's folder names the process that started it; an instance of a run that
    is still going (another pytest, in parallel) is left alone.
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):
            if _alive(int((folder / "owner.pid").read_text())):
                continue
            for pid in _own_processes(folder / "etc"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(folder, ignore_errors=True)


def _write_config(
    folder: Path, port: int, known: Iterable[str], local_domain: str, return_domain: str, return_local: str
) -> None:
    nobody = pwd.getpwnam(DELIVERY_USER)
    postfix_user = pwd.getpwnam("postfix")
    for name in ("etc", "queue", "data", "spool", "mail", "mail/readers"):
        (folder / name).mkdir()
    os.chown(folder / "data", postfix_user.pw_uid, postfix_user.pw_gid)
    for name in ("mail", "mail/readers"):
        os.chown(folder / name, nobody.pw_uid, nobody.pw_gid)
    etc = folder / "etc"
    (etc / "main.cf").write_text(_main_cf(folder, local_domain, return_domain), encoding="utf-8")
    (etc / "master.cf").write_text(_master_cf(port), encoding="utf-8")
    aliases = "".join(f"{local} {folder}/mail/readers/{local}/\n" for local in known)
    (etc / "aliases").write_text(aliases, encoding="utf-8")
    (etc / "virtual").write_text(f"{return_local}@{return_domain} {return_local}/\n", encoding="utf-8")
    # Postfix waits (in 0.3 s steps) until a configuration file is a second old, in case it
    # is still being written; these are complete, so date them back and skip the wait.
    settled = time.time() - 60
    for path in etc.iterdir():
        os.utime(path, (settled, settled))


@contextlib.contextmanager
def start_postfix(
    known: Iterable[str] = (),
    *,
    local_domain: str = "readers.test",
    return_domain: str = "news.test",
    return_local: str = "bounces",
    timeout: float = 20,
) -> Iterator[Postfix]:
    """Run a private Postfix for the duration of the block; see the module docstring.

    ``known`` are the local parts at ``local_domain`` that have a mailbox; mail to any
    other local part there bounces.
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    _reap_abandoned()
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    instance: Postfix | None = None
    try:
        (folder / "owner.pid").write_text(str(os.getpid()))
        folder.chmod(0o755)  # the delivery agents, running as nobody, must reach the Maildirs
        port = free_port()
        _write_config(folder, port, known, local_domain, return_domain, return_local)
        output = folder / "output.txt"
        with output.open("wb") as out:
            # start-fg keeps the master a child of ours, so it is reaped, in a session of its own.
            process = subprocess.Popen(
                [str(POSTFIX), "-c", str(folder / "etc"), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        instance = Postfix(folder, port, local_domain, return_domain, return_local, process)
        deadline = time.monotonic() + timeout
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not start: {output.read_text(errors='replace')}{instance.log()}")
            time.sleep(0.05)
        yield instance
    finally:
        if instance is not None:
            _stop(instance)
        shutil.rmtree(folder, ignore_errors=True)
