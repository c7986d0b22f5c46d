"""Learning-rate schedules as pure functions of the update index.

`lr_at(step)` is the learning rate of the update that takes the model from `step` to `step + 1`
updates (step counts from 0). Because the rate depends on nothing but the step, a resumed run needs
to store only the step to continue the schedule exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class Schedule(Protocol):
    def __call__(self, step: int) -> float: ...


@dataclass(frozen=True)
class WarmupCosine:
    """GPT-1 pre-training (SPEC section 3): linear warmup from 0 to `max_lr` over `warmup` updates,
    then cosine annealing to 0 at `total`; 0 afterwards."""

    max_lr: float
    warmup: int
    total: int

    def __call__(self, step: int) -> float:
        return _after_warmup(self.max_lr, self.warmup, self.total, step, lambda p: 0.5 * (1.0 + math.cos(math.pi * p)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": "warmup_cosine", **asdict(self)}


@dataclass(frozen=True)
class WarmupLinear:
    """GPT-1 fine-tuning (SPEC section 4): linear warmup from 0 over `warmup` updates, then linear
    decay to 0 at `total`."""

    max_lr: float
    warmup: int
    total: int

    def __call__(self, step: int) -> float:
        return _after_warmup(self.max_lr, self.warmup, self.total, step, lambda p: 1.0 - p)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "warmup_linear", **asdict(self)}


@dataclass(frozen=True)
class Constant:
    """A constant rate (handy in tests and small experiments)."""

    lr: float

    def __call__(self, step: int) -> float:
        return self.lr

    def to_dict(self) -> dict[str, Any]:
        return {"name": "constant", **asdict(self)}


def warmup_cosine(max_lr: float, warmup: int, total: int) -> WarmupCosine:
    _check(max_lr, warmup, total)
    return WarmupCosine(max_lr, warmup, total)


def warmup_linear(max_lr: float, warmup: int, total: int) -> WarmupLinear:
    _check(max_lr, warmup, total)
    return WarmupLinear(max_lr, warmup, total)


def constant(lr: float) -> Constant:
    _check(lr, 0, 1)
    return Constant(lr)


def _check(max_lr: float, warmup: int, total: int) -> None:
    from ..errors import GptkitError

    if not max_lr >= 0:
        raise GptkitError(f"learning rate must be >= 0, got {max_lr!r}")
    if warmup < 0 or total <= 0:
        raise GptkitError(f"schedule needs warmup >= 0 and total > 0, got warmup={warmup}, total={total}")


def _after_warmup(max_lr: float, warmup: int, total: int, step: int, decay) -> float:
    """Linear warmup from 0 over `warmup` updates, then max_lr * decay(progress), progress going 0 -> 1
    between the end of warmup and `total`; 0 from `total` on.

    Warmup update `step` (from 0) uses max_lr * (step + 1) / warmup: the ramp starts at 0 but no
    update is spent at learning rate 0 (the first is max_lr / warmup, the last of the warmup max_lr)."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return 0.0
    return max_lr * decay((step - warmup) / max(1, total - warmup))


def from_dict(saved: Any) -> Schedule | None:
    """The schedule a checkpoint's `to_dict()` describes; None when it names none of these (a
    library user's own schedule, saved as its repr) or is malformed."""
    makers = {"warmup_cosine": WarmupCosine, "warmup_linear": WarmupLinear, "constant": Constant}
    if not isinstance(saved, dict) or saved.get("name") not in makers:
        return None
    try:
        return makers[saved["name"]](**{k: v for k, v in saved.items() if k != "name"})
    except TypeError:
        return None
