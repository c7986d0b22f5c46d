"""Model configuration: one typed dataclass, named presets, validation at construction."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Activation = Literal["gelu", "relu"]
BlockOrder = Literal["post_ln", "pre_ln"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass(frozen=True)
class GPTConfig:
    """Shape and regularisation of a GPT. Defaults are the paper's 117M model (SPEC section 1)."""

    vocab_size: int = 40478
    """Number of token embeddings (the paper's BPE has 40,478; task tokens are added on top)."""
    n_ctx: int = 512
    """Context window: the number of learned position embeddings."""
    n_embd: int = 768
    """Width of the residual stream (d_model)."""
    n_layer: int = 12
    """Number of Transformer blocks."""
    n_head: int = 12
    """Attention heads per block; n_embd must divide evenly among them."""
    n_inner: int | None = None
    """Width of the feed-forward layer; None means 4 * n_embd (3072 in the paper)."""
    activation: Activation = "gelu"
    """'gelu' is the paper's tanh approximation; 'relu' is offered for explainer-style variants."""
    block_order: BlockOrder = "post_ln"
    """'post_ln' is GPT-1 (LayerNorm after each residual add, no final LayerNorm);
    'pre_ln' is the GPT-2 order (LayerNorm before each sublayer, plus a final LayerNorm)."""
    embd_pdrop: float = 0.1
    """Dropout on the summed token + position embeddings."""
    attn_pdrop: float = 0.1
    """Dropout on the attention probabilities."""
    resid_pdrop: float = 0.1
    """Dropout on each sublayer's output before the residual add."""
    layer_norm_epsilon: float = 1e-5
    """LayerNorm epsilon."""
    initializer_range: float = 0.02
    """Standard deviation of the N(0, std) initialisation of weights and embeddings."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Free-form metadata carried through save/load (e.g. task tokens); not used by the model."""

    def __post_init__(self) -> None:
        # Every check is type-safe: a config file may hold any JSON value in any field.
        for name in ("vocab_size", "n_ctx", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {_show(value)}")
        if self.n_inner is not None and (not _is_int(self.n_inner) or self.n_inner <= 0):
            raise ConfigError(f"GPTConfig.n_inner must be a positive integer or None, got {_show(self.n_inner)}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by GPTConfig.n_head ({self.n_head})"
            )
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value < 1.0:
                raise ConfigError(f"GPTConfig.{name} must be in [0, 1), got {_show(value)}")
        if not isinstance(self.activation, str) or self.activation not in ("gelu", "relu"):
            raise ConfigError(f"GPTConfig.activation must be 'gelu' or 'relu', got {_show(self.activation)}")
        if not isinstance(self.block_order, str) or self.block_order not in ("post_ln", "pre_ln"):
            raise ConfigError(f"GPTConfig.block_order must be 'post_ln' or 'pre_ln', got {_show(self.block_order)}")
        for name in ("layer_norm_epsilon", "initializer_range"):
            value = getattr(self, name)
            if not _is_real(value) or not value > 0:
                raise ConfigError(f"GPTConfig.{name} must be a finite number > 0, got {_show(value)}")
        if not isinstance(self.extra, dict):
            raise ConfigError(f"GPTConfig.extra must be an object, got {_show(self.extra)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown GPTConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> GPTConfig:
        """A JSON object of GPTConfig fields; any unreadable file is a ConfigError naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 (invalid byte at offset {e.start})") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg.removesuffix(' at')}") from None
        except RecursionError:
            raise ConfigError(f"{path}: JSON nested too deeply") from None
        except ValueError as e:  # an integer of more than 4300 digits
            raise ConfigError(f"{path}: unreadable JSON value ({' '.join(str(e).split())[:100]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of GPTConfig fields")
        try:
            return cls.from_dict(data, source=str(path))
        except ConfigError as e:
            raise ConfigError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, int) or v.bit_length() < 100 else f"an integer of {v.bit_length()} bits"
    return text if len(text) <= 60 else text[:57] + "..."


PRESETS: dict[str, GPTConfig] = {
    # The paper's model (SPEC section 1): 12 x 768, 12 heads, 3072 MLP, 512 positions, 40,478 tokens.
    "gpt1": GPTConfig(),
    # GPT-2 small's shape and block order, for users bringing GPT-2 checkpoints.
    "gpt2": GPTConfig(vocab_size=50257, n_ctx=1024, block_order="pre_ln"),
    # CPU-sized models: same architecture, smaller numbers. Vocabulary sizes suit a BPE trained here.
    "small": GPTConfig(vocab_size=8192, n_ctx=256, n_embd=384, n_layer=6, n_head=6),
    "mini": GPTConfig(vocab_size=4096, n_ctx=128, n_embd=192, n_layer=4, n_head=4),
    "tiny": GPTConfig(vocab_size=512, n_ctx=64, n_embd=64, n_layer=2, n_head=4),
}


def preset(name: str, **overrides: Any) -> GPTConfig:
    """The named preset, optionally with fields overridden."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
