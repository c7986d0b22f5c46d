"""The two text pipelines (normaliser, pre-tokeniser, BPE model options, decoder) a GPTTokenizer uses.

`gpt1` follows the paper's pipeline in spirit: a light text standardisation (Unicode compatibility
forms, dashes and ellipses unified, as the released text_utils.py did after ftfy), lowercase, split on
whitespace and punctuation, BPE whose word-final symbols end in `</w>`. Characters never seen in
training become `<unk>`.

`bytelevel` is GPT-2's: text is mapped to bytes first, so every string is representable (no unknown
token) and decoding gives back the exact input.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from .specials import UNK

STYLES = ("gpt1", "bytelevel")
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


def gpt1_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def bytelevel_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def empty_tokenizer(style: str) -> Tokenizer:
    """A tokenizer with the style's pipeline and an empty BPE model, ready for training."""
    if style == "gpt1":
        tok = Tokenizer(models.BPE(unk_token=UNK, end_of_word_suffix=EOW))
        tok.normalizer = gpt1_normalizer()
        tok.pre_tokenizer = gpt1_pre_tokenizer()
        tok.decoder = decoders.BPEDecoder(suffix=EOW)
    elif style == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = bytelevel_pre_tokenizer()
        tok.decoder = decoders.ByteLevel()
    else:
        raise ValueError(f"unknown tokenizer style {style!r} (choose from {', '.join(STYLES)})")
    return tok


def apply_style(tok: Tokenizer, style: str) -> None:
    """Give a tokenizer built from vocab/merges files the pipeline of its style."""
    template = empty_tokenizer(style)
    tok.normalizer = template.normalizer
    tok.pre_tokenizer = template.pre_tokenizer
    tok.decoder = template.decoder


def detect_style(tok: Tokenizer) -> str:
    """`gpt1`, `bytelevel`, or `custom` (a tokenizer.json from elsewhere with another pipeline)."""
    decoder = type(tok.decoder).__name__ if tok.decoder is not None else ""
    if decoder == "ByteLevel":
        return "bytelevel"
    if decoder == "BPEDecoder":
        return "gpt1"
    return "custom"
