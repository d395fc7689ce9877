"""The conversation corpus through the offline planner: how often it gets people right.

    .venv/bin/python bench/conversation.py [--split heldout|dev] [--failures] [--only TEXT]

Runs every conversation of ``tests/data/conversations/*.txt`` through a real
`ConciergeSession` (real registry in a temporary home, real MCP servers on loopback; see
``tests/data/corpus.py``) and prints: accuracy per intent, accuracy on the held-out and the
development split, the share of right answers reached in the minimum number of messages,
wrong-target writes, other unexpected writes, and dead ends (six messages without reaching
the outcome). ``--failures`` shows each miss with its conversation.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("CONCIERGE_HOME", tempfile.mkdtemp(prefix="concierge-bench-"))
os.environ.setdefault("CONCIERGE_MASTER_KEY", "0123456789abcdef" * 4)

from tests.data.corpus import load, run_corpus  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", help="only this part of the corpus (a file name: dev, heldout, heldout2)")
    parser.add_argument("--failures", action="store_true", help="print every miss with its conversation")
    parser.add_argument("--only", help="only cases whose first message contains this text")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cases = [c for c in load() if (args.split is None or c.split == args.split)
             and (args.only is None or args.only.lower() in c.turns[0].lower())]
    report = anyio.run(run_corpus, cases)
    print(f"{len(report.outcomes)} conversations ({', '.join(f'{n} {s}' for s, n in sorted(report.splits().items()))}) "
          f"in {report.seconds:.1f} s\n")
    print(f"{'intent':<18} {'right':>7} {'total':>6} {'accuracy':>9}")
    for intent, (right, total) in report.by_intent().items():
        print(f"{intent:<18} {right:>7} {total:>6} {right / total:>8.1%}")
    print()
    for split in sorted(report.splits()):
        print(f"accuracy ({split}): {report.accuracy(split):.1%}")
    print(f"accuracy (all): {report.accuracy():.1%}")
    print(f"done in the minimum number of messages: {report.minimal_share():.1%} of the right ones")
    print(f"wrong-target writes: {len(report.wrong_target)}")
    print(f"other unexpected writes (proposed, then declined): "
          f"{len(report.unexpected_writes) - len(report.wrong_target)}")
    print(f"dead ends (6 messages without progress): {len(report.dead_ends)}")
    if args.failures:
        for outcome in report.failures + [o for o in report.outcomes if o.right and o.wrong_target]:
            flags = " ".join(f for f, on in (("WRONG-TARGET", outcome.wrong_target),
                                             ("DEAD-END", outcome.dead_end)) if on)
            print(f"\n--- {outcome.case.id} [{outcome.case.intent}] {flags} {outcome.why}")
            print(f"    expected: {outcome.case.expect}")
            for line in outcome.transcript:
                print("   ", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
