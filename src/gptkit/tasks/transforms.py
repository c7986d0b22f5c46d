"""The paper's input transformations (section 3.3, Figure 1), with truncation that keeps the task tokens.

    classification    <s> text <e>
    entailment        <s> premise $ hypothesis <e>
    similarity        <s> A $ B <e>   and   <s> B $ A <e>      (both orders; states at <e> added)
    multiple choice   <s> context question $ answer_k <e>      (one sequence per candidate)

`<s>`, `$`, `<e>` are the tokenizer's `start_id`, `delim_id` and `extract_id`. The extract token is
always the last real token, so its position is `len(sequence) - 1`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import GptkitError
from .examples import Example
from .spec import TaskSpec

log = logging.getLogger(__name__)


class TaskTokenizer(Protocol):
    """What the transformations need from a tokenizer (gptkit.tokenizer.GPTTokenizer has it)."""

    start_id: int
    delim_id: int
    extract_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...


@dataclass
class EncodedExample:
    """Token sequences of one example, each ending in `<e>`.

    One sequence for classification/entailment, two (A$B, B$A) for similarity, K for multiple choice."""

    sequences: list[list[int]]
    label: int | float | None
    truncated: bool
    where: str = ""

    @property
    def width(self) -> int:
        """Its longest sequence: the width it pads a batch to (batches sort by it)."""
        return max((len(s) for s in self.sequences), default=0)


def fit_parts(lengths: Sequence[int], budget: int) -> list[int]:
    """Lengths to keep so the parts fit in `budget` tokens, shortening the longest part first.

    Longest-first keeps short parts (a hypothesis, a question, an answer) whole while a long one (a
    passage) gives way; it uses the whole budget, unlike cutting every part to a fixed share."""
    keep = list(lengths)
    excess = sum(keep) - budget
    while excess > 0:
        top = max(keep)
        n_top = sum(1 for k in keep if k == top)
        second = max((k for k in keep if k < top), default=0)
        # Lower every longest part together, at most down to the next length, or by what is needed.
        step = min(top - second, -(-excess // n_top))
        for i, k in enumerate(keep):
            if k == top and excess > 0:
                cut = min(step, excess)
                keep[i] -= cut
                excess -= cut
    return keep


def _cut(ids: list[int], n: int, *, keep_end: bool = False) -> list[int]:
    if n >= len(ids):
        return ids
    return ids[len(ids) - n:] if keep_end else ids[:n]


class InputTransform:
    """Turns examples of one task into token sequences for a context of at most `max_len` tokens."""

    def __init__(self, spec: TaskSpec, tokenizer: TaskTokenizer, max_len: int) -> None:
        self.kind = spec.type
        n_special = self.kind.n_special
        if max_len < n_special + 2:
            raise GptkitError(f"max_len {max_len} is too small for a {spec.task} input (needs at least {n_special + 2})")
        self.spec = spec
        self.tok = tokenizer
        self.max_len = max_len
        self.s, self.d, self.e = tokenizer.start_id, tokenizer.delim_id, tokenizer.extract_id

    def single(self, text: list[int]) -> tuple[list[int], bool]:
        """<s> text <e>"""
        (n,) = fit_parts([len(text)], self.max_len - 2)
        return [self.s, *text[:n], self.e], n < len(text)

    def pair(self, a: list[int], b: list[int]) -> tuple[list[int], bool]:
        """<s> a $ b <e>"""
        na, nb = fit_parts([len(a), len(b)], self.max_len - 3)
        return [self.s, *a[:na], self.d, *b[:nb], self.e], (na, nb) != (len(a), len(b))

    def choice(self, context: list[int], question: list[int], answer: list[int]) -> tuple[list[int], bool]:
        """<s> context question $ answer <e>; a long context loses its beginning, since the text just
        before the question and answer matters most for choosing the answer (a story's last lines)."""
        nc, nq, na = fit_parts([len(context), len(question), len(answer)], self.max_len - 3)
        seq = [self.s, *_cut(context, nc, keep_end=True), *question[:nq], self.d, *answer[:na], self.e]
        return seq, (nc, nq, na) != (len(context), len(question), len(answer))

    def encode(self, example: Example) -> EncodedExample:
        """The task type picks which of the transformations above its example goes through."""
        seqs, cut = self.kind.encode(self, example)
        return EncodedExample(seqs, example.label, cut, example.where)

    def encode_all(self, examples: Sequence[Example], *, name: str = "data") -> list[EncodedExample]:
        """Encode every example and log how many had to be truncated."""
        out = [self.encode(x) for x in examples]
        n_cut = sum(x.truncated for x in out)
        if n_cut:
            log.info("%s: %d of %d examples truncated to fit %d tokens", name, n_cut, len(out), self.max_len)
        return out


def count_truncated(encoded: Sequence[EncodedExample]) -> int:
    return sum(x.truncated for x in encoded)
