"""The headers check: the fields mailbox providers judge a bulk message by, read from its bytes.

RFC 5322 wants exactly one From, Date and Message-ID, each well formed; RFC 2369 and 2919
the list fields; RFC 8058 one-click unsubscribe: an https List-Unsubscribe URI, the exact
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, and both covered by a DKIM
signature. Gmail's and Yahoo's bulk sender rules (2024) require that signature, aligned
with the From domain, or they refuse or junk the mail.

Pure: the message's bytes and what the DKIM configuration promises.
"""

from __future__ import annotations

import re
from email.utils import getaddresses, parsedate_to_datetime

from newsletter.preflight.findings import Finding, error, info, warning

CHECK = "headers"
_ADDRESS = re.compile(r"[^@\s<>()\[\]\\,;:\"]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MSG_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_LIST_ID = re.compile(r"(?:.*\s)?<([A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)+)>", re.S)
_URI_ITEM = re.compile(r"\s*<([^<>\s]+)>\s*")
ONE_CLICK = "List-Unsubscribe=One-Click"


def header_fields(message: bytes) -> list[tuple[str, str]]:
    """The header's fields in order, unfolded, values as text (RFC 2047 words left as written)."""
    head = message.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    fields: list[tuple[str, str]] = []
    for line in head.decode("utf-8", "replace").split("\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
    return fields


def _one(fields: list[tuple[str, str]], name: str, found: list[Finding], required: bool = True) -> str | None:
    """The value of a field that must appear once; a finding when it is missing or repeated."""
    values = [v for n, v in fields if n.lower() == name.lower()]
    if len(values) > 1:
        found.append(error(CHECK, f"{name} appears {len(values)} times; it must appear once", name))
        return None
    if not values:
        if required:
            found.append(error(CHECK, f"no {name} header", name))
        return None
    return values[0]


def domain_of(address_field: str) -> str:
    """The domain of the one address in a From value, lower-cased; "" when there is none."""
    pairs = getaddresses([address_field])
    return pairs[0][1].rpartition("@")[2].lower() if len(pairs) == 1 and "@" in pairs[0][1] else ""


def aligned(from_domain: str, signing_domain: str) -> bool:
    """DMARC's relaxed alignment as the configuration checks it: the same domain or a parent of it."""
    from_domain, signing_domain = from_domain.lower().rstrip("."), signing_domain.lower().rstrip(".")
    return bool(signing_domain) and (from_domain == signing_domain or from_domain.endswith("." + signing_domain))


def dkim_tags(value: str) -> dict[str, str]:
    tags = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = re.sub(r"\s+", "", tag_value)
    return tags


def check_headers(message: bytes, dkim_domain: str = "") -> list[Finding]:
    """Lint the message's header; ``dkim_domain`` is ``[dkim] domain``, "" when DKIM is off."""
    fields = header_fields(message)
    found: list[Finding] = []

    sender = _one(fields, "From", found)
    from_domain = ""
    if sender is not None:
        addresses = [a for _, a in getaddresses([sender])]
        if len(addresses) != 1 or not _ADDRESS.fullmatch(addresses[0]):
            found.append(error(CHECK, f"From must hold exactly one valid address: {sender!r}", "From"))
        else:
            from_domain = domain_of(sender)

    reply_to = _one(fields, "Reply-To", found, required=False)
    if reply_to is None and not any(n.lower() == "reply-to" for n, _ in fields):
        found.append(info(CHECK, "no Reply-To: replies go to the From address", "Reply-To"))
    elif reply_to is not None:
        addresses = [a for _, a in getaddresses([reply_to])]
        if not addresses or not all(_ADDRESS.fullmatch(a) for a in addresses):
            found.append(error(CHECK, f"Reply-To is not a valid address list: {reply_to!r}", "Reply-To"))

    subject = _one(fields, "Subject", found)
    if subject is not None and not subject.strip():
        found.append(error(CHECK, "the Subject is empty", "Subject"))

    sent = _one(fields, "Date", found)
    if sent is not None:
        try:
            moment = parsedate_to_datetime(sent)
        except (TypeError, ValueError, IndexError):
            moment = None
        if moment is None or moment.tzinfo is None:
            found.append(error(CHECK, f"Date is not an RFC 5322 date with a zone: {sent!r}", "Date"))

    message_id = _one(fields, "Message-ID", found)
    if message_id is not None and not _MSG_ID.fullmatch(message_id):
        found.append(error(CHECK, f"Message-ID is not <left@right>: {message_id!r}", "Message-ID"))

    list_id = _one(fields, "List-Id", found)
    if list_id is not None and not _LIST_ID.fullmatch(list_id):
        found.append(
            error(CHECK, f"List-Id is not a name and a dotted <identifier> (RFC 2919): {list_id!r}", "List-Id")
        )

    _unsubscribe(fields, found)
    _dkim(fields, from_domain, dkim_domain, found)
    return found


def _unsubscribe(fields: list[tuple[str, str]], found: list[Finding]) -> None:
    value = _one(fields, "List-Unsubscribe", found)
    if value is not None:
        items = value.split(",")
        uris = [m[1] for item in items if (m := _URI_ITEM.fullmatch(item))]
        if len(uris) != len(items):
            found.append(
                error(CHECK, f"List-Unsubscribe must be <URI>s separated by commas: {value!r}", "List-Unsubscribe")
            )
        elif not any(u.lower().startswith("https://") for u in uris):
            found.append(
                error(
                    CHECK,
                    "List-Unsubscribe has no https URI: one-click unsubscribe (RFC 8058), which Gmail and "
                    "Yahoo require of bulk mail, needs one",
                    "List-Unsubscribe",
                )
            )
        if not any(u.lower().startswith("mailto:") for u in uris):
            found.append(info(CHECK, "List-Unsubscribe has no mailto: URI (some clients offer only that)"))
    post = _one(fields, "List-Unsubscribe-Post", found)
    if post is not None and post.strip() != ONE_CLICK:
        found.append(
            error(CHECK, f"List-Unsubscribe-Post must be exactly {ONE_CLICK!r}, not {post!r}", "List-Unsubscribe-Post")
        )


def _dkim(fields: list[tuple[str, str]], from_domain: str, dkim_domain: str, found: list[Finding]) -> None:
    signatures = [dkim_tags(v) for n, v in fields if n.lower() == "dkim-signature"]
    if not dkim_domain:
        found.append(
            warning(
                CHECK,
                "not signed: [dkim] is not set up, and Gmail's and Yahoo's bulk sender rules require a DKIM "
                "signature aligned with the From domain (`newsletter dkim keygen` starts it)",
                "DKIM-Signature",
            )
        )
        return
    if not signatures:
        found.append(error(CHECK, f"no DKIM-Signature although [dkim] signs for {dkim_domain}", "DKIM-Signature"))
        return
    for tags in signatures:
        domain = tags.get("d", "")
        if from_domain and not aligned(from_domain, domain):
            found.append(
                error(
                    CHECK,
                    f"the DKIM signature's d={domain or '(none)'} does not align with the From domain "
                    f"{from_domain}: DMARC will not count it",
                    "DKIM-Signature",
                )
            )
        signed = {h.lower() for h in tags.get("h", "").split(":")}
        unsigned = [h for h in ("from", "list-unsubscribe", "list-unsubscribe-post") if h not in signed]
        if unsigned:
            found.append(
                error(
                    CHECK,
                    f"the DKIM signature does not cover {', '.join(unsigned)} (RFC 8058 asks it to)",
                    "DKIM-Signature",
                )
            )
