"""Reading a source's bytes: a file or device, or an HTTP(S) URL with conditional requests.

Every read is bounded by ``[fetch]``: at most ``max_bytes``, within ``timeout``; a pipe
without a writer or a device without an end cannot hang or exhaust memory.
"""

from __future__ import annotations

import os
import select
import stat
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from newsletter import __version__
from newsletter.config import FetchConfig
from newsletter.errors import ArticleImportError

USER_AGENT = f"BreakfastInRed/{__version__} (newsletter feed reader)"

# --- reading sources ------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """A source's bytes, where they came from (for relative links) and the HTTP validators."""

    data: bytes
    base_url: str = ""
    etag: str = ""
    last_modified: str = ""
    not_modified: bool = False


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class _HTTPRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect to ftp://; a feed only moves between http(s) URLs."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not is_url(newurl.lower()):
            return None  # urllib then reports the redirect itself as the HTTP error
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def read_file(source: str, settings: FetchConfig) -> Fetched:
    """Read a file within ``fetch.max_bytes``, the limit a download has.

    A path may name something endless (``/dev/zero``) or a pipe (``<(cms-export)``), so the
    read stops one byte past the limit, and a pipe or device must deliver all of it within
    ``fetch.timeout``. Opening does not wait: a named pipe with no writer reads as empty.
    """
    if "://" in source:
        raise ArticleImportError(f"{source}: only http://, https:// URLs and file paths can be imported")
    try:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(Path(source).expanduser(), flags)
    except FileNotFoundError:
        raise ArticleImportError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ArticleImportError(f"{source}: is a directory; give a feed or JSON Lines file") from None
    except OSError as exc:
        raise ArticleImportError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise ArticleImportError(f"{source}: is a directory; give a feed or JSON Lines file")
        return Fetched(_read_within(fd, source, settings))
    except OSError as exc:
        raise ArticleImportError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _read_within(fd: int, source: str, settings: FetchConfig) -> bytes:
    """Up to ``settings.max_bytes`` from ``fd``, opened non-blocking: when a pipe or device has
    nothing yet, wait for it until the deadline rather than for ever."""
    data = bytearray()
    deadline = time.monotonic() + settings.timeout
    while True:
        try:
            chunk = os.read(fd, min(1 << 20, settings.max_bytes + 1 - len(data)))
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise ArticleImportError(
                    f"{source}: no end of the data within fetch.timeout ({settings.timeout:g} s)"
                ) from None
            continue
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > settings.max_bytes:
            raise ArticleImportError(
                f"{source}: larger than fetch.max_bytes ({settings.max_bytes:,} bytes); refusing it"
            )


def fetch_url(url: str, settings: FetchConfig, etag: str = "", last_modified: str = "") -> Fetched:
    """GET ``url`` within the time and size limits; a 304 to our validators means "no news"."""
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5",
        "Accept-Encoding": "identity",
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    too_big = ArticleImportError(
        f"{url}: the response is larger than fetch.max_bytes ({settings.max_bytes:,} bytes); refusing it"
    )
    slow = ArticleImportError(f"{url}: no complete answer within fetch.timeout ({settings.timeout:g} s)")
    opener = urllib.request.build_opener(_HTTPRedirectsOnly)
    deadline = time.monotonic() + settings.timeout
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=settings.timeout) as reply:
            declared = reply.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > settings.max_bytes:
                raise too_big
            chunks: list[bytes] = []
            size = 0
            while chunk := reply.read1(64 * 1024):
                size += len(chunk)
                if size > settings.max_bytes:
                    raise too_big
                if time.monotonic() > deadline:
                    raise slow
                chunks.append(chunk)
            return Fetched(
                b"".join(chunks),
                reply.geturl(),
                reply.headers.get("ETag", ""),
                reply.headers.get("Last-Modified", ""),
            )
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304 and (etag or last_modified):
            return Fetched(b"", url, etag, last_modified, not_modified=True)
        raise ArticleImportError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise slow from None
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise ArticleImportError(f"{url}: cannot connect ({reason})") from None
    except TimeoutError:
        raise slow from None
    except (OSError, HTTPException, ValueError) as exc:
        raise ArticleImportError(f"{url}: the download failed ({exc or type(exc).__name__})") from None
