"""Options declared once: a config dataclass field carries its default, its check and its help.

A library config (`TrainConfig`, `PretrainOptions`, `FinetuneConfig`) declares each field with
`option(...)`; `check_options(self)` in its `__post_init__` runs every declared check, and the CLI
builds its flags from the same declarations (`gptkit.cli.options`). So a default, a range or a list
of choices is written in exactly one place, and the error a bad value raises names the field
(`TrainConfig.max_steps`); the CLI, which knows which flag fills which field, translates that back
to the flag. Depends on nothing else in gptkit but the error type.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

from .errors import GptkitError


class OptionError(GptkitError):
    """A config field holds a value its declaration refuses; `owner.field` names it."""

    def __init__(self, owner: str, field: str, reason: str) -> None:
        super().__init__(f"{owner}.{field} {reason}")
        self.owner, self.field, self.reason = owner, field, reason


@dataclass(frozen=True)
class Check:
    """A predicate on a value and the phrase that completes "must be ..." when it fails."""

    test: Callable[[Any], bool]
    must: str

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


positive_int = Check(lambda v: _is_int(v) and v > 0, "a positive integer")
non_negative_int = Check(lambda v: _is_int(v) and v >= 0, "a non-negative integer")
integer = Check(_is_int, "an integer")
positive_real = Check(lambda v: _is_real(v) and v > 0, "a positive finite number")
non_negative_real = Check(lambda v: _is_real(v) and v >= 0, "a finite number >= 0")
fraction = Check(lambda v: _is_real(v) and 0 <= v < 1, "in [0, 1)")
boolean = Check(lambda v: isinstance(v, bool), "true or false")


def _usable_device(value: Any) -> bool:
    import torch  # here, not at the top: the options of `gptkit --help` need no torch

    if not isinstance(value, str):
        return False
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        return False
    if device.type == "cpu":
        return True
    if device.type == "cuda":  # named but absent would fail deep inside the first .to()
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    return False


device = Check(_usable_device, "'cpu', or 'cuda' / 'cuda:N' naming a GPU this machine has")
"""A torch device this machine can use (every `device` option; generation and serving check it too)."""


def optional(check: Check) -> Check:
    """`check`, or None."""
    return Check(lambda v: v is None or check(v), f"{check.must} or None")


@dataclass(frozen=True)
class OptionInfo:
    help: str
    check: Check | None = None
    choices: tuple[Any, ...] | None = None
    flag: str | None = None
    """The CLI flag when it is not the field name with dashes (e.g. `steps` for `max_steps`)."""
    metavar: str | None = None


def option(default: Any = MISSING, *, help: str, check: Check | None = None,
           choices: Sequence[Any] | None = None, flag: str | None = None, metavar: str | None = None,
           default_factory: Callable[[], Any] | Any = MISSING, compare: bool = True) -> Any:
    """A dataclass field with its option declaration in the field's metadata."""
    info = OptionInfo(help, check, tuple(choices) if choices is not None else None, flag, metavar)
    return dataclasses.field(default=default, default_factory=default_factory, compare=compare,
                             metadata={"option": info})


def like(cls: type, name: str, default: Any = MISSING, *, help: str | None = None) -> Any:
    """The field `name` of config `cls` declared again for another config: the same check, choices
    and help (the help and the default may be the recipe's own)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    info = option_info(f)
    if default is MISSING:
        default = f.default
    return dataclasses.field(default=default, metadata={"option": dataclasses.replace(info, help=help or info.help)})


def option_info(field: dataclasses.Field) -> OptionInfo | None:
    return field.metadata.get("option")


def check_options(obj: Any) -> None:
    """Run every declared check of a dataclass instance; the first failure is an OptionError."""
    owner = type(obj).__name__
    for f in dataclasses.fields(obj):
        info = option_info(f)
        if info is None:
            continue
        value = getattr(obj, f.name)
        if info.choices is not None and value not in info.choices:
            allowed = ", ".join(repr(c) for c in info.choices)
            raise OptionError(owner, f.name, f"must be one of {allowed}, got {value!r}")
        if info.check is not None and not info.check(value):
            raise OptionError(owner, f.name, f"must be {info.check.must}, got {value!r}")


def defaults_of(cls: type) -> dict[str, Any]:
    """Every declared default of a dataclass (fields without one are left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out
