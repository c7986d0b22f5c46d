"""The text pipelines (normaliser, pre-tokeniser, BPE model options, decoder) a GPTTokenizer uses.

`gpt1` follows the paper's pipeline in spirit: a light text standardisation (Unicode compatibility
forms, dashes and ellipses unified, as the released text_utils.py did after ftfy), lowercase, split on
whitespace and punctuation (a run of one punctuation character is one word), BPE whose word-final symbols end in `</w>`. Characters never seen in
training become `<unk>`. It needs nothing beyond `tokenizers`, and is what `gptkit tokenizer train`
makes by default.

`openai-gpt` is transformers' `OpenAIGPTTokenizer`: BERT's normaliser (control characters removed,
CJK characters spaced, lowercase with accents stripped: "naiveté" -> "naivete") and BERT's
pre-tokeniser, then the same `</w>` BPE. A `</w>` vocab.json + merges.txt pair (the released
`openai-gpt` files) loads in this style, so its ids equal transformers'.

`gpt1-original` is the exact pipeline GPT-1 was trained with (ftfy, the released standardisation,
spaCy's English tokenizer, lowercase; see original.py), on the same `</w>` BPE. It runs in Python and
needs the `original` extra; the tokenizer.json it saves carries the `gpt1` pipeline, the nearest one
a tokenizers file can express, for readers other than gptkit.

`bytelevel` is GPT-2's: text is mapped to bytes first, so every string is representable (no unknown
token) and decoding gives back the exact input.

The three `</w>` styles share one vocabulary format, so a vocabulary can be read in any of them.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from ..errors import GptkitError
from .specials import UNK

STYLES = ("gpt1", "bytelevel")  # the styles `gptkit tokenizer train` learns
EOW_STYLES = ("gpt1", "openai-gpt", "gpt1-original")  # `</w>` vocabularies, read in any of these
ALL_STYLES = (*EOW_STYLES, "bytelevel")
EOW = "</w>"


def gpt1_normalizer() -> normalizers.Normalizer:
    # NFKC folds ligatures, full-width forms and "…" -> "..."; the dash family becomes "-" and the
    # acute accent used as an apostrophe becomes "'", as in the released text standardisation.
    return normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.Replace(Regex("[—–―]"), "-"),
        normalizers.Replace("´", "'"),
        normalizers.Lowercase(),
    ])


PUNCTUATION_RUN = r"([!-/:-@\[-`{-~]|\p{P})\1*"
"""A run of ONE punctuation character (ASCII punctuation or any Unicode P* character): `--`, `!!!`,
`...` stay one word, as the released standardisation grouped them (`-+`, `!+`, ...; spaCy keeps `...`),
while different characters (`?!`) are separate words. Splitting every character instead turned the
typewriter dash `--` (7,500 times in Shakespeare) into two `-` words, and a small LM trained on that
learned that `-` follows `-`: its samples ran `- - - - -`."""


def gpt1_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                    pre_tokenizers.Split(Regex(PUNCTUATION_RUN), behavior="isolated")])


def bytelevel_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def empty_tokenizer(style: str) -> Tokenizer:
    """A tokenizer with the style's pipeline and an empty BPE model, ready for training."""
    if style in EOW_STYLES:
        tok = Tokenizer(models.BPE(unk_token=UNK, end_of_word_suffix=EOW))
        if style == "openai-gpt":
            # strip_accents follows lowercase when unset, as in transformers' tokenizer.
            tok.normalizer = normalizers.BertNormalizer(lowercase=True)
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        else:
            tok.normalizer = gpt1_normalizer()
            tok.pre_tokenizer = gpt1_pre_tokenizer()
        tok.decoder = decoders.BPEDecoder(suffix=EOW)
    elif style == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = bytelevel_pre_tokenizer()
        tok.decoder = decoders.ByteLevel()
    else:
        raise ValueError(f"unknown tokenizer style {style!r} (choose from {', '.join(ALL_STYLES)})")
    return tok


def apply_style(tok: Tokenizer, style: str) -> None:
    """Give a tokenizer built from vocab/merges files the pipeline of its style."""
    template = empty_tokenizer(style)
    tok.normalizer = template.normalizer
    tok.pre_tokenizer = template.pre_tokenizer
    tok.decoder = template.decoder


def check_restyle(current: str, wanted: str) -> None:
    """A vocabulary can change pipeline only within its family (`</w>` or byte-level)."""
    if wanted not in ALL_STYLES:
        raise GptkitError(f"unknown tokenizer style {wanted!r} (choose from {', '.join(ALL_STYLES)})")
    if (current in EOW_STYLES) != (wanted in EOW_STYLES) or current == "custom":
        raise GptkitError(f"a {current} vocabulary cannot be read in the {wanted} style "
                          f"(the `</w>` styles are {', '.join(EOW_STYLES)})")


def detect_style(tok: Tokenizer) -> str:
    """`gpt1`, `openai-gpt`, `bytelevel`, or `custom` (a tokenizer.json from elsewhere with another
    pipeline). `gpt1-original` cannot be told from the file: it is recorded beside it (see load)."""
    decoder = type(tok.decoder).__name__ if tok.decoder is not None else ""
    if decoder == "ByteLevel":
        return "bytelevel"
    if decoder == "BPEDecoder":
        return "openai-gpt" if type(tok.normalizer).__name__ == "BertNormalizer" else "gpt1"
    return "custom"
