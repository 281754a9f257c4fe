"""The one rule for an address the sender writes into a header as it is.

A dot-atom local part and an ASCII domain of at least two labels (RFC 5322 3.4.1, without
quoted strings, comments or address literals): what can stand in From, To, Reply-To or a
MAIL FROM without quoting or encoding. Readers' addresses are checked more fully, with
email-validator, when they sign up; this is the last guard before bytes go on the wire,
and the check on addresses in the configuration.
"""

from __future__ import annotations

import re

PLAIN_ADDRESS = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+(?:\.[!#-'*+\-/-9=?A-Z^-~]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
