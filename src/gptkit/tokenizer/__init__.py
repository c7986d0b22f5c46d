"""BPE tokenizers (on the `tokenizers` library) with the reserved task specials of GPT fine-tuning."""

from .specials import DELIM, EOT, EXTRACT, PAD, START
from .styles import STYLES
from .tokenizer import GPTTokenizer
from .train import train_from_texts, train_tokenizer

__all__ = ["DELIM", "EOT", "EXTRACT", "PAD", "START", "STYLES", "GPTTokenizer", "train_from_texts", "train_tokenizer"]
