"""The links check: what readers would meet following the edition's links, in findings.

Pure: it reads the links (as readers reach them, through the click redirect: the targets
themselves) and what fetching them gave (``fetch.LinkResult``), and says what is wrong.
Broken links, malformed ones and dead hosts are errors; redirects, plain http and slow
sites are warnings. When nothing answered at all and every failure is a connection or DNS
failure, the network is down, not the links: that is one warning, however many links.
Links to the domains set aside for examples (RFC 2606 and 6761: example.com, .test, ...)
are never fetched: no reader can reach them, so they are one warning naming them, and a
test site or a demo built on them asks nothing of the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from newsletter.preflight.fetch import UNREACHABLE, BadUrlError, LinkResult, canonical, request_url
from newsletter.preflight.findings import SHOWN, Finding, capped, counted, error, info, listed, short, warning

CHECK = "links"
NOT_WEB = ("mailto:", "tel:", "sms:", "#")  # links a mail client hands elsewhere, not fetched
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")  # RFC 2606, with any subdomain
EXAMPLE_TLDS = ("example", "test", "invalid")  # RFC 2606 and 6761: never a real site


def web_links(urls: Iterable[str]) -> list[str]:
    """The distinct links that lead to a web page, in order of appearance; one of each address
    however it is spelled (the HTML part's are percent-encoded, the text part's are not)."""
    found: dict[str, str] = {}
    for url in urls:
        if not url.lower().startswith(NOT_WEB):
            found.setdefault(canonical(url), url)
    return list(found.values())


def malformed(urls: Sequence[str], check: str = CHECK) -> list[Finding]:
    """Links no client could open: each an error (they need no network to find)."""
    found = []
    for url in urls:
        try:
            request_url(url)
        except BadUrlError as exc:
            found.append(error(check, f"malformed link: {exc}: {short(url)}", url))
    return capped(found, SHOWN, "more malformed links")


def fetchable(urls: Sequence[str]) -> list[str]:
    """The links worth a request: well formed, http or https."""
    good = []
    for url in urls:
        try:
            request_url(url)
        except BadUrlError:
            continue
        good.append(url)
    return good


def on_example_domain(url: str) -> bool:
    """A link to a domain reserved for examples: a placeholder no reader can reach."""
    try:
        host = (urlsplit(canonical(url)).hostname or "").rstrip(".").lower()  # percent-encoded hosts decoded
    except ValueError:
        return False
    if not host:
        return False
    return host.rsplit(".", 1)[-1] in EXAMPLE_TLDS or any(host == d or host.endswith("." + d) for d in EXAMPLE_DOMAINS)


def example_links(urls: Sequence[str], check: str = CHECK) -> list[Finding]:
    """One warning naming the hosts of links and images on example domains (they are not fetched).

    A warning, not an error: a demo, a test site or an edition drafted before the real
    addresses exist is all made of them, and none of that should be held back; a real
    edition with one left in says so on every run.
    """
    placeholders = [u for u in urls if on_example_domain(u)]
    if not placeholders:
        return []
    hosts = list(dict.fromkeys(unquote(urlsplit(u).hostname or "").lower() for u in placeholders))
    return [
        warning(
            check,
            f"{counted(len(placeholders), 'link or image', 'links and images')} on domains reserved for examples "
            f"({listed(hosts, 3)}): no reader can reach them, and they are not fetched",
            placeholders[0],
        )
    ]


def insecure(urls: Sequence[str], check: str = CHECK) -> list[Finding]:
    """Plain http links: one warning naming them (mailbox providers and browsers mark them)."""
    plain = [u for u in fetchable(urls) if urlsplit(u).scheme.lower() == "http"]
    if not plain:
        return []
    return [
        warning(check, f"{counted(len(plain), 'link')} not https: {listed([short(u) for u in plain], 3)}", plain[0])
    ]


def network_down(results: Mapping[str, LinkResult]) -> bool:
    """Nothing answered, and every failure is one of reaching the network (not a server's reply)."""
    if not results or any(r.answered for r in results.values()):
        return False
    failures = {r.failure for r in results.values()}
    return bool(failures) and failures <= UNREACHABLE | {"deadline"} and failures != {"deadline"}


def unreachable_finding(results: Mapping[str, LinkResult], check: str = CHECK) -> Finding:
    """The one warning for a run that could reach nothing."""
    example = next(r for r in results.values() if r.failure in UNREACHABLE)
    return warning(
        check,
        f"nothing could be reached from here (no network, or no linked host resolves): "
        f"{counted(len(results), 'link or image', 'links and images')} not checked "
        f"(first: {example.detail}: {short(example.url)})",
    )


def link_findings(urls: Sequence[str], results: Mapping[str, LinkResult], timeout: float) -> list[Finding]:
    """Findings for fetched links; ``results`` holds every fetchable URL of ``urls`` (none when
    the network is down: the runner says that once for links and images together)."""
    kinds: dict[str, list[Finding]] = {}

    def add(kind: str, finding: Finding) -> None:
        kinds.setdefault(kind, []).append(finding)

    fine = 0
    for url in urls:
        result = results.get(url)
        if result is None:
            continue
        shown = short(url)
        hops = _hops(result)
        if result.failure == "deadline":
            add("deadline", warning(CHECK, f"not checked in time: {shown}", url))
        elif result.failure == "timeout":
            add("timeout", warning(CHECK, f"no answer within {timeout:g} s: {shown}{hops}", url))
        elif result.failure == "url":
            add("bad-redirect", error(CHECK, f"redirects to a malformed address ({result.detail}): {shown}{hops}", url))
        elif result.failure:
            add(result.failure, error(CHECK, f"{result.detail}: {shown}{hops}", url))
        elif result.status is not None and result.status >= 400:
            add("status", error(CHECK, f"{result.status} {result.reason}".rstrip() + f": {shown}{hops}", url))
        elif result.chain:
            add("redirect", warning(CHECK, f"redirects: {shown}{hops}", url))
        else:
            fine += 1
    more = {
        "deadline": "more links not checked in time",
        "timeout": "more links with no answer in time",
        "status": "more broken links",
        "redirect": "more links that redirect",
    }
    found: list[Finding] = []
    for kind, items in kinds.items():
        found += capped(items, SHOWN, more.get(kind, "more links that fail the same way"))
    if results:
        broken = sum(len(v) for k, v in kinds.items() if k not in ("redirect", "deadline", "timeout"))
        found.append(
            info(
                CHECK,
                f"{counted(len([u for u in urls if u in results]), 'link')} checked: {fine} fine"
                + "".join(
                    f", {n} {what}"
                    for n, what in (
                        (len(kinds.get("redirect", [])), "redirected"),
                        (broken, "broken"),
                        (len(kinds.get("timeout", [])) + len(kinds.get("deadline", [])), "unanswered"),
                    )
                    if n
                ),
            )
        )
    return found


def _hops(result: LinkResult) -> str:
    """ " → 301 https://… → 200": the chain a reader's browser would walk."""
    if not result.chain:
        return ""
    steps = [
        f"{status} {short(next_url)}" for (_, status), next_url in zip(result.chain, _targets(result), strict=True)
    ]
    end = str(result.status) if result.status is not None else result.failure
    return " → " + " → ".join(steps) + f" → {end}"


def _targets(result: LinkResult) -> list[str]:
    """Where each redirect of the chain led."""
    return [url for url, _ in result.chain[1:]] + [result.final_url]
