"""Keep held-out examples out of pre-training text: drop every document that shares a run of words with one.

Exact-match filtering is not enough for text from other sources: a user review can quote a critic's
sentence that is also a validation or test example of the sentiment task (measured: 40 of the 24,902
IMDB reviews share an 8-word run with 15 of the 2,117 held-out Rotten Tomatoes sentences, and 14 more
with one of the 1,760 held-out Wikipedia leads). Words are
lowercased letters and digits only, so punctuation, spacing and tokenisation differences do not hide a
match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NGRAM_WORDS = 8
"""Words in a shared run that counts as overlap (long enough that common phrases do not match)."""

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(words[i: i + n]) for i in range(len(words) - n + 1))


def drop_overlapping(documents: list[str], held_out: Iterable[str], n: int = NGRAM_WORDS) -> tuple[list[str], int]:
    """(the documents sharing no run of `n` words with any held-out text, how many were dropped).
    A held-out text shorter than `n` words only matches a document of exactly its words: as a run it
    would match every document that uses a common phrase ("a masterpiece")."""
    runs: set[tuple[str, ...]] = set()
    whole: set[tuple[str, ...]] = set()
    for text in held_out:
        words = _words(text)
        if len(words) >= n:
            runs.update(_ngrams(words, n))
        elif words:
            whole.add(tuple(words))
    kept = []
    for doc in documents:
        words = _words(doc)
        if tuple(words) not in whole and not any(g in runs for g in _ngrams(words, n)):
            kept.append(doc)
    return kept, len(documents) - len(kept)
