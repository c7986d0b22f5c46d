"""`gptkit demo`: fetch -> tokenizer -> shards -> pre-train -> fine-tune with and without pre-training
-> samples -> results table and plots, on the built-in data (see docs/demo.md)."""

from .pipeline import Demo, DemoInterrupted
from .settings import PROFILES, DemoSettings, get_profile

__all__ = ["PROFILES", "Demo", "DemoInterrupted", "DemoSettings", "get_profile"]
