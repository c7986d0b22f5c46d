"""Readable token labels for axes and tables.

BPE vocabularies encode word boundaries in ways that read badly on a plot: GPT-1's BPE ends each word
with `</w>`, byte-level BPE (GPT-2) starts a word with `Ġ` (a space byte) and writes a newline as `Ċ`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

VISIBLE_SPACE = "\u2423"  # "␣": a space you can see
_BYTE_LEVEL = {"Ġ": VISIBLE_SPACE, "Ċ": "\u21b5", "ĉ": "\u21e5"}  # space, newline "↵", tab "⇥"


def display_token(token: str | None) -> str:
    """One token as a short label: `</w>` dropped, byte-level space/newline/tab made visible."""
    if token is None:
        return "?"
    if token.endswith("</w>") and len(token) > len("</w>"):
        token = token[: -len("</w>")]
    return "".join(_BYTE_LEVEL.get(ch, ch) for ch in token) or VISIBLE_SPACE


def display_tokens(ids: Iterable[int], id_to_token: Callable[[int], str | None]) -> list[str]:
    """Labels for a sequence of ids, using the tokenizer's `id_to_token`."""
    return [display_token(id_to_token(int(i))) for i in ids]
