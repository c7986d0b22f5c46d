"""Model configuration: one typed dataclass, named presets, validation at construction."""

from __future__ import annotations

import dataclasses
import json
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
        for name in ("vocab_size", "n_ctx", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ConfigError(f"GPTConfig.n_inner must be a positive integer or None, got {self.n_inner!r}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by GPTConfig.n_head ({self.n_head})"
            )
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ConfigError(f"GPTConfig.{name} must be in [0, 1), got {value!r}")
        if self.activation not in ("gelu", "relu"):
            raise ConfigError(f"GPTConfig.activation must be 'gelu' or 'relu', got {self.activation!r}")
        if self.block_order not in ("post_ln", "pre_ln"):
            raise ConfigError(f"GPTConfig.block_order must be 'post_ln' or 'pre_ln', got {self.block_order!r}")
        if not self.layer_norm_epsilon > 0:
            raise ConfigError(f"GPTConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        if not self.initializer_range > 0:
            raise ConfigError(f"GPTConfig.initializer_range must be > 0, got {self.initializer_range!r}")

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
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of GPTConfig fields")
        return cls.from_dict(data, source=str(path))


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
