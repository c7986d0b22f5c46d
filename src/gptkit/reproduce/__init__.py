"""`gptkit reproduce`: the GPT paper's Table 5 and Figure 2 on the built-in and derived tasks (docs/reproduce.md)."""

from .commands import ReproduceInterrupted
from .pipeline import Reproduction
from .settings import PROFILES, ReproduceSettings, get_profile

__all__ = ["PROFILES", "ReproduceInterrupted", "ReproduceSettings", "Reproduction", "get_profile"]
