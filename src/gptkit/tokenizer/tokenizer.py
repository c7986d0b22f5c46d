"""GPTTokenizer: a `tokenizers.Tokenizer` plus the reserved special ids the rest of gptkit relies on."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from ..atomic import atomic_write_text
from . import files
from .specials import APPEND_ORDER, ATTRIBUTES, EOT, PAD, UNK
from .styles import EOW_STYLES, apply_style, check_restyle, detect_style

log = logging.getLogger(__name__)


class GPTTokenizer:
    """Encode/decode text with a BPE vocabulary whose task specials are always present.

    `eot_id` ends every document; `start_id`, `delim_id` and `extract_id` are the paper's task tokens
    (section 3.3); `pad_id` fills batches. Specials in the input text are recognised as such (as
    Hugging Face tokenizers do), so ids match `PreTrainedTokenizerFast` on the saved file.
    """

    eot_id: int
    pad_id: int
    start_id: int
    delim_id: int
    extract_id: int

    def __init__(self, backend: Tokenizer, style: str | None = None):
        self.backend = backend
        self.style = style or detect_style(backend)
        self._plain: Tokenizer | None = None  # a copy that reads special-token strings as plain text
        self._ensure_specials()
        self._original = None
        if self.style == "gpt1-original":
            from .original import pipeline

            self._original = pipeline()  # a clear GptkitError when ftfy or spaCy is missing
            # The Python pipeline hands over finished words: BPE them as they are, specials as text.
            self._words = Tokenizer.from_str(backend.to_str())
            self._words.normalizer = None
            self._words.pre_tokenizer = None
            self._words.encode_special_tokens = True

    # ---- loading and saving -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, merges: str | Path | None = None, style: str | None = None) -> GPTTokenizer:
        """From a tokenizer.json, a directory holding one, or a vocabulary + merges pair (see files.py).
        `style` reads the vocabulary through another pipeline of its family (e.g. `gpt1-original` for
        the released openai-gpt files); by default a pair of `</w>` files is read as transformers does
        (`openai-gpt`), and a tokenizer.json in the style recorded beside it or found in it."""
        kind, first, second = files.resolve(path, merges)
        if kind == "json":
            backend = files.read_tokenizer_json(first)
            found = files.recorded_style(first.parent) or detect_style(backend)
        else:
            backend, found = files.read_pair(first, second)
        if style is not None and style != found:
            check_restyle(found, style)
            if style != "gpt1-original":  # its tokenizer.json keeps the nearest expressible pipeline
                apply_style(backend, style)
            elif found == "openai-gpt":
                apply_style(backend, "gpt1")
            found = style
        return cls(backend, found)

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json plus the small files transformers' AutoTokenizer reads, atomically each."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "tokenizer.json", self.backend.to_str(pretty=True))
        specials = {"eos_token": EOT, "bos_token": EOT, "pad_token": PAD}
        if self.backend.token_to_id(UNK) is not None:
            specials["unk_token"] = UNK
        extra = [ATTRIBUTES[a] for a in ("start_id", "delim_id", "extract_id")]
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            # Decoding must give what backend.decode gives: no extra clean-up of spaces.
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
            "additional_special_tokens": extra,
            "gptkit_style": self.style,
            **specials,
        }
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(directory / "special_tokens_map.json",
                      json.dumps({**specials, "additional_special_tokens": extra}, indent=2) + "\n")

    # ---- the special tokens -------------------------------------------------------------------
    def _ensure_specials(self) -> None:
        """Register every reserved special; those absent from the vocabulary are appended at its end."""
        present = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        missing = [t for t in APPEND_ORDER if t not in present]
        if self.style in EOW_STYLES and self.backend.token_to_id(UNK) is not None and UNK not in present:
            missing.append(UNK)
        if missing:
            # A token already in the BPE vocabulary (GPT-2's <|endoftext|> at 50256) keeps its id.
            self.backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
            appended = [t for t in missing if t != UNK]
            if appended:
                log.debug("special tokens registered: %s", ", ".join(f"{t}={self.token_to_id(t)}" for t in appended))
        for attr, token in ATTRIBUTES.items():
            setattr(self, attr, self.backend.token_to_id(token))
        self.unk_id: int | None = self.backend.token_to_id(UNK) if self.style in EOW_STYLES else None

    @property
    def special_ids(self) -> dict[str, int]:
        return {token: getattr(self, attr) for attr, token in ATTRIBUTES.items()}

    def text_vocab_size(self) -> int:
        """1 + the largest id of a token that is not special (`<unk>` counts as special): the rows a
        model needs to read any text. A vocabulary loaded from the paper's files (40,478 entries) gets
        its specials appended after them, so its model has no rows for those, and needs none until
        one is used."""
        specials = {*self.special_ids.values(), self.unk_id}
        return 1 + max((i for i in self.backend.get_vocab(with_added_tokens=True).values() if i not in specials),
                       default=-1)

    # ---- encoding and decoding ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids in use, specials included: a model's vocab_size must be at least this."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Ids of `text`. With allow_special=False a special token's string in the text (say a corpus
        that mentions "<|endoftext|>") is encoded as ordinary text, never as the special id."""
        if self._original is not None:
            return [i for ids, _ in self._original_encodings(text, allow_special) for i in ids]
        return self._for(allow_special).encode(text, add_special_tokens=False).ids

    def _original_encodings(self, text: str, allow_special: bool) -> list[tuple[list[int], list[str]]]:
        """gpt1-original: (ids, tokens) per stretch of text, a special token's string standing alone."""
        return self._original_batch([text], allow_special)[0]

    def _original_batch(self, texts: list[str], allow_special: bool) -> list[list[tuple[list[int], list[str]]]]:
        # All plain stretches of all texts go through spaCy together (nlp.pipe is much faster than
        # one call per text), then each text is put back together in order.
        parts = [self._split_specials(text, allow_special) for text in texts]
        plain = [piece for text_parts in parts for piece, special in text_parts if special is None]
        words = iter(self._original.words_batch(plain))
        out = []
        for text_parts in parts:
            encodings = []
            for piece, special in text_parts:
                if special is not None:
                    encodings.append(([special], [piece]))
                elif w := next(words):
                    e = self._words.encode(w, is_pretokenized=True, add_special_tokens=False)
                    encodings.append((e.ids, e.tokens))
            out.append(encodings)
        return out

    def _split_specials(self, text: str, allow_special: bool) -> list[tuple[str, int | None]]:
        if not allow_special:
            return [(text, None)]
        specials = {t.content: i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}
        if not specials:
            return [(text, None)]
        pattern = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
        parts, at = [], 0
        for m in pattern.finditer(text):
            parts += [(text[at : m.start()], None), (m.group(0), specials[m.group(0)])]
            at = m.end()
        return [*parts, (text[at:], None)]

    def encode_with_starts(self, text: str) -> tuple[list[int], list[int]] | None:
        """Ids of `text` (as `encode`) and, per token, the index in `text` of the character its text
        starts at: the original text's offsets, whatever the normaliser changed (a server echoing a
        prompt reports them as OpenAI's `text_offset`)."""
        if self._original is not None:  # spaCy's words carry no offsets into the text
            return None
        encoding = self.backend.encode(text, add_special_tokens=False)
        return encoding.ids, [start for start, _ in encoding.offsets]

    def encode_batch(self, texts: list[str], *, allow_special: bool = True) -> list[list[int]]:
        """Many texts at once; the Rust side spreads them over threads."""
        if self._original is not None:
            return [[i for ids, _ in enc for i in ids] for enc in self._original_batch(list(texts), allow_special)]
        backend = self._for(allow_special)
        # encode_batch_fast (tokenizers >= 0.20) skips character offsets, which only ids' users never need.
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def _for(self, allow_special: bool) -> Tokenizer:
        if allow_special:
            return self.backend
        if self._plain is None:
            self._plain = Tokenizer.from_str(self.backend.to_str())
            self._plain.encode_special_tokens = True
        return self._plain

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)

    def token_to_id(self, s: str) -> int | None:
        return self.backend.token_to_id(s)

    def tokens(self, text: str) -> list[str]:
        """The token strings of `text` (for inspection)."""
        if self._original is not None:
            return [t for _, tokens in self._original_encodings(text, True) for t in tokens]
        return self.backend.encode(text, add_special_tokens=False).tokens

    def __repr__(self) -> str:
        return f"GPTTokenizer(style={self.style!r}, vocab_size={self.vocab_size})"
