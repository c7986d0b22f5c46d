"""The GPT model: config, blocks, trunk, tied LM head, task heads, KV cache. Imports only torch."""

from .cache import KVCache
from .config import PRESETS, ConfigError, GPTConfig, preset
from .gpt import (
    GPT,
    Transformer,
    TrunkOutput,
    count_parameters,
    parameter_breakdown,
    training_flops_per_token,
)
from .heads import ClassifierHead, MultipleChoiceHead, SimilarityHead, gather_positions

__all__ = [
    "GPT",
    "PRESETS",
    "ClassifierHead",
    "ConfigError",
    "GPTConfig",
    "KVCache",
    "MultipleChoiceHead",
    "SimilarityHead",
    "Transformer",
    "TrunkOutput",
    "count_parameters",
    "gather_positions",
    "parameter_breakdown",
    "preset",
    "training_flops_per_token",
]
