"""Reproducible `</w>` BPE training with the `tokenizers` trainer: word-final characters as stand-ins.

Left to itself (`end_of_word_suffix="</w>"`), the trainer numbers its single characters in code point
order but gives each word-final symbol (`e</w>`, `s</w>`, ...) its id when it first meets it while
walking its word counts, a Rust hash map whose order changes from process to process. Merges of equal
count are taken in the order of their symbols' ids, so two runs on the same text ordered tied merges
differently (and, at the vocabulary limit, could keep different ones).

Here the trainer never builds a word-final symbol. The text reaches it normalised, split into words
exactly where the `gpt1` pre-tokeniser splits, with the last character of every word replaced by a
private-use stand-in (a word-final `e` becomes U+F0065), so that every base symbol is one character
and the trainer numbers them all in code point order: the plain characters, then the word-final ones.
A stand-in is a symbol of its own exactly as `e</w>` is, so the words, counts and merges are those of
the suffix trainer, with ties broken in that fixed order; the learned vocabulary and merges are then
renamed back (stand-in -> character + `</w>`). The marking runs on whole pieces of text in numpy,
under a second for the demo's 16M characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from tokenizers import Regex, Tokenizer, pre_tokenizers

from ..errors import GptkitError
from .styles import EOW

FINAL_OFFSET = 0xF0000
"""Plane 15: the stand-in of a word-final character c of the Basic Multilingual Plane is c + FINAL_OFFSET."""
SPARE_FINAL = range(0x100000, 0x108000)
"""Plane 16, first half: stand-ins handed out in order of appearance for word-final characters beyond
the BMP (emoji, rare CJK)."""
SPARE_PLAIN = range(0x108000, 0x10FFFE)
"""Plane 16, second half: non-final characters of the text that lie in the stand-in planes themselves
(private use), moved out of the way so that no character of the text is mistaken for a stand-in."""

_WORD, _SPACE, _PUNCT = 1, 2, 3


class WordFinalMarker:
    """Turns text into the trainer's input (see the module docstring) and the trainer's vocabulary back."""

    def __init__(self, backend: Tokenizer) -> None:
        self.normalizer, self.pre_tokenizer = backend.normalizer, backend.pre_tokenizer
        self.kind = np.zeros(0x110000, dtype=np.uint8)  # per code point: 0 not seen yet, else _WORD/_SPACE/_PUNCT
        self.spare: dict[tuple[int, bool], int] = {}  # (code point, word-final) -> its stand-in in plane 16
        self.reverse: dict[int, tuple[int, bool]] = {}
        self.taken = {True: 0, False: 0}  # stand-ins handed out from each pool
        self.seen: set[str] = set()  # the symbols the trainer has met

    def trainer_pre_tokenizer(self) -> pre_tokenizers.PreTokenizer:
        """Every word of the marked text ends at its (word-final) stand-in."""
        last = chr(SPARE_FINAL[-1])
        return pre_tokenizers.Split(Regex(f"[{chr(FINAL_OFFSET)}-{last}]"), behavior="merged_with_previous")

    def texts(self, texts: Iterable[str]) -> Iterator[str]:
        """The marked pieces, then one piece per character the text holds only at word ends: the suffix
        trainer also keeps every such character as a plain symbol (a one-symbol piece has no pairs)."""
        for text in texts:
            marked = self.mark(text)
            self.seen.update(marked)
            yield marked
        plain = {self._plain_symbol(ch) for ch in self.seen if self._is_final(ord(ch))}
        yield from sorted(plain - self.seen)

    def mark(self, text: str) -> str:
        text = self.normalizer.normalize_str(text) if self.normalizer is not None else text
        if not text:
            return text
        self._learn_kinds(text)
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        kind = self.kind[codes]
        word = kind == _WORD
        ends = np.ones_like(word)
        ends[:-1] = ~word[1:]  # the next character is a space or a punctuation mark, or there is none
        # The pre-tokeniser makes a run of one punctuation character one word (styles.PUNCTUATION_RUN):
        # a mark is word-final unless the same mark follows.
        same_next = np.zeros_like(word)
        same_next[:-1] = codes[1:] == codes[:-1]
        final = ((kind == _PUNCT) & ~same_next) | (word & ends)
        out = codes.copy()
        bmp_final = final & (codes < 0x10000)
        out[bmp_final] += FINAL_OFFSET
        for i in np.flatnonzero((final & ~bmp_final) | (codes >= FINAL_OFFSET)):  # rare: beyond the BMP
            out[i] = self._spare(int(codes[i]), bool(final[i]))
        return out[kind != _SPACE].astype("<u4").tobytes().decode("utf-32-le")

    def _learn_kinds(self, text: str) -> None:
        """Classify the characters not met before, by asking the pre-tokeniser itself: a space splits
        "a?a" into two words, a punctuation mark into three, any other character leaves one."""
        for ch in set(text):
            if self.kind[ord(ch)] == 0:
                n = len(self.pre_tokenizer.pre_tokenize_str(f"a{ch}a"))
                self.kind[ord(ch)] = _SPACE if n == 2 else _PUNCT if n == 3 else _WORD

    def _spare(self, code: int, final: bool) -> int:
        key = (code, final)
        if key not in self.spare:
            pool = SPARE_FINAL if final else SPARE_PLAIN
            taken = self.taken[final]
            if taken >= len(pool):
                raise GptkitError(f"tokenizer training: more than {len(pool)} distinct characters beyond the BMP")
            self.spare[key], self.reverse[pool[taken]] = pool[taken], key
            self.taken[final] = taken + 1
        return self.spare[key]

    @staticmethod
    def _is_final(code: int) -> bool:
        return FINAL_OFFSET <= code < SPARE_FINAL.stop

    def _plain_symbol(self, stand_in: str) -> str:
        """The trainer's symbol for the same character in a non-final position."""
        code = self._original(ord(stand_in))[0]
        return chr(self._spare(code, False)) if code >= FINAL_OFFSET else chr(code)

    def _original(self, code: int) -> tuple[int, bool]:
        """(character, word-final) that a symbol of the marked text stands for."""
        if code < FINAL_OFFSET:
            return code, False
        if code < SPARE_FINAL.start:
            return code - FINAL_OFFSET, True
        return self.reverse[code]

    def unmark(self, token: str) -> str:
        """A token of the trained vocabulary in `</w>` form."""
        out, final = [], False
        for ch in token:
            code, final = self._original(ord(ch))
            out.append(chr(code))
        return "".join(out) + (EOW if final else "")

    def unmark_model(self, vocab: dict[str, int], merges: list) -> tuple[dict[str, int], list]:
        """The trained vocabulary (ids kept) and merges (order kept) in `</w>` form."""
        new_vocab = {self.unmark(t): i for t, i in vocab.items()}
        if len(new_vocab) != len(vocab):
            raise GptkitError("tokenizer training: two trained tokens have the same `</w>` form")
        pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
        return new_vocab, [[self.unmark(a), self.unmark(b)] for a, b in pairs]
