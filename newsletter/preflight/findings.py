"""What preflight says: findings, each an error, a warning or a note, and the report they make.

A finding is one line a person can act on: the check that made it, how serious it is, and
what is wrong (with the URL or feature concerned in ``target``, for tools). Errors are what
would hurt readers or deliverability if the edition went out as it is: the command exits 1
on them, and the scheduler will hold the edition. Warnings and notes never block.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    """One thing preflight found: ``message`` is a single line, ``target`` what it is about."""

    severity: Severity
    check: str
    message: str
    target: str = ""

    def as_dict(self) -> dict[str, str]:
        found = {"severity": self.severity.value, "check": self.check, "message": self.message}
        if self.target:
            found["target"] = self.target
        return found


def error(check: str, message: str, target: str = "") -> Finding:
    return Finding(Severity.ERROR, check, message, target)


def warning(check: str, message: str, target: str = "") -> Finding:
    return Finding(Severity.WARNING, check, message, target)


def info(check: str, message: str, target: str = "") -> Finding:
    return Finding(Severity.INFO, check, message, target)


def capped(findings: Sequence[Finding], limit: int, more: str) -> list[Finding]:
    """The first ``limit`` findings, then one of the same kind counting the rest.

    An edition with 300 broken links says so in a screenful, not in 300 lines; ``more`` is
    the rest's description, e.g. "more links answer 404" (the count goes in front).
    """
    if len(findings) <= limit:
        return list(findings)
    rest = findings[limit:]
    return [*findings[:limit], Finding(rest[0].severity, rest[0].check, f"… and {len(rest)} {more}")]


SHOWN = 10  # findings of one kind listed one by one before the rest are counted


def short(text: str, limit: int = 120) -> str:
    """A URL or headline cut to fit a line."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def counted(n: int, one: str, many: str | None = None) -> str:
    """ "1 link", "3 links"."""
    return f"{n} {one}" if n == 1 else f"{n} {many or one + 's'}"


def listed(items: Sequence[str], limit: int = 5) -> str:
    """ "a, b, c and 4 more": a list that stays on one line."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dataclass
class Report:
    """Everything one preflight run found about one edition."""

    day: date
    subject: str
    origin: str  # where the edition came from, in words: "as it would be made now", "stored (sent)"
    findings: list[Finding] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, found: Iterable[Finding]) -> None:
        self.findings.extend(found)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == Severity.ERROR]

    @property
    def ok(self) -> bool:
        """No errors: the edition may go out (warnings never hold it)."""
        return not self.errors

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def ordered(self) -> list[Finding]:
        """Errors first, then warnings, then notes; each kind in the order the checks ran."""
        return sorted(self.findings, key=lambda f: _ORDER[f.severity])

    def summary(self) -> dict[str, object]:
        return {
            "summary": True,
            "date": self.day.isoformat(),
            "subject": self.subject,
            "origin": self.origin,
            "errors": self.count(Severity.ERROR),
            "warnings": self.count(Severity.WARNING),
            "info": self.count(Severity.INFO),
            "screenshots": list(self.screenshots),
            "seconds": round(self.seconds, 2),
            "ok": self.ok,
        }

    def json_lines(self) -> list[str]:
        """One JSON object per finding, then the summary: easy to grep, stream or load."""
        lines = [json.dumps(f.as_dict(), ensure_ascii=False) for f in self.ordered()]
        return [*lines, json.dumps(self.summary(), ensure_ascii=False)]

    def text_lines(self) -> list[str]:
        """The report for a person: a heading, one line per finding, the screenshots, a tally."""
        lines = [
            f"preflight of the edition of {self.day} ({self.origin})" + (f": {self.subject}" if self.subject else "")
        ]
        width = max((len(f.check) for f in self.findings), default=0)
        lines += [f"{f.severity.value:<8} {f.check:<{width}}  {f.message}" for f in self.ordered()]
        for path in self.screenshots:
            lines.append(f"screenshot: {path}")
        errors, warnings, notes = (self.count(s) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO))
        verdict = "ready to send" if self.ok else "not ready: fix the errors above"
        lines.append(
            f"{counted(errors, 'error')}, {counted(warnings, 'warning')}, {counted(notes, 'note')} "
            f"in {self.seconds:.1f} s: {verdict}"
        )
        return lines
