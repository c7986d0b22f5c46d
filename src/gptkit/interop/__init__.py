"""Interchange with other formats (Hugging Face model directories); safe weight-file IO."""

from .hf import from_hf_state_dict, load_pretrained, save_pretrained, to_hf_state_dict

__all__ = ["from_hf_state_dict", "load_pretrained", "save_pretrained", "to_hf_state_dict"]
