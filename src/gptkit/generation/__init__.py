"""Generation on token ids (sampling, KV-cached decoding, sliding window) and a small text layer
(incremental detokenisation, stop strings) that works through a decode function it is given."""

from .engine import (
    Completion,
    Event,
    FinishEvent,
    GenerationConfig,
    TokenEvent,
    generate,
    stream_generate,
)
from .sampling import apply_repetition_penalty, choose_tokens, filter_top_k, filter_top_p
from .text import StopStrings, TextStream, token_pieces

__all__ = [
    "Completion",
    "Event",
    "FinishEvent",
    "GenerationConfig",
    "StopStrings",
    "TextStream",
    "TokenEvent",
    "apply_repetition_penalty",
    "choose_tokens",
    "filter_top_k",
    "filter_top_p",
    "generate",
    "stream_generate",
    "token_pieces",
]
