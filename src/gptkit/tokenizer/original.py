"""The text pipeline GPT-1 was trained with, step by step, for the `gpt1-original` style.

The paper's released encoder prepared every text the same way before BPE: (1) ftfy's `fix_text`
(mojibake, curly quotes, ligatures, full-width forms, NFC); (2) a small standardisation, written here
from its published rules; (3) spaCy's English tokenizer; (4) each token lowercased; (5) BPE on each
token with `</w>` marking the word's end. Steps 1 and 3 need ftfy and spaCy (the `original` extra);
`spacy.blank("en")` is the English tokenizer alone, with no model to download.

The standardisation rules: the dash family (em dash, en dash, horizontal bar) becomes "-", the
ellipsis character becomes "...", the acute accent used as an apostrophe becomes "'"; a run of one of
the characters - ~ ! " ; ? + , ) ( \\ / * [ ] } { | _ is set apart by a space on each side; a newline
together with the whitespace around it becomes " \\n "; any other run of whitespace becomes one space;
the ends are stripped. One quirk of the released encoder is kept too: spaCy yields a newline followed
by a space as one token, and the encoder spelt that token as the plain newline.

One difference, deliberate: the released encoder looked up each BPE piece with a default of id 0, so
a character missing from its vocabulary silently became id 0 (which is "." there); here it becomes
`<unk>`, as in every other `</w>` style.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import GptkitError

# (1) Characters replaced one for one (or by three dots), before anything else.
REPLACEMENTS = {"\u2014": "-", "\u2013": "-", "\u2015": "-", "\u2026": "...", "\u00b4": "'"}
# (2) Each run of one of these characters becomes its own space-separated group.
SET_APART = "-~!\";?+,)(\\/*[]}{|_"
_RUN = re.compile("([" + re.escape(SET_APART) + r"])\1*")
_NEWLINE = re.compile(r"\s*\n\s*")
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than the newline

MISSING = ("the gpt1-original tokenizer style needs ftfy and spaCy (the text pipeline GPT-1 was "
           "trained with): pip install 'gptkit[original]'")


def standardize(text: str) -> str:
    """Step 2 of the pipeline (see the module docstring for the rules)."""
    for old, new in REPLACEMENTS.items():
        text = text.replace(old, new)
    text = _RUN.sub(lambda m: f" {m.group(0)} ", text)
    text = _NEWLINE.sub(" \n ", text)
    text = _SPACES.sub(" ", text)
    return text.strip()


class OriginalPipeline:
    """ftfy -> standardize -> spaCy English tokenizer -> lowercase: the words BPE then splits."""

    def __init__(self) -> None:
        try:
            import ftfy
            import spacy
        except ImportError:
            raise GptkitError(MISSING) from None
        self._fix = ftfy.fix_text
        self._nlp = spacy.blank("en")  # the English tokenizer rules only: no model, no download

    def words(self, text: str) -> list[str]:
        return self._to_words(self._nlp(standardize(self._fix(text))))

    def words_batch(self, texts: Iterable[str]) -> list[list[str]]:
        docs = self._nlp.pipe(standardize(self._fix(t)) for t in texts)
        return [self._to_words(doc) for doc in docs]

    @staticmethod
    def _to_words(doc) -> list[str]:
        # "\n " is one spaCy token; the released encoder spelt it as the newline alone.
        return ["\n" if token.text == "\n " else token.text.lower() for token in doc]


_pipeline: OriginalPipeline | None = None


def pipeline() -> OriginalPipeline:
    """One shared instance: building spaCy's tokenizer takes a moment."""
    global _pipeline
    if _pipeline is None:
        _pipeline = OriginalPipeline()
    return _pipeline
