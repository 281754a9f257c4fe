"""Fetching the edition's links and images: one request at a time by a ``Fetcher``, redirects
followed here by hand, many URLs at once under a concurrency cap and a deadline.

The fetcher is passed in, so the checks run against a test server, a fake or the real web
alike. ``UrllibFetcher`` is the real one (the standard library: no dependency for this).
Nothing here raises for a bad URL or a bad server: each URL ends as a ``LinkResult`` saying
what happened, and the checks turn those into findings.

A slow site must not hold up the morning: every request has a timeout, the whole run a
deadline. Workers are daemon threads, so a server that keeps a socket open past the
deadline delays nothing: its URL is reported as not checked, and its thread ends with its
own timeout.
"""

from __future__ import annotations

import http.client
import queue
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

MAX_IMAGE_BYTES = 1_000_000  # an image larger than this is reported
_READ_CHUNK = 64 * 1024
# Connection-level failures: when every URL fails with one of these, the network is down,
# not the links.
UNREACHABLE = frozenset({"dns", "connect", "timeout"})
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # one label of a host name, after IDNA


class BadUrlError(ValueError):
    """A URL that cannot be requested as it is written: the message says why."""


@dataclass(frozen=True)
class Response:
    """What one request got: the status, the headers (names lower-cased) and up to ``read_limit`` bytes."""

    status: int
    reason: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class FetchError(Exception):
    """A request that got no HTTP answer. ``kind`` is one fixed word callers branch on:
    dns, connect, timeout, tls, protocol."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class Fetcher(Protocol):
    def __call__(self, method: str, url: str, *, timeout: float, read_limit: int = 0) -> Response:
        """One request, no redirects followed; raises ``FetchError`` when no answer came."""
        ...


def request_url(url: str) -> str:
    """``url`` as it goes on the wire: the host in IDNA (xn--) form, other non-ASCII percent-encoded.

    Raises ``BadUrlError`` for what no client could request: no http(s) scheme, no host, a
    bad port or IPv6 literal, spaces or control characters, a host IDNA cannot encode.
    """
    if not url:
        raise BadUrlError("empty link")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise BadUrlError("spaces or control characters in the address")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadUrlError(f"malformed address ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        what = f"a {parts.scheme}: link" if parts.scheme else "a relative link (no http:// or https://)"
        raise BadUrlError(f"{what}, which mail clients cannot open")
    # The renderer's HTML serialiser percent-encodes non-ASCII in an href, host included;
    # browsers decode a host before IDNA, and so does this.
    host = unquote(parts.hostname or "")
    if not host:
        raise BadUrlError("no host name")
    if ":" not in host:  # not an IPv6 literal
        try:
            host = host.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise BadUrlError(f"the host name {host!r} is not a valid domain ({exc})") from None
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
            raise BadUrlError(f"the host name {unquote(parts.hostname or '')!r} is not a valid domain")
    else:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~") or "/"
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    return urlunsplit((parts.scheme.lower(), netloc, path, query, ""))


def canonical(url: str) -> str:
    """One spelling per address, to compare links written differently (``%C3%BC`` or ``ü``)."""
    try:
        return request_url(url)
    except BadUrlError:
        return unquote(url)


# --- the real fetcher -------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects come back as answers: ``follow`` walks them itself, to report the chain."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class UrllibFetcher:
    """Requests with the standard library, a fixed user agent, and the system's CA store.

    Proxies set in the environment (``https_proxy``...) are honoured, as for any tool on
    the machine.
    """

    def __init__(self, user_agent: str, context: ssl.SSLContext | None = None) -> None:
        self.user_agent = user_agent
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=context or ssl.create_default_context())
        )

    def __call__(self, method: str, url: str, *, timeout: float, read_limit: int = 0) -> Response:
        request = urllib.request.Request(
            url, method=method, headers={"User-Agent": self.user_agent, "Accept": "*/*", "Accept-Encoding": "identity"}
        )
        deadline = time.monotonic() + timeout
        try:
            try:
                answer = self._opener.open(request, timeout=timeout)
            except urllib.error.HTTPError as exc:  # 3xx, 4xx and 5xx: an answer all the same
                answer = exc
            with answer:
                headers = {k.lower(): v for k, v in answer.headers.items()} if answer.headers else {}
                body = _read(answer, read_limit, deadline) if read_limit and method != "HEAD" else b""
                status = getattr(answer, "status", None) or getattr(answer, "code", 0) or 0
                return Response(status, str(getattr(answer, "reason", "") or ""), headers, body)
        except FetchError:
            raise
        except urllib.error.URLError as exc:
            raise _failure(exc.reason) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _failure(exc) from None


def _read(answer: object, limit: int, deadline: float) -> bytes:
    """Up to ``limit`` bytes of the body, within the request's time: a trickling server is a timeout."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        if time.monotonic() > deadline:
            raise FetchError("timeout", "the body did not arrive in time")
        chunk = answer.read(min(_READ_CHUNK, limit - size))  # type: ignore[attr-defined]
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _failure(reason: object) -> FetchError:
    """Name what went wrong in one fixed word, and say it in a few."""
    if isinstance(reason, socket.gaierror):
        return FetchError("dns", "the host name does not resolve")
    if isinstance(reason, TimeoutError | socket.timeout):
        return FetchError("timeout", "no answer in time")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return FetchError("tls", f"the certificate is not valid ({reason.verify_message})")
    if isinstance(reason, ssl.SSLError):
        return FetchError("tls", f"TLS failed ({reason.reason or reason})")
    if isinstance(reason, ConnectionRefusedError):
        return FetchError("connect", "connection refused")
    if isinstance(reason, http.client.HTTPException | ConnectionResetError | ConnectionAbortedError):
        return FetchError("protocol", f"the server broke off ({type(reason).__name__})")
    if isinstance(reason, OSError):
        return FetchError("connect", f"cannot connect ({reason.strerror or reason})")
    return FetchError("protocol", str(reason) or type(reason).__name__)


