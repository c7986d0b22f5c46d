"""The knobs of `gptkit reproduce`, as named profiles: `default` (measured: 29.5 min of CPU time on one
thread including pre-training, 51.5 min wall on a shared 2-core machine; see docs/reproduce.md),
`quick` (measured 8 min of CPU time before bf16 fine-tuning, about 6 now), `test` (seconds, for the
test suite on fake archives).

Each profile names the demo profile whose data and tokenizer it pre-trains with when no `--init` is
given, with `demo_overrides` replacing some of its fields (the default keeps the 4 x 192 LM it was
budgeted on), and its own fine-tuning budget: how many training examples per task, how many seeds,
which tasks, which runs of Figure 2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..demo.settings import DemoSettings
from ..demo.settings import get_profile as get_demo_profile
from ..errors import GptkitError

# The tasks, arms and zero-shot heuristics of the reproduction (pipeline and report read them).
BUILTIN = {
    "sentiment": {"title": "movie-review sentiment", "type": "classification"},
    "topics": {"title": "Wikipedia topic", "type": "classification"},
}
TITLES = {**{k: v["title"] for k, v in BUILTIN.items()},
          "derived_continuation": "derived continuation (entailment-style)",
          "derived_same_article": "derived same-article (similarity-style)",
          "derived_next_sentence": "derived next sentence (4-way multiple choice)",
          "derived_word_order": "derived word order (acceptability-style)"}
ARMS = {
    "full": "full model (aux LM lambda {lm_coef})",
    "no_pretrain": "without pre-training",
    "no_aux": "without aux LM (lambda 0)",
}
ZEROSHOT = {
    "sentiment": {"title": "sentiment ('very' + label word)", "task": "sentiment", "chance": 0.5},
    "acceptability": {"title": "word order (mean log-prob, thresholded)", "task": "derived_word_order", "chance": 0.5},
    "multiple_choice": {"title": "next sentence (mean log-prob of each choice)", "task": "derived_next_sentence",
                        "chance": 0.25},
}

TABLE_TASKS = ("sentiment", "topics", "derived_continuation", "derived_same_article", "derived_next_sentence")


@dataclass(frozen=True)
class ReproduceSettings:
    profile: str
    demo_profile: str
    """The `gptkit demo` profile whose data, tokenizer and model are used to pre-train (no --init)."""
    demo_overrides: dict[str, Any] = field(default_factory=dict)
    """DemoSettings fields replaced for this reproduction's own pre-training (model shape, steps)."""
    tasks: tuple[str, ...] = TABLE_TASKS
    """Table 5's columns: the two built-in tasks and the three derived ones."""
    seeds: tuple[int, ...] = (1, 2)
    """Fine-tuning seeds of every Table 5 cell (head init, dropout, data order); the mean is reported."""
    train_limit: int = 800
    """Training examples per task (a seeded random subset, the same for every arm and seed). A run's cost
    is nearly proportional to it (measured, default model: 400 -> 800 examples took 1.9x the CPU time on
    the topic task, 1.7x on the multiple-choice one), and so is what it learns (topic task, full model,
    one seed: 45.7% test accuracy with 400, 61.2% with 800)."""
    val_limit: int = 200
    """Validation examples per task (picks the best checkpoint); the test splits are used whole."""
    epochs: float = 3.0
    batch_size: int = 16
    """Half the paper's 32: with a few hundred examples, 32 gives too few updates (measured on the quick
    profile, 500 topic examples: 34% test accuracy with batch 32, 47% with batch 8, same 3 epochs)."""
    lr: float = 5e-4
    """The demo's fine-tuning rate: one a small random model also learns with (both arms the same)."""
    lm_coef: float = 0.5
    """The full model's auxiliary LM weight lambda (paper: 0.5); the 'w/o aux LM' row uses 0."""
    max_len: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLE_TASKS, 64))
    """Token budget per sequence (per candidate for multiple choice), capped at the model's n_ctx. A pair of
    two lead sentences is often longer; the longest part is shortened first (gptkit.tasks.transforms)."""
    evals_per_epoch: int = 1
    transfer_tasks: tuple[str, ...] = ("topics", "derived_continuation")
    """Figure 2 left: tasks fine-tuned with 0 .. n_layer transferred blocks (first seed only)."""
    pretrain_checkpoints: int = 8
    """Checkpoints kept when pre-training here (one every 1/N of the run): Figure 2 right's points."""
    zeroshot_limit: int = 400
    """Examples per zero-shot heuristic (test split; the acceptability threshold on as many train ones)."""
    zeroshot_batch: int = 32

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def demo_settings(self) -> DemoSettings:
        """The demo profile this reproduction pre-trains with, `demo_overrides` applied."""
        return dataclasses.replace(get_demo_profile(self.demo_profile), **self.demo_overrides)


PROFILES: dict[str, ReproduceSettings] = {
    # The demo's data and tokenizer with its earlier, smaller LM (4 x 192, 600 steps): about 30 of
    # Table 5's and Figure 2's fine-tuning runs must fit the 45-minute budget, and the demo's current
    # 6 x 256 model would make each about 1.7x dearer.
    "default": ReproduceSettings(profile="default", demo_profile="default", demo_overrides={
        "model": {"n_ctx": 128, "n_embd": 192, "n_layer": 4, "n_head": 4, "block_order": "pre_ln"},
        "pretrain_steps": 600, "pretrain_warmup": 60,
        # the corpus its figures were measured on (the demo has since dropped Shakespeare for more opinion text)
        "pretrain_sources": ("shakespeare", "wikipedia", "reviews", "opinion"), "opinion_repeat": 3}),
    "quick": ReproduceSettings(
        profile="quick", demo_profile="quick", seeds=(1,), train_limit=500, val_limit=150,
        pretrain_checkpoints=8, zeroshot_limit=300,
    ),
    "test": ReproduceSettings(
        profile="test", demo_profile="test", seeds=(1,), train_limit=40, val_limit=20, epochs=1.0, batch_size=8,
        lr=1e-3, max_len=dict.fromkeys(TABLE_TASKS, 32), pretrain_checkpoints=3, zeroshot_limit=20,
        zeroshot_batch=8,
    ),
}


def get_profile(name: str) -> ReproduceSettings:
    if name not in PROFILES:
        raise GptkitError(f"unknown reproduce profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
