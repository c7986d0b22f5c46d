"""Finding and reading tokenizer files: `tokenizer.json`, or a vocabulary + merges pair.

Pairs come in two dialects: HF openai-gpt (`vocab.json` + `merges.txt`, lowercase, `</w>` word ends)
and GPT-2 (`encoder.json` or `vocab.json` + `vocab.bpe` or `merges.txt`, byte-level). The dialect is
read from the vocabulary itself: `</w>` entries mean the `openai-gpt` style (transformers' pipeline
for those files, so ids match `OpenAIGPTTokenizer`), otherwise byte-level.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models

from ..errors import GptkitError
from .specials import APPEND_ORDER, UNK
from .styles import EOW, apply_style

VOCAB_NAMES = ("vocab.json", "encoder.json")
MERGES_NAMES = ("merges.txt", "vocab.bpe")


def resolve(path: str | Path, merges: str | Path | None = None) -> tuple[str, Path, Path | None]:
    """Classify what `path` points at: ("json", tokenizer.json, None) or ("pair", vocab, merges)."""
    path = Path(path)
    if not path.exists():
        raise GptkitError(f"{path}: no such tokenizer file or directory")
    if merges is not None:
        return "pair", path, Path(merges)
    if path.is_file():
        if path.name in VOCAB_NAMES:
            return "pair", path, _find_one(path.parent, MERGES_NAMES, path)
        return "json", path, None
    if (path / "tokenizer.json").is_file():
        return "json", path / "tokenizer.json", None
    vocab = _find_one(path, VOCAB_NAMES, path)
    return "pair", vocab, _find_one(path, MERGES_NAMES, path)


def _find_one(directory: Path, names: tuple[str, ...], asked: Path) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise GptkitError(f"{asked}: no tokenizer.json, and no {' or '.join(names)} in {directory}")


def read_tokenizer_json(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception subclasses
        raise GptkitError(f"{path}: not a valid tokenizer.json ({' '.join(str(e).split())[:200]})") from None


def read_pair(vocab_path: Path, merges_path: Path) -> tuple[Tokenizer, str]:
    """A BPE tokenizer from a vocabulary + merges pair, with the pipeline of its detected style."""
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GptkitError(f"{vocab_path}: not a readable JSON vocabulary ({e})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise GptkitError(f"{vocab_path}: expected a JSON object mapping token strings to integer ids")
    merges = _read_merges(merges_path)
    style = "openai-gpt" if any(k.endswith(EOW) for k in vocab) else "bytelevel"
    if style == "openai-gpt":
        # The BPE model needs <unk> inside its own vocabulary. Appending the task specials first, in
        # APPEND_ORDER, keeps the paper's ids (start 40478, delimiter 40479, extract 40480).
        for token in (*APPEND_ORDER, UNK):
            if token not in vocab:
                vocab[token] = max(vocab.values(), default=-1) + 1
        model = models.BPE(vocab, merges, unk_token=UNK, end_of_word_suffix=EOW)
    else:
        model = models.BPE(vocab, merges)
    tok = Tokenizer(model)
    apply_style(tok, style)
    return tok, style


def _read_merges(path: Path) -> list[tuple[str, str]]:
    merges = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line or (lineno == 1 and line.startswith("#version")):
                    continue
                parts = line.split(" ")
                if len(parts) != 2:
                    raise GptkitError(f"{path}:{lineno}: expected two symbols separated by one space, got {line[:80]!r}")
                merges.append((parts[0], parts[1]))
    except (OSError, UnicodeDecodeError) as e:
        raise GptkitError(f"{path}: cannot read merges ({e})") from None
    return merges


def recorded_style(directory: Path) -> str | None:
    """The `gpt1-original` style, if tokenizer_config.json beside a tokenizer.json records it: that
    pipeline runs in Python, so the tokenizers file alone cannot say it (other styles it can)."""
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    style = config.get("gptkit_style") if isinstance(config, dict) else None
    return style if style == "gpt1-original" else None
