"""The ``newsletter`` command: one click group, its commands grouped by concern.

``base`` holds the group and what commands share; the other modules register their
commands on it when imported here.
"""

import newsletter.cli.signups  # noqa: F401 - registers its commands on `subscribers`
from newsletter.cli import articles, dkim, embed, inbound, preflight, project, readers, report, sending  # noqa: F401 - they register their commands
from newsletter.cli.base import cli, main

__all__ = ["cli", "main"]
