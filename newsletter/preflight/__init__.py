"""Preflight: check an edition as it will be sent, before it goes out and cannot be recalled.

``run_preflight`` builds the message a reader would get and runs every check over it:
size against Gmail's clipping, links and images, headers, the plain-text part, CSS support
in the major clients, SpamAssassin's score and screenshots. Each check is a pure function
over plain data in its own module; the web, other programs and the clock come in through
``Tools``. The result is a ``Report`` of findings, each an error, a warning or a note.
"""

from newsletter.preflight.findings import Finding, Report, Severity
from newsletter.preflight.runner import check_message, run_preflight
from newsletter.preflight.tools import Tools

__all__ = ["Finding", "Report", "Severity", "Tools", "check_message", "run_preflight"]
