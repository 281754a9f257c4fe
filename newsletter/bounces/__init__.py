"""What a message in the bounce mailbox says: a bounce, a complaint, an automatic reply, or a person.

After the first SMTP hop every failure comes back by mail: delivery status notifications
(RFC 3464, and the many older formats that predate it), feedback-loop complaints (ARF,
RFC 5965) and the vacation notices that answer every edition. ``classify`` reads one such
message and says, as plain data, which readers it names and why; deciding what that does to
a reader is ``bounce_policy``'s job, and matching a return code to a delivery (with the
secret) is the mailbox reader's. Keeping this package pure (no I/O, no database, no config)
lets a corpus of real-world reports pin its behaviour down.

The mailbox is written to by strangers, so ``classify`` never raises and never takes long:
it looks at no more than ``MAX_PARTS`` MIME parts (iteratively, so a message nested a
hundred thousand deep costs no more than a flat one) and reads no more than ``MAX_TEXT``
characters of text. A message it cannot read is UNKNOWN, with the reason as its diagnostic.

Rules for the kind of a failed recipient, in ``classify_status``:

1. Text that blames the sender (a blocklist, spam or content, DMARC/SPF/DKIM, rate limits,
   relaying denied) makes it SENDER whatever the code says: "550 5.1.1 blocked by Spamhaus"
   is about our reputation, not the reader's mailbox. Greylisting is SOFT, checked first.
2. Any 4.x.x status is SOFT (the reader may be reachable tomorrow).
3. A specific code decides next: 5.1.1/5.1.2/5.1.3/5.1.6/5.1.10/5.2.1 are HARD;
   5.2.2/5.2.3/5.3.4 (full, too big) are SOFT; 5.7.x and 5.6.x are SENDER, unless the text
   plainly says the mailbox does not exist; 5.4.4 (no route to the domain) is HARD; 5.4.1 is
   HARD when it says the recipient was refused (as Office 365 does) and SOFT otherwise;
   other 5.4.x and 5.3.x are SOFT; 5.1.7/5.1.8 (the sender's address) are SENDER.
4. A generic code (5.0.0, 5.1.0, 5.2.0, 5.5.x, none) defers to the text: "user unknown"
   is HARD, "over quota" SOFT, "try again later" SOFT. A permanent failure that says
   nothing more is HARD, a temporary one SOFT.

Complaints are ARF reports (the reader from Original-Rcpt-To, else the returned original's
To), Outlook.com's feedback loop (the original attached, the reader in
X-HmXmrOriginalRecipient) and Apple Mail's unsubscribe button (``feedback_type``
"opt-out", the reader in From). An ARF ``auth-failure`` report is SENDER: it says how we
signed, not that anyone complained. A report naming nobody but saying why (the return code
may still say who) gives one ``Failed`` with address "".

The package reads in layers, each module depending only on those above it:

- ``findings``: the result types (``Kind``, ``Failed``, ``Finding``), no reading at all;
- ``words``: case-blind patterns for the rules, searched fast;
- ``views``: copies of a message's parts that parse each header field once;
- ``mime``: bounded reading of a stranger's message (parts, text, raw headers, addresses);
- ``reading``: the report's own text apart from the original it returns, and that
  original's references;
- ``status``: the rules above, from an RFC 3463 code and the words of a reply;
- ``envelope``: what the outer headers say (return codes, automatic or not, bounce or
  automatic reply by its subject and sender);
- ``freeform``: bounces in other formats (flufl.bounce's MTA detectors, X-Failed-Recipients,
  and the report's own words);
- ``reports``: RFC 3464 delivery status, RFC 8098 dispositions, ARF and other feedback loops;
- ``classifier``: ``classify``, which tries them in order of trust.

Each message is read once: every header field is parsed once, every part's text decoded
once, and flufl.bounce asked once, however many readers want them. Only the names below
are the interface; names without an underscore in the modules are shared inside the
package, not promised to anyone outside it.
"""

from newsletter.bounces.classifier import classify
from newsletter.bounces.findings import Failed, Finding, Kind
from newsletter.bounces.status import classify_status

__all__ = ["Failed", "Finding", "Kind", "classify", "classify_status"]
