"""``autodata show RUN_DIR DOCUMENT_ID [ROUND [STEP]] [--json]``: what a generate run's call sent, rendered again.

    autodata show runs/cs_agentic doc0                 # the document's rounds: status, reason, calls
    autodata show runs/cs_agentic doc0 2               # round 2's calls: step, role, template, size, tokens
    autodata show runs/cs_agentic doc0 2 qv            # the messages the quality verifier got (role: content)
    autodata show runs/cs_agentic doc0 2 judge/weak/1 --json

rounds.jsonl keeps each call's prompt as a reference (template, variant, hash; the document by id and hash), so
the messages are rendered again from the run's config.yaml, its corpus and the document's round rows
(autodata/generate/trajectory.py) and checked against the recorded hash before they are printed. Run it where
the run's paths (corpus.path, domain.variant, domain.template_dir) resolve. Exit 2, with the reason, for an
unknown document, round or step, or a prompt that no longer renders to what was sent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# --help of `autodata` lists this line
SUMMARY = ("autodata show RUN_DIR DOCUMENT_ID [ROUND [STEP]] [--json]: a generate run's rounds, calls, or the "
           "messages one call sent (rendered again, checked against its hash)")


def round_lines(rows: dict[int, dict[str, Any]]) -> list[str]:
    """One line per round of a document.

    >>> round_lines({1: {"status": "rejected", "reason": "too_easy", "calls": [{}, {}]}})
    ['round 1: rejected (too_easy), 2 calls']
    """
    lines = []
    for rnd, row in sorted(rows.items()):
        reason = f" ({row['reason']})" if row.get("reason") else ""
        lines.append(f"round {rnd}: {row.get('status')}{reason}, {len(row.get('calls', []))} calls")
    return lines


def call_lines(row: dict[str, Any]) -> list[str]:
    """One line per call of a round: step, role, template, prompt size, whether it sent the document, tokens.

    >>> call_lines({"calls": [{"step": "qv", "role": "quality_verifier", "prompt_tokens": 9, "completion_tokens": 2,
    ...     "prompt": {"template": "qv", "chars": 120, "document": {"id": "d"}}}]})[1].split()
    ['qv', 'quality_verifier', 'qv', '120', 'yes', '9', '2']
    """
    table = [("step", "role", "template", "chars", "document", "prompt_tok", "completion_tok")]
    for call in row.get("calls", []):
        ref = call.get("prompt") or {}
        table.append((call.get("step", "?"), call.get("role", "?"), ref.get("template", "?"),
                      str(ref.get("chars", "?")), "yes" if ref.get("document") else "no",
                      str(call.get("prompt_tokens", "")), str(call.get("completion_tokens", ""))))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]


def main(argv: list[str] | None = None) -> int:
    """The subcommand; returns the exit code: 0 shown, 2 refused (the message says why)."""
    parser = argparse.ArgumentParser(
        prog="autodata show",
        description="Show a stage=generate run's rounds of a document, a round's calls, or the messages one call "
                    "sent, rendered again from the run dir and checked against the hash the run recorded.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the generate run dir (holds rounds.jsonl, config.yaml)")
    parser.add_argument("document_id", metavar="DOCUMENT_ID", help="the document's id (documents.jsonl)")
    parser.add_argument("round", metavar="ROUND", nargs="?", type=int, help="the round; without it, list the rounds")
    parser.add_argument("step", metavar="STEP", nargs="?",
                        help="the call's step (challenger, qv/1, weak/0, judge/strong/2, feedback, ...); without "
                             "it, list the round's calls")
    parser.add_argument("--json", action="store_true", help="print the messages as JSON")
    args = parser.parse_args(argv)
    # Imported here: `autodata --help` reads SUMMARY without loading the domains
    from autodata.generate.trajectory import RunRenderer, TrajectoryError, document_rounds

    run_dir = Path(args.run_dir)
    try:
        if args.step is None:
            rows = document_rounds(run_dir, args.document_id)
            if not rows:
                raise TrajectoryError(f"document {args.document_id!r} has no row in {run_dir / 'rounds.jsonl'}")
            if args.round is None:
                print("\n".join(round_lines(rows)))
            elif args.round not in rows:
                raise TrajectoryError(f"document {args.document_id!r} has no round {args.round}; its rounds: "
                                      f"{', '.join(map(str, sorted(rows)))}")
            else:
                print("\n".join(call_lines(rows[args.round])))
            return 0
        messages = RunRenderer(run_dir).render(args.document_id, args.round, args.step)
    except ValueError as err:
        # TrajectoryError, and a domain or variant of the run's config that no longer builds (VariantError, ...)
        print(f"autodata show: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(messages, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(f"{m['role']}: {m['content']}" for m in messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
