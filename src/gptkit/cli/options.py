"""Flags from the library's option declarations (`gptkit.options`): name, default, help, choices.

`add_options(parser, Config, names)` adds one flag per declared field; `build(Config, args, names)`
makes the config from the parsed flags, so every check runs in the library, before anything is
written. The flag that fills each field is remembered on the parsed arguments, so `main` can report
a library error about `TrainConfig.max_steps` as one about `--steps`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..options import OptionError, option_info

FLAGS_ATTR = "_option_flags"


def add_options(parser: argparse.ArgumentParser, cls: type, names: Iterable[str], *,
                defaults: Mapping[str, Any] | None = None, group: Any = None,
                flags: Mapping[str, str] | None = None) -> None:
    """Add `--flag` for each field in `names` of dataclass `cls` (into `group` when given: a
    mutually exclusive group). `defaults` overrides a recipe's defaults (e.g. pre-training's
    1000 steps); `flags` renames a flag for this command."""
    target = group if group is not None else parser
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    known: dict[tuple[str, str], str] = dict(parser.get_default(FLAGS_ATTR) or {})
    for name in names:
        f = fields[name]
        info = option_info(f)
        if info is None:
            raise TypeError(f"{cls.__name__}.{name} is not declared with gptkit.options.option")
        flag = "--" + ((flags or {}).get(name) or info.flag or name.replace("_", "-"))
        default = (defaults or {}).get(name, _declared_default(f))
        kind = _plain_type(hints[name])
        help_text = info.help.replace("%", "%%")
        if kind is bool and default is True:  # on by default: --flag / --no-flag
            target.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=True, help=help_text)
        elif kind is bool:
            target.add_argument(flag, dest=name, action="store_true", default=bool(default), help=help_text)
        else:
            required = default is dataclasses.MISSING
            choices = [c for c in info.choices if c is not None] if info.choices else None
            if not required and default is not None:
                help_text += f" (default: {default})"
            metavar = info.metavar or (None if choices else flag[2:].upper().replace("-", "_"))
            target.add_argument(flag, dest=name, type=kind, default=None if required else default,
                                required=required, choices=choices, metavar=metavar, help=help_text)
        known[(cls.__name__, name)] = flag
    parser.set_defaults(**{FLAGS_ATTR: known})


def build(cls: type, args: argparse.Namespace, names: Iterable[str], **fixed: Any) -> Any:
    """`cls(**{name: args.name for name in names}, **fixed)`: the library checks every value."""
    return cls(**{name: getattr(args, name) for name in names}, **fixed)


def flag_message(error: OptionError, args: argparse.Namespace) -> str:
    """The error in terms of the flag the user typed, when a flag filled the field."""
    flags = getattr(args, FLAGS_ATTR, None) or {}
    flag = flags.get((error.owner, error.field))
    if flag is None:
        return str(error)
    # other fields the reason mentions (`contradicts no_pretrain`) become their flags too
    reason = re.sub(r"\b[a-z]+(?:_[a-z]+)+\b",
                    lambda m: flags.get((error.owner, m.group(0)), m.group(0)), error.reason)
    return f"{flag} {reason}"


def _declared_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain_type(hint: Any) -> Any:
    """int | None -> int; Literal[...] -> str; Path, int, float, str, bool as they are."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return type(typing.get_args(hint)[0])
    if hint in (int, float, str, bool, Path):
        return hint
    raise TypeError(f"no command-line form for options of type {hint!r}")


def report_as_flags(parser: argparse.ArgumentParser, owner: str, fields: Iterable[str]) -> None:
    """A library check on `owner`.<field> is reported as the flag `--field` (for commands whose flags
    are plain arguments rather than `add_options` declarations)."""
    parser.set_defaults(**{FLAGS_ATTR: {(owner, f): "--" + f.replace("_", "-") for f in fields}})

class IntermixedParser(argparse.ArgumentParser):
    """A command's parser that takes its positionals and options in any order, and reports a left-over
    argument with its own usage.

    Plain argparse fills every positional it can from the first run of positionals: in `generate MODEL
    --max-new-tokens 3 "the king"` the optional PROMPT (nargs='?') is taken, empty, together with
    MODEL, and "the king" is left over. A left-over argument then went up to the top-level parser,
    whose error showed `gptkit`'s usage. `parse_known_intermixed_args` reads the options first and
    the positionals after them. Every command's parser is one (`build_parser`); a parser whose
    positional is a sub-command (`gptkit`, `gptkit tokenizer`, `gptkit inspect`) cannot be
    intermixed, and parses as plain argparse does."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions)
        if self._intermixing or nested:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            namespace, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras
