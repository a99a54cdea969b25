"""A generated JSONL corpus for benchmarks/bench_paper_scale.py: documents that each need a known number of rounds.

    python benchmarks/make_corpus.py --out /tmp/corpus.jsonl --documents 1400 --doc-chars 1000

Each line is ``{"id": "doc-000001", "text": ...}`` (corpus=jsonl reads ``id`` and ``text``). The text opens with
``PAPERWORLD-DOC id=<id> rounds=<r>`` (the marker benchmarks/paper_world_server.py's challenger reads), then filler
prose up to ``doc_chars`` characters. r lies in 1..max_rounds, drawn with a fixed seed as 1 + Binomial(max_rounds -
1, p) with p set for the target mean, then nudged one document at a time until the rounds add up to
round(mean x documents): the corpus's mean is the paper's 6.59 rounds per accepted example to within 1/documents.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

PAPER_ROUNDS_PER_ACCEPTED = 6.59
WORDS = ("queue", "latency", "replica", "consensus", "cache", "shard", "scheduler", "throughput", "kernel", "page",
         "buffer", "lock", "quorum", "epoch", "gradient", "tensor", "batch", "index", "ledger", "partition", "vector",
         "compiler", "register", "branch", "packet", "router", "checksum", "snapshot", "token", "stream")


def draw_rounds(documents: int, mean: float = PAPER_ROUNDS_PER_ACCEPTED, max_rounds: int = 10,
                seed: int = 0) -> list[int]:
    """Rounds per document, each in 1..max_rounds, adding up to round(mean x documents).

    >>> r = draw_rounds(100)
    >>> sum(r), min(r) >= 1, max(r) <= 10
    (659, True, True)
    >>> draw_rounds(3, mean=1.0)
    [1, 1, 1]
    """
    if not 1 <= mean <= max_rounds:
        raise ValueError(f"mean rounds {mean} must lie in 1..max_rounds ({max_rounds})")
    rng = random.Random(seed)
    p = (mean - 1) / (max_rounds - 1) if max_rounds > 1 else 0.0
    rounds = [1 + sum(rng.random() < p for _ in range(max_rounds - 1)) for _ in range(documents)]
    target = round(mean * documents)
    while sum(rounds) != target:
        step = 1 if sum(rounds) < target else -1
        i = rng.randrange(documents)
        if 1 <= rounds[i] + step <= max_rounds:
            rounds[i] += step
    return rounds


def document_text(doc_id: str, rounds: int, chars: int, rng: random.Random) -> str:
    """The marker line, then lowercase filler sentences (no marker-like or instruction-like text) to ``chars``.

    >>> text = document_text("doc-1", 4, 300, random.Random(0))
    >>> text.splitlines()[0], len(text)
    ('PAPERWORLD-DOC id=doc-1 rounds=4', 300)
    """
    head = f"PAPERWORLD-DOC id={doc_id} rounds={rounds}\n"
    parts = [head]
    size = len(head)
    while size < chars:
        sentence = "the " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + ". "
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)[:max(chars, len(head) - 1)].rstrip("\n")


def make_corpus(path: Path, documents: int, doc_chars: int = 1000, mean: float = PAPER_ROUNDS_PER_ACCEPTED,
                max_rounds: int = 10, seed: int = 0) -> list[int]:
    """Write the corpus to ``path``; the rounds each document needs, in id order."""
    rounds = draw_rounds(documents, mean, max_rounds, seed)
    rng = random.Random(seed + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i, r in enumerate(rounds):
            doc_id = f"doc-{i:06d}"
            fh.write(json.dumps({"id": doc_id, "text": document_text(doc_id, r, doc_chars, rng)}) + "\n")
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--documents", type=int, default=1400)
    parser.add_argument("--doc-chars", type=int, default=1000)
    parser.add_argument("--mean-rounds", type=float, default=PAPER_ROUNDS_PER_ACCEPTED)
    parser.add_argument("--max-rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rounds = make_corpus(args.out, args.documents, args.doc_chars, args.mean_rounds, args.max_rounds, args.seed)
    print(f"{args.out}: {len(rounds)} documents, {sum(rounds) / len(rounds):.3f} rounds each on average")


if __name__ == "__main__":
    main()
