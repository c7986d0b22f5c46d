"""Look inside a GPT: attention probabilities, the causal mask, a traced forward pass, next-token odds.

Everything here reads the model's own modules and code paths (`output_attentions=True`, the model's
mask builder, its submodules called in the block's order), so what is shown is what the model computes.
Plotting (matplotlib) is imported only by the functions that draw.
"""

from gptkit.inspect.attention import attention_maps, causal_mask, padded_mask
from gptkit.inspect.labels import display_token, display_tokens
from gptkit.inspect.next_token import NextToken, next_token_distribution
from gptkit.inspect.trace import Trace, TraceStep, format_trace, trace_forward

__all__ = [
    "NextToken",
    "Trace",
    "TraceStep",
    "attention_maps",
    "causal_mask",
    "display_token",
    "display_tokens",
    "format_trace",
    "next_token_distribution",
    "padded_mask",
    "trace_forward",
]
