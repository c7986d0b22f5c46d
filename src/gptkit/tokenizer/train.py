"""Learning a BPE vocabulary from text files with the `tokenizers` trainer.

Text reaches the trainer as bounded pieces (gptkit.textio), so a file without newlines or a file larger
than memory costs time proportional to its size and memory proportional to one piece.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from ..errors import GptkitError
from ..textio import iter_file_pieces
from .specials import APPEND_ORDER, EOT, PAD, UNK
from .styles import STYLES, empty_tokenizer
from .tokenizer import GPTTokenizer
from .wordfinal import WordFinalMarker

log = logging.getLogger(__name__)

# Specials take the first ids of a trained vocabulary (the trainer places them there).
TRAINED_SPECIALS = (EOT, PAD, *[t for t in APPEND_ORDER if t not in (EOT, PAD)])


MAX_WORD_CHARS = 100
"""Longest run of non-space characters the trainer sees as one word. The trainer's work on a word
grows with the square of its length (every merge rescans it), so one 5 MB base64 or minified-JSON
"word" would stall training; longer runs are cut into pieces this long. Merges cannot span a cut,
which only matters for words of over 100 characters."""

_LONG_RUN = re.compile(rf"\S{{{MAX_WORD_CHARS + 1},}}")


def bound_words(text: str) -> str:
    """`text` with every whitespace-free run longer than MAX_WORD_CHARS cut by spaces (training only:
    encoding is linear and is never changed)."""
    if len(text) <= MAX_WORD_CHARS:
        return text
    return _LONG_RUN.sub(lambda m: " ".join(m.group(0)[i : i + MAX_WORD_CHARS]
                                            for i in range(0, len(m.group(0)), MAX_WORD_CHARS)), text)


def train_tokenizer(
    files: Iterable[str | Path],
    vocab_size: int,
    style: str = "gpt1",
    min_frequency: int = 2,
    show_progress: bool = False,
    limit_alphabet: int | None = None,
) -> GPTTokenizer:
    """Learn a `style` BPE of `vocab_size` ids (specials included) from text files (optionally .gz)."""
    paths = [Path(f) for f in files]
    if not paths:
        raise GptkitError("no training files given")
    for p in paths:
        if not p.is_file():
            raise GptkitError(f"{p}: no such file")

    def texts() -> Iterator[str]:
        for p in paths:
            for piece in iter_file_pieces(p):
                yield piece.text

    return train_from_texts(texts(), vocab_size, style, min_frequency, show_progress, limit_alphabet)


def train_from_texts(
    texts: Iterable[str],
    vocab_size: int,
    style: str = "gpt1",
    min_frequency: int = 2,
    show_progress: bool = False,
    limit_alphabet: int | None = None,
) -> GPTTokenizer:
    """Learn a BPE from an iterator of (bounded) text pieces; the same pieces give the same tokenizer in
    every process. `limit_alphabet` keeps that many of the most frequent base symbols (for `gpt1`, a
    character and its word-final form count as two)."""
    if style not in STYLES:
        raise GptkitError(f"unknown tokenizer style {style!r} (choose from {', '.join(STYLES)})")
    specials = list(TRAINED_SPECIALS) + ([UNK] if style == "gpt1" else [])
    alphabet = pre_tokenizers.ByteLevel.alphabet() if style == "bytelevel" else []
    floor = len(specials) + (len(alphabet) if alphabet else 1)
    if vocab_size < floor:
        what = f"the {len(specials)} special tokens" + (f" and the {len(alphabet)} byte symbols" if alphabet else " and at least one symbol")
        raise GptkitError(f"--vocab-size {vocab_size} is too small: {what} need at least {floor}")
    backend = empty_tokenizer(style)
    kwargs = {} if style == "gpt1" else {"initial_alphabet": alphabet}
    if limit_alphabet is not None:
        kwargs["limit_alphabet"] = limit_alphabet
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=show_progress,
        **kwargs,
    )
    seen = [0]

    def counted() -> Iterator[str]:
        for text in texts:
            seen[0] += len(text)
            yield bound_words(text)

    if style == "gpt1":
        # Not the trainer's own end_of_word_suffix, which numbers the `</w>` symbols in a hash map's
        # order: run to run, tied merges came out in a different order (tokenizer/wordfinal.py).
        marker = WordFinalMarker(backend)
        training = Tokenizer(models.BPE(unk_token=UNK))
        training.pre_tokenizer = marker.trainer_pre_tokenizer()
        training.train_from_iterator(marker.texts(counted()), trainer=trainer)
        backend = _unmarked(training, marker, style)
    else:
        backend.train_from_iterator(counted(), trainer=trainer)
    seen = seen[0]
    if seen == 0 or backend.get_vocab_size() <= len(specials):
        raise GptkitError("no training text: the inputs are empty")
    got = backend.get_vocab_size()
    if got > vocab_size:
        # The trainer never drops base symbols: every distinct character (and, for gpt1, its
        # word-final `</w>` form) is kept, so a small vocabulary can overflow.
        raise GptkitError(
            f"--vocab-size {vocab_size} is too small: the special tokens and the {got - len(specials)} base "
            f"symbols of this text need {got} (raise --vocab-size, or pass a smaller limit_alphabet)"
        )
    tok = GPTTokenizer(backend, style)
    log.info("trained %s tokenizer: %d ids (%d specials) from %d characters", style, tok.vocab_size, len(specials), seen)
    return tok


def _unmarked(training: Tokenizer, marker: WordFinalMarker, style: str) -> Tokenizer:
    """The style's tokenizer holding what `training` learned on marked text, in `</w>` form: ids and
    merge order as trained, the specials as the trainer added them."""
    trained = json.loads(training.to_str())
    vocab, merges = marker.unmark_model(trained["model"]["vocab"], trained["model"]["merges"])
    out = json.loads(empty_tokenizer(style).to_str())
    out["model"]["vocab"], out["model"]["merges"] = vocab, merges
    out["added_tokens"] = trained["added_tokens"]
    return Tokenizer.from_str(json.dumps(out))
