"""Screenshots of the HTML part at a phone's width (375 px) and a desktop client's (600 px).

Chromium, headless, opens a copy of the HTML written beside the pictures. Nothing may leave
the machine: the copy carries a Content-Security-Policy that allows no remote resource,
and every host name resolves to nowhere, so remote images show as their alt text (what
readers with images off see) and nobody's server logs a visit. The command runner is
passed in; a Chromium that hangs is stopped at the timeout.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from newsletter.preflight.commands import Runner
from newsletter.preflight.findings import Finding, info, warning

CHECK = "screenshots"
# Width: window height. A screenshot shows the window, not the whole page: these heights hold
# a morning of a dozen stories (the narrow layout is the longer), and cost no more to take.
WIDTHS = {375: 4800, 600: 3600}
TIMEOUT_SECONDS = 30.0
CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")
_CSP = (
    '<meta http-equiv="Content-Security-Policy" '
    "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
)
_HEAD = re.compile(r"<head[^>]*>", re.I)


def find_chromium(which: Callable[[str], str | None]) -> str | None:
    for name in CANDIDATES:
        found = which(name)
        if found:
            return found
    return None


def offline_copy(html: str) -> str:
    """The HTML with a policy that forbids every remote resource, as early in <head> as it goes."""
    match = _HEAD.search(html)
    if match is None:
        return _CSP + html
    return html[: match.end()] + _CSP + html[match.end() :]


def chromium_command(chromium: str, page: Path, picture: Path, width: int, profile: Path) -> list[str]:
    command = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--mute-audio",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--screenshot={picture}",
        f"--window-size={width},{WIDTHS[width]}",
        page.as_uri(),
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to start as root with its sandbox
    return command


def take_screenshots(
    html: str, folder: Path, which: Callable[[str], str | None], run: Runner
) -> tuple[list[Finding], list[str]]:
    """Write the offline copy and one PNG per width into ``folder``; the findings and the PNGs' paths."""
    chromium = find_chromium(which)
    if chromium is None:
        return [info(CHECK, "Chromium is not installed (Debian: apt install chromium): no screenshots")], []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        page = folder / "edition.html"
        page.write_text(offline_copy(html), encoding="utf-8")
    except OSError as exc:
        return [warning(CHECK, f"cannot write to {folder}: {exc.strerror or exc}")], []
    pictures = {width: folder / f"edition-{width}.png" for width in WIDTHS}
    problems: dict[int, str] = {}

    def shoot(width: int) -> None:
        try:
            shoot_one(width)
        except Exception as exc:  # noqa: BLE001 - one width's failure is a finding, not a dead thread
            problems[width] = f"{type(exc).__name__}: {exc}"

    def shoot_one(width: int) -> None:
        picture = pictures[width]
        picture.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix="preflight-chromium-") as profile:
            try:
                done = run(chromium_command(chromium, page, picture, width, Path(profile)), b"", TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                problems[width] = f"Chromium took over {TIMEOUT_SECONDS:g} s"
                return
            except OSError as exc:
                problems[width] = f"Chromium could not run: {exc.strerror or exc}"
                return
        if not picture.is_file() or picture.stat().st_size == 0:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = next((line for line in reversed(lines) if "ERROR" not in line), lines[-1] if lines else "")
            problems[width] = f"Chromium wrote no screenshot (exit {done.returncode}): {detail[-200:]}"

    threads = [threading.Thread(target=shoot, args=(width,), name=f"preflight-shot-{width}") for width in WIDTHS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = [warning(CHECK, f"{width} px: {problem}") for width, problem in sorted(problems.items())]
    paths = [str(pictures[w]) for w in WIDTHS if w not in problems]
    if paths:
        found.append(info(CHECK, f"{len(paths)} screenshots of the HTML part, images off, in {folder}"))
    return found, paths
