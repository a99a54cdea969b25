"""Pure text checks behind the framework's structural quality rules (no model).

Each function answers one question about a task's text and is cheap enough to
run on every round before any model is asked.

>>> leaked_ngram("the cache line is evicted before reuse", "so the cache line is evicted before reuse here", 6)
'the cache line is evicted before'
>>> starts_like_recall("Which layer is frozen?", ["what", "which", "how many"])
'which'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
# Words that may surround a number without making it more than a bare number.
NUMBER_FILLER = {"the", "answer", "is", "it", "value", "result", "equals", "equal", "to", "exactly", "n", "x"}
# Three or more decimals, scientific notation, or an explicit approximation
PRECISE_REAL = re.compile(r"\d+\.\d{3,}|\d(?:\.\d+)?\s*[eE][-+]?\d+|≈|\bapproximately\b")


def words(text: str) -> list[str]:
    """Lower-case word tokens, punctuation dropped.

    >>> words("Dropout (p=0.1) helps!")
    ['dropout', 'p', '0', '1', 'helps']
    """
    return _WORD.findall(text.lower())


def normalized(text: str) -> str:
    """Words joined by single spaces: the form text is compared in.

    >>> normalized("  The  Answer: 42. ")
    'the answer 42'
    """
    return " ".join(words(text))


def leaked_ngram(reference: str, visible: str, n: int) -> Optional[str]:
    """First run of ``n`` consecutive words of ``reference`` that also appears in ``visible``.

    Returns None when there is none (or when the reference is shorter than n words).
    """
    ref = words(reference)
    if n <= 0 or len(ref) < n:
        return None
    seen = visible_ngrams(visible, n)
    for i in range(len(ref) - n + 1):
        gram = tuple(ref[i : i + n])
        if gram in seen:
            return " ".join(gram)
    return None


def visible_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    toks = words(text)
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def contains_answer(reference: str, visible: str, min_chars: int = 12) -> bool:
    """Is the whole (normalised) reference answer written inside ``visible``?

    Short references ("yes", "O(n)") are skipped: they occur by chance.

    >>> contains_answer("It is O(n log n) time", "we know it is o(n log n) time overall")
    True
    """
    ref = normalized(reference)
    return len(ref) >= min_chars and f" {ref} " in f" {normalized(visible)} "


def starts_like_recall(question: str, openers: Iterable[str]) -> Optional[str]:
    """The recall opener ("what", "which", "how many") the question starts with, if any."""
    head = " ".join(words(question)[:3])
    for opener in openers:
        o = normalized(opener)
        if o and (head == o or head.startswith(o + " ")):
            return opener
    return None


def phrases_found(text: str, phrases: Iterable[str]) -> list[str]:
    """Which of ``phrases`` occur in ``text`` as whole words (case and spacing ignored).

    >>> phrases_found("Please explain why attention works", ["explain why", "explain how"])
    ['explain why']
    """
    padded = f" {normalized(text)} "
    return [p for p in phrases if normalized(p) and f" {normalized(p)} " in padded]


def sentence_count(text: str) -> int:
    """Rough count of sentences: terminal punctuation followed by space and a capital.

    Decimal points and abbreviations like "e.g. the" do not split.

    >>> sentence_count("The group is cyclic. It has order 7.")
    2
    >>> sentence_count("The value is 3.5 units, e.g. about half.")
    1
    """
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip())
    return len([p for p in parts if p])


# ----------------------------------------------------------------- checks of one field, named in a folder domain
def one_sentence(text: str, label: str) -> Optional[str]:
    """
    >>> one_sentence("The group is cyclic. It has order 7.", "reference answer")
    'reference answer is more than one sentence; the answer must be atomic, one sentence'
    """
    if "\n" in text.strip() or sentence_count(text) > 1:
        return f"{label} is more than one sentence; the answer must be atomic, one sentence"
    return None


def not_bare_integer(text: str, label: str) -> Optional[str]:
    """
    >>> not_bare_integer("The answer is 42", "answer") is None, not_bare_integer("n = 2^k", "answer") is None
    (False, True)
    """
    tokens = words(text)
    if tokens and all(t.isdigit() or t in NUMBER_FILLER for t in tokens) and any(t.isdigit() for t in tokens):
        return (f"{label} is a bare integer, which a solver can guess; ask for an object (an expression, a set, "
                "a condition, a structure) instead")
    return None


def exact_number(text: str, label: str) -> Optional[str]:
    """
    >>> exact_number("about 3.14159", "answer")
    'answer is a precision-sensitive real number; ask for an exact form'
    """
    if PRECISE_REAL.search(text):
        return f"{label} is a precision-sensitive real number; ask for an exact form"
    return None
