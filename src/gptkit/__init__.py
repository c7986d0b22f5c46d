"""gptkit: GPT as Radford et al. (2018) define it, from pre-training to fine-tuning to serving."""

from .model import GPT, GPTConfig, KVCache, preset

__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig", "KVCache", "__version__", "preset"]
