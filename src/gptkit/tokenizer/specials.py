"""The reserved special tokens and the order in which they are added to a vocabulary.

GPT-1's fine-tuning appends its three task tokens right after the 40,478 BPE entries (start 40478,
delimiter 40479, extract 40480); appending missing specials in this order reproduces those ids when a
`</w>`-style vocabulary is loaded, and puts them right after `<|endoftext|>` (50256) for GPT-2 files.
"""

from __future__ import annotations

EOT = "<|endoftext|>"
PAD = "<pad>"
START = "_start_"
DELIM = "_delimiter_"
EXTRACT = "_classify_"
UNK = "<unk>"  # only the `gpt1` style has it: a byte-level vocabulary can spell anything

# Appended in this order to a loaded vocabulary that lacks them (see the module docstring).
APPEND_ORDER = (START, DELIM, EXTRACT, EOT, PAD)

# Attribute name on GPTTokenizer -> token string.
ATTRIBUTES = {"eot_id": EOT, "pad_id": PAD, "start_id": START, "delim_id": DELIM, "extract_id": EXTRACT}
