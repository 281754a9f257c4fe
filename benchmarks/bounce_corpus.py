"""How well ``newsletter.bounces.classify`` reads the real-world corpus in tests/data/bounces.

The test suite asserts the classifier is right on every sample; this prints the figures for
the record: per expected class, how many samples there are, how many were classified right
and the accuracy; how many expected recipients were found; and the time taken, both with
parsing and for ``classify`` alone, over the corpus and over a plain 2 KB automatic reply
(the commonest message in a bounce mailbox, and one that is no bounce at all). With
``--verbose`` it lists every mismatch, which is where to look when a new sample disagrees.

    python benchmarks/bounce_corpus.py [--verbose]
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from collections import Counter
from email import policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.bounces import Finding, Kind, classify

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "bounces"


def load_expected(corpus: Path = CORPUS) -> dict[str, dict[str, object]]:
    """The ground truth: expected.toml, keyed by path relative to the corpus folder."""
    with (corpus / "expected.toml").open("rb") as handle:
        return tomllib.load(handle)


def read(path: Path) -> Finding:
    """Parse one sample as the mailbox reader does and classify it."""
    with path.open("rb") as handle:
        message = BytesParser(policy=policy.default).parse(handle)
    return classify(message)  # type: ignore[arg-type]


def autoreply() -> bytes:
    """A plain 2 KB out-of-office reply to an edition, as a mailbox provider writes one."""
    body = (
        "Thank you for your message. I am out of the office until Monday 7 December with limited access to email.\n"
        "For anything urgent please contact the news desk on 020 7946 0000 or newsdesk@example.org.\n\n"
    ) * 9
    head = (
        "From: Ann Example <ann@example.org>\nTo: bounces+k3x9q2@news.example.com\n"
        "Subject: Automatic reply: Breakfast in red: Tuesday\nDate: Tue, 24 Nov 2026 06:31:00 +0000\n"
        "Message-ID: <auto.1@example.org>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
    )
    return (head + body).encode()


def classify_ms(messages: list[Message], rounds: int = 5) -> float:
    """Milliseconds ``classify`` takes per message, parsing excluded: the best of a few rounds."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for message in messages:
            classify(message)  # type: ignore[arg-type]
        best = min(best, (time.perf_counter() - started) / len(messages))
    return best * 1000


def main(argv: list[str] | None = None) -> int:
    """Print the accuracy table; exit 1 when any sample is misread, so a script can gate on it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="list each mismatch")
    args = parser.parse_args(argv)

    expected = load_expected()
    total: Counter[str] = Counter()
    right: Counter[str] = Counter()
    wanted_recipients = found_recipients = 0
    mismatches: list[str] = []
    started = time.perf_counter()
    for name, truth in sorted(expected.items()):
        finding = read(CORPUS / name)
        kind = str(truth["kind"])
        total[kind] += 1
        addresses = {failed.address for failed in finding.recipients}
        wanted = [str(a) for a in truth.get("recipients", [])]  # type: ignore[union-attr]
        missing = [a for a in wanted if a not in addresses]
        wanted_recipients += len(wanted)
        found_recipients += len(wanted) - len(missing)
        if finding.kind == kind:
            right[kind] += 1
        else:
            mismatches.append(f"{name}: expected {kind}, got {finding.kind} ({finding.diagnostic[:100]})")
        if missing:
            mismatches.append(f"{name}: recipients {missing} not among {sorted(addresses)}")
    elapsed = time.perf_counter() - started

    print(f"{'class':<10} {'samples':>8} {'right':>6} {'accuracy':>9}")
    for kind in Kind:
        if total[kind]:
            print(f"{kind.value:<10} {total[kind]:>8} {right[kind]:>6} {right[kind] / total[kind]:>9.1%}")
    samples, correct = sum(total.values()), sum(right.values())
    print(f"{'total':<10} {samples:>8} {correct:>6} {correct / samples:>9.1%}")
    share = found_recipients / wanted_recipients if wanted_recipients else 1.0
    print(f"recipients: {found_recipients} of {wanted_recipients} expected addresses found ({share:.1%})")
    print(f"time: {elapsed:.2f} s for {samples} messages ({elapsed / samples * 1000:.1f} ms each)")
    reader = BytesParser(policy=policy.default)
    corpus = [reader.parsebytes((CORPUS / name).read_bytes()) for name in sorted(expected)]
    replies = [reader.parsebytes(autoreply()) for _ in range(200)]
    print(
        f"classify alone: {classify_ms(corpus):.2f} ms per corpus message, "
        f"{classify_ms(replies):.2f} ms per 2 KB automatic reply"
    )
    if args.verbose:
        for line in mismatches:
            print("MISMATCH", line)
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
