"""The trunk a fine-tuning run starts from: pre-trained weights (all, or the first N blocks), or
random weights of a given shape; the tokenizer; fresh embedding rows for the task tokens."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import GptkitError
from ..interop.hf import read_config
from ..interop.loading import load_model_and_tokenizer, load_tokenizer
from ..model import GPT
from ..model import preset as make_preset
from ..options import OptionError
from ..training.checkpoint import MODEL_DIR
from .config import FinetuneConfig
from .model import TASK_FILE

log = logging.getLogger(__name__)


def resolve_model_dir(path: str | Path) -> Path:
    """A pre-training run directory -> its exported `model/`; a model directory -> itself."""
    p = Path(path)
    if (p / MODEL_DIR / "config.json").is_file():
        return p / MODEL_DIR
    if (p / "config.json").is_file():
        return p
    if not p.exists():
        raise GptkitError(f"{p}: no such directory")
    raise GptkitError(f"{p}: neither a model directory (config.json) nor a run directory with model/config.json")


def build_trunk(cfg: FinetuneConfig) -> tuple[GPT, Any, dict[str, Any]]:
    """The GPT (in training mode) and tokenizer for `cfg`, plus a note of where the weights came from.
    The RNG is seeded first: random weights, then the head made next, start the same on every run."""
    torch.manual_seed(cfg.seed)
    init_dir = resolve_model_dir(cfg.init) if cfg.init is not None else None
    tok_source = cfg.tokenizer or init_dir
    if tok_source is None:
        raise OptionError("FinetuneConfig", "tokenizer", "is needed with no_pretrain and a preset (there is no init "
                                                         "to take it from)")
    origin: dict[str, Any] = {"tokenizer": str(tok_source)}
    if cfg.no_pretrain:
        tok = load_tokenizer(tok_source)
        if init_dir is not None:
            config, _ = read_config(init_dir)
            origin["init"] = f"random weights, shape of {init_dir}"
        elif cfg.preset is not None:
            config = make_preset(cfg.preset, vocab_size=tok.vocab_size)
            origin["init"] = f"random weights, preset {cfg.preset}"
        else:
            raise OptionError("FinetuneConfig", "no_pretrain", "needs a preset (or an init to copy a model's shape)")
        gpt = GPT(config)
    else:
        if init_dir is None:
            raise OptionError("FinetuneConfig", "init", "is needed (a model or run directory), or no_pretrain with a "
                                                        "preset and a tokenizer")
        # no size check: a model smaller than the tokenizer gets rows for the new task tokens
        gpt, tok = load_model_and_tokenizer(init_dir, cfg.tokenizer, check=False)
        if cfg.tokenizer is not None:
            check_tokenizer_fits(tok, Path(cfg.tokenizer), gpt, init_dir)
        origin["init"] = str(init_dir)
        if cfg.fresh_task_tokens and not (init_dir / TASK_FILE).exists():
            origin["fresh_task_tokens"] = redraw_task_token_rows(gpt, tok, cfg.seed)
        if cfg.transfer_layers is not None:
            reinit_blocks(gpt, cfg.transfer_layers)
            origin["transfer_layers"] = cfg.transfer_layers
    if gpt.config.vocab_size < tok.vocab_size:
        # The task tokens: fresh N(0, 0.02) rows, as the paper's new embeddings.
        log.info("growing the token embedding %d -> %d for the task tokens", gpt.config.vocab_size, tok.vocab_size)
        gpt.resize_token_embeddings(tok.vocab_size)
    gpt.train()
    return gpt, tok, origin


def check_tokenizer_fits(tok: Any, tok_path: Path, gpt: GPT, init_dir: Path) -> None:
    """Refuse a `--tokenizer` that cannot be the pre-trained model's: one whose ordinary tokens (all but
    the reserved specials, which fine-tuning gives rows) run past the model's embedding, or, when the
    init directory holds its own tokenizer, one that encodes text otherwise. Either would read the
    pre-trained rows under another vocabulary, or encode every text to nothing, and fine-tune to a
    majority-class model without a word (a random model, no_pretrain, takes any tokenizer)."""
    n = gpt.config.vocab_size
    if tok.text_vocab_size() > n:
        raise GptkitError(f"{tok_path}: the tokenizer's vocabulary runs to id {tok.text_vocab_size() - 1} but the model in "
                          f"{init_dir} embeds {n} tokens (config.json vocab_size); only special tokens (the task "
                          f"tokens, <|endoftext|>, <pad>) may lie beyond it: not the model's tokenizer")
    try:
        own = load_tokenizer(init_dir)
    except GptkitError:
        return  # an HF directory that ships weights only: --tokenizer is how it gets one
    if _pipeline(tok) != _pipeline(own):
        differs = next((f"id {i} is {own.backend.id_to_token(i)!r} there, {tok.backend.id_to_token(i)!r} here"
                        for i in range(n) if own.backend.id_to_token(i) != tok.backend.id_to_token(i)),
                       "the same ids, but another normalizer, pre-tokenizer or merges")
        raise GptkitError(f"{tok_path}: not the tokenizer of {init_dir}, which holds its own ({differs}); "
                          f"fine-tune with the model's own tokenizer (leave out --tokenizer)")


def _pipeline(tok: Any) -> tuple[Any, ...]:
    """What decides a tokenizer's ids for a text: its style and the backend's normalizer, pre-tokenizer
    and model (vocabulary and merges), as the tokenizers library serialises them."""
    spec = json.loads(tok.backend.to_str())
    return tok.style, spec.get("normalizer"), spec.get("pre_tokenizer"), spec.get("model")


def redraw_task_token_rows(gpt: GPT, tok: Any, seed: int) -> list[int]:
    """Give the task tokens (start, delimiter, extract) that a language model's vocabulary already
    holds fresh N(0, initializer_range) rows, as the paper's new embeddings; returns their ids.

    A tokenizer gptkit trains reserves these ids before pre-training, but the shards never contain them
    (data/prepare.py encodes text with specials disallowed), so the LM never read them as inputs. Their
    rows still moved: with the head tied to the embedding, every step's softmax pushes the logits of
    tokens that never occur down, which drags all unused rows toward one shared direction (measured on
    the demo's LMs: the start, delimiter and extract rows at cosine 0.87-0.94 with the mean row and
    0.85 with each other, 1.2-1.4x a typical word's norm). Fine-tuning would start with the three
    nearly one vector. A task model's rows (init is a fine-tuned directory) were learned: the caller
    keeps them."""
    ids = [i for i in (tok.start_id, tok.delim_id, tok.extract_id) if i < gpt.config.vocab_size]
    # Its own generator: the head and the dropout masks drawn next see the same global stream as before.
    gpt.redraw_token_rows(ids, generator=torch.Generator().manual_seed(seed))
    if ids:
        log.info("task tokens %s: fresh N(0, %g) embedding rows (the language model never read them as inputs)",
                 ", ".join(map(str, ids)), gpt.config.initializer_range)
    return ids


def reinit_blocks(gpt: GPT, keep: int) -> None:
    """Figure 2's ablation: transfer the embeddings and the first `keep` blocks; the rest start afresh."""
    n = gpt.config.n_layer
    if not 0 <= keep <= n:
        raise OptionError("FinetuneConfig", "transfer_layers", f"is {keep}, but the model has {n} blocks (choose 0..{n})")
    for block in gpt.transformer.blocks[keep:]:
        block.apply(gpt._init_weights)
    if gpt.transformer.ln_f is not None and keep < n:
        gpt.transformer.ln_f.apply(gpt._init_weights)
