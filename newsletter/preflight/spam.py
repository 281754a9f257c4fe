"""The spam check: SpamAssassin's score and rules for the message, local tests only.

Run as ``spamassassin --local --test-mode`` (no DNS blocklists, no network), with Bayes off
and no preferences file written, so the result depends on the message alone and the run
learns nothing (SpamAssassin still makes an empty ~/.spamassassin). The command runner is
passed in; parsing its report is pure.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.preflight.commands import Runner
from newsletter.preflight.findings import Finding, info, listed, warning

CHECK = "spam"
TIMEOUT_SECONDS = 60.0
MAX_BYTES = 500_000  # spamc's own limit: SpamAssassin is not meant for bigger messages
COMMAND = (
    "spamassassin",
    "--local",
    "--test-mode",
    "--nocreate-prefs",
    "--cf=use_bayes 0",
    "--cf=bayes_auto_learn 0",
)
_STATUS = re.compile(r"^X-Spam-Status: .*?score=(-?[\d.]+)", re.M | re.S)
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


@dataclass(frozen=True)
class SpamResult:
    score: float
    rules: tuple[tuple[str, float, str], ...]  # (name, points, description), highest first


def parse_report(output: str) -> SpamResult | None:
    """The score and the rules hit, from the header and the table ``--test-mode`` adds."""
    status = _STATUS.search(output)
    if status is None:
        return None
    rules: list[tuple[str, float, str]] = []
    table = output.split("---- ----------------------", 1)
    if len(table) == 2:
        for line in table[1].splitlines()[1:]:
            match = _RULE.match(line)
            if match:
                rules.append((match[2], float(match[1]), match[3].strip()))
            elif rules and line.startswith((" ", "\t")) and line.strip():
                continue  # a description's second line
            elif not line.strip():
                break
    rules.sort(key=lambda r: -r[1])
    return SpamResult(float(status[1]), tuple(rules))


def check_spam(message: bytes, run: Runner, which: Callable[[str], str | None], threshold: float) -> list[Finding]:
    """Score the message; one note when SpamAssassin is not installed, or cannot say."""
    program = which(COMMAND[0])
    if program is None:
        return [info(CHECK, "SpamAssassin is not installed (Debian: apt install spamassassin): no spam score")]
    if len(message) > MAX_BYTES:
        return [info(CHECK, f"the message is over {MAX_BYTES // 1000} KB: too big for a spam score")]
    try:
        done = run([program, *COMMAND[1:]], message, TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return [warning(CHECK, f"SpamAssassin gave no answer within {TIMEOUT_SECONDS:g} s")]
    except OSError as exc:
        return [warning(CHECK, f"SpamAssassin could not run: {exc.strerror or exc}")]
    result = parse_report(done.stdout.decode("utf-8", "replace"))
    if result is None:
        detail = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no report"])[-1]
        return [warning(CHECK, f"SpamAssassin did not score the message (exit {done.returncode}): {detail[:200]}")]
    scoring = [f"{name} {points:+g}" for name, points, _ in result.rules if points]
    rules = f"; rules: {listed(scoring, 8)}" if scoring else "; no rule scored"
    text = f"SpamAssassin score {result.score:g} (local tests; warning from {threshold:g}){rules}"
    return [warning(CHECK, text) if result.score >= threshold else info(CHECK, text)]