# --- one URL: HEAD, else GET, redirects followed -------------------------------------------------


@dataclass(frozen=True)
class LinkResult:
    """How one URL fared. ``chain`` holds each redirect as (URL, status); ``status`` is the final
    answer's, or None with ``failure`` (a ``FetchError`` kind, "url", "redirects" or "deadline")."""

    url: str
    status: int | None = None
    reason: str = ""
    chain: tuple[tuple[str, int], ...] = ()
    failure: str = ""
    detail: str = ""
    size: int | None = None  # the body's length, when known (Content-Length, or bytes read)
    final_url: str = ""

    @property
    def answered(self) -> bool:
        """Whether any server answered in HTTP, even with an error."""
        return self.status is not None or bool(self.chain)


def _ask(fetcher: Fetcher, url: str, timeout: float, read_limit: int) -> Response:
    """HEAD, falling back to GET when the server refuses HEAD (405, 501), fails on it, or
    answers it with an error (many sites answer HEAD badly and GET well).

    No GET after a timeout or a refused connection: it would only wait as long again.
    """
    try:
        answer: Response | None = fetcher("HEAD", url, timeout=timeout)
    except FetchError as exc:
        if exc.kind in UNREACHABLE or exc.kind == "tls":
            raise
        answer = None
    if answer is None or answer.status >= 400:
        return fetcher("GET", url, timeout=timeout, read_limit=read_limit)
    if read_limit and "content-length" not in answer.headers and answer.status < 300:
        return fetcher("GET", url, timeout=timeout, read_limit=read_limit)
    return answer


def follow(
    fetcher: Fetcher,
    url: str,
    *,
    timeout: float,
    max_redirects: int,
    read_limit: int = 0,
    remaining: Callable[[], float] | None = None,
) -> LinkResult:
    """Fetch ``url`` and follow its redirects, at most ``max_redirects``; never raises."""
    chain: list[tuple[str, int]] = []
    current = url
    for _ in range(max_redirects + 1):
        try:
            wire = request_url(current)
        except BadUrlError as exc:
            return LinkResult(url, chain=tuple(chain), failure="url", detail=str(exc), final_url=current)
        budget = timeout if remaining is None else min(timeout, remaining())
        if budget <= 0:
            return LinkResult(url, chain=tuple(chain), failure="deadline", detail="not checked in time")
        try:
            answer = _ask(fetcher, wire, budget, read_limit)
        except FetchError as exc:
            return LinkResult(url, chain=tuple(chain), failure=exc.kind, detail=exc.detail, final_url=current)
        location = answer.headers.get("location", "").strip()
        if 300 <= answer.status < 400 and answer.status != 304 and location:
            chain.append((current, answer.status))
            current = urljoin(current, location)
            continue
        return LinkResult(
            url,
            status=answer.status,
            reason=answer.reason,
            chain=tuple(chain),
            size=_size(answer),
            final_url=current,
        )
    return LinkResult(
        url, chain=tuple(chain), failure="redirects", detail=f"more than {max_redirects} redirects", final_url=current
    )


def _size(answer: Response) -> int | None:
    length = answer.headers.get("content-length", "")
    if length.isdigit():
        return int(length)
    return len(answer.body) if answer.body else None


# --- many URLs: a small pool of daemon threads, a deadline ----------------------------------------


def fetch_all(
    urls: Sequence[str],
    fetcher: Fetcher,
    *,
    timeout: float,
    max_redirects: int,
    concurrency: int,
    deadline_seconds: float,
    read_limits: Mapping[str, int] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, LinkResult]:
    """Every URL's result; those not finished when the deadline passes say so ("deadline")."""
    limits = read_limits or {}
    end = monotonic() + deadline_seconds
    results: dict[str, LinkResult] = {}
    lock = threading.Lock()
    done = threading.Event()
    todo: queue.SimpleQueue[str] = queue.SimpleQueue()
    for url in urls:
        todo.put(url)

    def remaining() -> float:
        return end - monotonic()

    def work() -> None:
        while True:
            try:
                url = todo.get_nowait()
            except queue.Empty:
                return
            try:
                result = follow(
                    fetcher,
                    url,
                    timeout=timeout,
                    max_redirects=max_redirects,
                    read_limit=limits.get(url, 0),
                    remaining=remaining,
                )
            except Exception as exc:  # noqa: BLE001 - a fetcher's bug is one URL's finding, not a dead thread
                result = LinkResult(url, failure="protocol", detail=f"{type(exc).__name__}: {exc}")
            with lock:
                results[url] = result
                if len(results) == len(urls):
                    done.set()

    if urls:
        for number in range(min(concurrency, len(urls))):
            threading.Thread(target=work, name=f"preflight-fetch-{number}", daemon=True).start()
        done.wait(max(0.0, remaining()))
    with lock:
        found = dict(results)
    for url in urls:
        found.setdefault(url, LinkResult(url, failure="deadline", detail=f"not checked within {deadline_seconds:g} s"))
    return found
