"""Reading a JSON file that may be anything: every way it can be unreadable is one GptkitError
naming the file (not UTF-8, UTF-16 by its byte-order mark, invalid JSON with its line, a number too
long to convert, nesting too deep, the wrong top-level type). Depends on nothing else in gptkit but
the error type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import GptkitError


def read_json(path: str | Path, *, expect: type | None = dict) -> Any:
    """The parsed contents of `path`; with `expect`, its top-level value must be of that type."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise GptkitError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        hint = " (it looks like UTF-16: save it as UTF-8)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise GptkitError(f"{path}: not UTF-8: invalid byte at offset {e.start}{hint}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GptkitError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: "
                          f"{e.msg.removesuffix(' at')}") from None
    except RecursionError:
        raise GptkitError(f"{path}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise GptkitError(f"{path}: unreadable JSON value ({' '.join(str(e).split())[:120]})") from None
    if expect is not None and not isinstance(data, expect):
        raise GptkitError(f"{path}: expected a JSON {_kind(expect)}, found {_kind(type(data))}")
    return data


def field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str | Path) -> Any:
    """`data[key]`, which must be present and of `kind` (bool is not an int here)."""
    if key not in data:
        raise GptkitError(f"{source}: missing field {key!r}")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(_kind(k) for k in kinds)
        raise GptkitError(f"{source}: field {key!r} must be {names}, got {_short(value)}")
    return value


def _kind(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "an integer", float: "a number",
            bool: "true/false", type(None): "null"}.get(t, t.__name__)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."
