"""The size check: Gmail shows only the first ~102 KB of a message's HTML, and hides the rest
behind "[Message clipped] View entire message", the footer and its unsubscribe link with it.

Pure: two sizes in bytes.
"""

from __future__ import annotations

from newsletter.preflight.findings import Finding, error, info, warning
from newsletter.render import GMAIL_CLIP_BYTES

CHECK = "size"
NEAR = 0.9  # warn from 90 % of the limit: one more long story would cross it


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} KB"


def check_size(html_bytes: int, message_bytes: int, limit: int = GMAIL_CLIP_BYTES) -> list[Finding]:
    """One finding on the HTML part against Gmail's limit, one note on the whole message."""
    whole = info(CHECK, f"whole message {_kb(message_bytes)} as sent (encoded, headers and both parts)")
    if html_bytes > limit:
        return [
            error(
                CHECK,
                f"HTML part is {_kb(html_bytes)}, {_kb(html_bytes - limit)} over Gmail's clipping limit of "
                f"{_kb(limit)} ({limit:,} bytes): Gmail will hide the end of the edition and its unsubscribe link",
            ),
            whole,
        ]
    left = f"HTML part is {_kb(html_bytes)}, {_kb(limit - html_bytes)} under Gmail's clipping limit of {_kb(limit)}"
    if html_bytes > limit * NEAR:
        return [warning(CHECK, left + ": one more long story may cross it"), whole]
    return [info(CHECK, left), whole]
