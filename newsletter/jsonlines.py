"""JSON Lines exports (one object per line, what a CMS writes) into candidates.

Each line is parsed alone: a bad line, one nested too deep or with a number of thousands of
digits, is that line's rejection and the rest go in.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from newsletter.cleaning import (
    DATE_RANGE,
    absolute_url,
    date_in_range,
    html_to_text,
    parse_date,
    squash,
)
from newsletter.config import PRIORITY_MAX, PRIORITY_MIN
from newsletter.items import JSON_FIELDS, Candidate, finish_item

_JSON_DIGITS_MAX = 40


class _TooManyDigitsError(Exception):
    """Raised (and caught, within this module) for a JSON number past ``_JSON_DIGITS_MAX``."""

    def __init__(self, digits: int) -> None:
        self.digits = digits
        super().__init__(f"a number with {digits} digits; at most {_JSON_DIGITS_MAX} are allowed")


def _json_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > _JSON_DIGITS_MAX:
        raise _TooManyDigitsError(digits)
    return int(text)


def _json_candidate(line: bytes, where: str, zone: ZoneInfo, section: str) -> tuple[Candidate, set[str]]:
    try:
        item = json.loads(line.decode("utf-8"), parse_int=_json_int)
    except UnicodeDecodeError:
        return Candidate(where, error="not UTF-8 text"), set()
    except json.JSONDecodeError as exc:
        return Candidate(where, error=f"not valid JSON: {exc.msg} (column {exc.colno})"), set()
    except _TooManyDigitsError as exc:
        return Candidate(where, error=str(exc)), set()
    except RecursionError:  # json nests by recursion: [[[[…]]]] 100,000 deep must cost one line only
        return Candidate(where, error="nested too deeply"), set()
    if not isinstance(item, dict):
        return Candidate(where, error="expected a JSON object {...}"), set()
    unknown = set(item) - JSON_FIELDS
    priority = item.pop("priority", None)
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        return Candidate(where, error=f"priority must be a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}"), unknown
    values: dict[str, str] = {}
    for name in JSON_FIELDS & set(item):
        value = item[name]
        if name == "issue_number" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and not isinstance(value, str):
            return Candidate(where, error=f"{name} must be a string, not {type(value).__name__}"), unknown
        values[name] = value or ""
    url = absolute_url(values.get("url", ""), "")
    if not url:
        why = "is missing" if not values.get("url") else f"{values['url'][:80]!r} is not an http(s) URL"
        return Candidate(where, error=f"url {why}"), unknown
    values["url"] = url
    values["guid"] = squash(values.get("guid", "")) or url
    for name in ("title", "image_alt", "image_caption", "author", "section", "issue_number"):
        values[name] = html_to_text(values.get(name, ""))
    if not values["title"]:
        return Candidate(where, error="title is missing"), unknown
    raw_date = values.pop("published_at", "")
    published = parse_date(raw_date, zone) if raw_date else None
    if raw_date and published is None:
        return Candidate(
            where, error=f"published_at {raw_date[:40]!r} is not a date like 2026-11-24T05:30:00Z"
        ), unknown
    if published is not None and not date_in_range(published):
        return Candidate(where, error=f"published_at {raw_date[:40]!r} is outside {DATE_RANGE}"), unknown
    body = values.pop("body", "")
    candidate = finish_item(where, values, body, html_to_text(values.pop("standfirst", "")), section)
    candidate.published_at = published
    candidate.priority = priority
    candidate.categories = (values.get("section", ""),)
    if published is None and not candidate.error:
        candidate.notes.append(f"{where}: no published_at; using the time of import")
    return candidate, unknown


def parse_json_lines(data: bytes, source: str, zone: ZoneInfo, section: str) -> tuple[list[Candidate], list[str]]:
    candidates: list[Candidate] = []
    unknown: dict[str, int] = {}
    # bytes.splitlines splits at \r and \n only, never at U+2028 inside a JSON string.
    for number, line in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        if line.strip():
            candidate, extra = _json_candidate(line, f"line {number}", zone, section)
            candidates.append(candidate)
            for name in extra:
                unknown.setdefault(name, number)
    warnings = [f"{source}: unknown field {k!r} ignored (first on line {n})" for k, n in sorted(unknown.items())]
    return candidates, warnings


def looks_like_json_lines(data: bytes, source: str) -> bool:
    """JSON Lines by name, or by an object on one of its first lines: a bad first line must
    be rejected with its number, not make the whole file "neither a feed nor JSON Lines"."""
    if urlsplit(source).path.lower().endswith((".jsonl", ".ndjson")):
        return True
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return False
    return any(line.lstrip().startswith(b"{") for line in head[:65536].splitlines()[:50])
