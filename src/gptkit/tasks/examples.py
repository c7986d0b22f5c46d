"""Rows -> typed values: the text of a field, a label as a canonical key, the label set of a file.

Every check names the file, the line and the field, so a bad row is one line of error."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..errors import GptkitError
from .readers import Row, is_valid_text


@dataclass(frozen=True)
class Example:
    """One labelled (or unlabelled) input.

    texts: the text fields in the order the task type's input transformation reads them, e.g.
        (text,) for classification, (a, b) for a pair, (context, question) for multiple choice.
    choices: the candidate answers (multiple choice only).
    label: class index, real value (regression), or right-answer index; None when the file has none.
    """

    texts: tuple[str, ...]
    label: int | float | None
    where: str
    choices: tuple[str, ...] = ()


def text_of(row: Row, columns: list[str], name: str, *, allow_empty: bool = False) -> str:
    """The field `name`, read from `columns` (several are joined with a space)."""
    parts = []
    for c in columns:
        value = row.fields.get(c)
        if value is None:
            value = ""
        if not isinstance(value, str):
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            else:
                raise GptkitError(f"{row.where()}: field {c!r} ({name}) must be text, got {type(value).__name__}")
        if value.strip():
            parts.append(value.strip())
    text = " ".join(parts)
    if not is_valid_text(text):
        raise GptkitError(f"{row.where()}: field {'+'.join(columns)!r} ({name}) holds invalid Unicode (a lone surrogate)")
    if not text and not allow_empty:
        raise GptkitError(f"{row.where()}: empty text in field {'+'.join(columns)!r} ({name})")
    return text


def label_key(value: Any) -> str | None:
    """A label as a canonical string, so 1 (JSON), "1" (CSV) and 1.0 name the same class."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def as_float(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def sort_labels(keys: set[str]) -> list[str]:
    """Numeric labels in numeric order (so "10" follows "9"), otherwise alphabetical: stable across runs."""
    if all(re.fullmatch(r"-?\d+", k) for k in keys):
        return sorted(keys, key=Decimal)  # exact at any length (int() refuses over 4300 digits)
    return sorted(keys)


def row_label(row: Row, col: str) -> Any:
    """The raw label of a row: a number, text, a boolean or None; a list or object is an error."""
    value = row.fields.get(col)
    if isinstance(value, list | dict):
        raise GptkitError(f"{row.where()}: label in field {col!r} must be a number or text, got {type(value).__name__}")
    return value


def label_keys(rows: list[Row], col: str) -> set[str]:
    """The distinct labels of a file's label column; an empty one is an error naming its row."""
    keys = set()
    for row in rows:
        key = label_key(row_label(row, col))
        if key is None:
            raise GptkitError(f"{row.where()}: empty label in field {col!r}")
        keys.add(key)
    return keys


def class_or_value(row: Row, col: str, value: Any, labels: list[str] | None, regression: bool,
                   aliases: dict[str, str] | None = None) -> int | float:
    """A class index in `labels` (a label that is not a name may be an alias of one: a ClassLabel
    id), or a real value for a regression task."""
    key = label_key(value)
    if key is None:
        raise GptkitError(f"{row.where()}: empty label in field {col!r}")
    if regression:
        x = as_float(key)
        if x is None:
            raise GptkitError(f"{row.where()}: label {key!r} in field {col!r} is not a number")
        return x
    index = {name: i for i, name in enumerate(labels or [])}
    if key not in index:
        key = (aliases or {}).get(key, key)
    if key not in index:
        raise GptkitError(
            f"{row.where()}: label {key!r} in field {col!r} is not in the label set "
            f"{labels} learned from the training file"
        )
    return index[key]


def candidate_index(row: Row, col: str, value: Any, n: int, base: int) -> int:
    """Multiple choice: the right candidate's 0-based index, from a number (from `base`) or a letter."""
    key = label_key(value)
    if key is None:
        raise GptkitError(f"{row.where()}: empty label in field {col!r}")
    if re.fullmatch(r"[A-Z]", key) and n <= 26:
        index = ord(key) - ord("A")  # RACE's answer letters
    elif re.fullmatch(r"-?\d{1,9}", key):
        index = int(key) - base
    elif re.fullmatch(r"-?\d+", key):
        index = -1  # too long to be a candidate index: out of range
    else:
        raise GptkitError(f"{row.where()}: label {key!r} in field {col!r} is not a candidate index or letter")
    if not 0 <= index < n:
        raise GptkitError(
            f"{row.where()}: label {key!r} in field {col!r} is out of range for {n} candidates "
            f"(indices {base}..{base + n - 1})"
        )
    return index
