"""What a task is: its type, which columns hold its fields, its label set; and rows -> typed examples.

The spec is inferred from the training file (columns found, labels seen) and saved as `task.json`
next to the fine-tuned model, so evaluation and prediction read new files exactly the same way.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GptkitError
from .readers import Row

TASK_TYPES = ("classification", "entailment", "similarity", "multiple_choice")

# Column names of the common benchmarks, tried in order. Pair tasks are matched as pairs so that
# QNLI's (question, sentence) is not confused with SST-2's lone `sentence`.
TEXT_COLUMNS = ("text", "sentence")
PAIR_COLUMNS = {
    "entailment": (("premise", "hypothesis"), ("sentence1", "sentence2"), ("question", "sentence")),
    "similarity": (("sentence1", "sentence2"), ("question1", "question2"), ("text_a", "text_b")),
}
LABEL_COLUMNS = ("label", "labels", "score")
MC_CONTEXT_COLUMNS = ("context", "article", "story", "sent1", "ctx", "premise", "text")
MC_QUESTION_COLUMNS = ("question", "sent2")
MC_LIST_COLUMNS = ("choices", "options", "endings", "answers", "candidates")
MC_NUMBERED_PREFIXES = ("ending", "answer", "option", "choice", "candidate")
MC_LABEL_COLUMNS = ("label", "answer", "labels")

# The fields each task type has, in the order their texts enter the input transformation.
FIELDS = {
    "classification": ("text", "label"),
    "entailment": ("premise", "hypothesis", "label"),
    "similarity": ("sentence1", "sentence2", "label"),
    "multiple_choice": ("context", "question", "choices", "label"),
}


@dataclass
class Example:
    """One labelled (or unlabelled) input.

    texts: (text,) for classification; (a, b) for entailment and similarity; (context, question)
        for multiple choice, question possibly "".
    choices: the candidate answers (multiple choice only).
    label: class index, real value (regression), or right-answer index; None when the file has none.
    """

    texts: tuple[str, ...]
    label: int | float | None
    where: str
    choices: tuple[str, ...] = ()


@dataclass
class TaskSpec:
    """Everything needed to read a task file the same way at training and at prediction time."""

    task: str
    labels: list[str] | None = None
    """Class names (sorted, stable); None for regression and multiple choice."""
    regression: bool = False
    n_choices: int | None = None
    columns: dict[str, str] = field(default_factory=dict)
    """User overrides, field -> column name(s) (comma-separated for joined text or candidate columns)."""
    label_base: int = 0
    """Multiple choice: the index of the first candidate in the label column (Story Cloze uses 1)."""
    max_len: int | None = None
    """Sequence budget used in training (the model's n_ctx when None)."""
    metric: str | None = None
    """The validation metric the best checkpoint was chosen by."""

    def __post_init__(self) -> None:
        if self.task not in TASK_TYPES:
            raise GptkitError(f"unknown task type {self.task!r}; choose one of {', '.join(TASK_TYPES)}")
        unknown = sorted(set(self.columns) - set(FIELDS[self.task]))
        if unknown:
            raise GptkitError(
                f"column override(s) for unknown field(s) {unknown}; a {self.task} task has {list(FIELDS[self.task])}"
            )

    @property
    def n_outputs(self) -> int:
        """Width of the head's output layer."""
        if self.task == "multiple_choice" or self.regression:
            return 1
        return len(self.labels or [])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "task.json") -> TaskSpec:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in data.items() if k != "training"}  # how it was trained: a record only
        unknown = sorted(set(data) - known)
        if unknown or "task" not in data:
            raise GptkitError(f"{source}: not a gptkit task spec (unknown fields {unknown})" if unknown
                              else f"{source}: missing field 'task'")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TaskSpec:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GptkitError(f"{path}: no such file (is this a fine-tuned task model directory?)") from None
        except json.JSONDecodeError as e:
            raise GptkitError(f"{path}, line {e.lineno}: malformed JSON ({e.msg})") from None
        return cls.from_json(data, str(path))


def parse_column_overrides(items: list[str] | None) -> dict[str, str]:
    """`["text=review", "choices=e0,e1"]` -> {"text": "review", "choices": "e0,e1"}."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, column = item.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise GptkitError(f"--column {item!r}: expected FIELD=COLUMN, e.g. text=review")
        out[name.strip()] = column.strip()
    return out


# --- column resolution ------------------------------------------------------------------------------


@dataclass
class ResolvedColumns:
    """The concrete columns of one file for each field (several columns are joined or listed)."""

    by_field: dict[str, list[str]]
    choices_is_list: bool = False  # one column holding a JSON list, rather than one column per candidate


def _columns_of(rows: list[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows[:50]:
        for k in row.fields:
            seen.setdefault(k, None)
    return list(seen)


def _missing(rows: list[Row], what: str, candidates: tuple[str, ...] | list[str]) -> GptkitError:
    return GptkitError(
        f"{rows[0].source}: missing column for {what} (looked for {', '.join(candidates)}; "
        f"columns found: {', '.join(_columns_of(rows)) or 'none'}); name it with --column {what.split()[0]}=NAME"
    )


def resolve_columns(spec: TaskSpec, rows: list[Row], *, need_label: bool) -> ResolvedColumns:
    """Pick the columns for each field of `spec.task` in this file: overrides first, then the defaults.

    The label column is optional when `need_label` is False (prediction on unlabelled data)."""
    present = set(_columns_of(rows))
    over = spec.columns
    out: dict[str, list[str]] = {}

    def from_override(name: str) -> list[str] | None:
        if name not in over:
            return None
        cols = [c.strip() for c in over[name].split(",") if c.strip()]
        absent = [c for c in cols if c not in present]
        if absent:
            raise _missing(rows, f"{name} (--column {name}={over[name]})", absent)
        return cols

    def first_present(name: str, candidates: tuple[str, ...]) -> list[str] | None:
        given = from_override(name)
        if given is not None:
            return given
        for c in candidates:
            if c in present:
                return [c]
        return None

    task = spec.task
    if task == "classification":
        cols = first_present("text", TEXT_COLUMNS)
        if cols is None:
            raise _missing(rows, "text", TEXT_COLUMNS)
        out["text"] = cols
    elif task in ("entailment", "similarity"):
        a_name, b_name = FIELDS[task][:2]
        a, b = from_override(a_name), from_override(b_name)
        if a is None or b is None:
            for ca, cb in PAIR_COLUMNS[task]:
                if (a is not None or ca in present) and (b is not None or cb in present):
                    a, b = a or [ca], b or [cb]
                    break
        if a is None or b is None:
            pairs = [f"{ca}+{cb}" for ca, cb in PAIR_COLUMNS[task]]
            raise _missing(rows, f"{a_name if a is None else b_name} (a pair such as {' or '.join(pairs)})", pairs)
        out[a_name], out[b_name] = a, b
    else:
        context = first_present("context", MC_CONTEXT_COLUMNS)
        if context is None:
            raise _missing(rows, "context", MC_CONTEXT_COLUMNS)
        out["context"] = context
        question = first_present("question", MC_QUESTION_COLUMNS)
        out["question"] = question or []
        choices = from_override("choices")
        is_list = False
        if choices is None:
            for c in MC_LIST_COLUMNS:
                if c in present:
                    choices, is_list = [c], True
                    break
        if choices is None:
            for prefix in MC_NUMBERED_PREFIXES:
                numbered = _numbered_columns(present, prefix)
                if len(numbered) >= 2:
                    choices = numbered
                    break
        if choices is None:
            raise _missing(rows, "choices (a JSON list column, or ending0..N / answer1..N columns)",
                           list(MC_LIST_COLUMNS) + [f"{p}0..N" for p in MC_NUMBERED_PREFIXES])
        if len(choices) == 1:
            is_list = True
        out["choices"] = choices
        return _with_label(spec, rows, out, MC_LABEL_COLUMNS, need_label, from_override, present, is_list)
    return _with_label(spec, rows, out, LABEL_COLUMNS, need_label, from_override, present, False)


def _with_label(spec, rows, out, candidates, need_label, from_override, present, is_list) -> ResolvedColumns:
    label = from_override("label")
    if label is None:
        label = next(([c] for c in candidates if c in present and c not in sum(out.values(), [])), None)
    if label is None and need_label:
        raise _missing(rows, "label", candidates)
    out["label"] = label or []
    return ResolvedColumns(out, choices_is_list=is_list)


def _numbered_columns(present: set[str], prefix: str) -> list[str]:
    """`ending0, ending1, ...` or `answer1, answer2, ...`: consecutive numbers from 0 or 1."""
    for start in (0, 1):
        cols = []
        i = start
        while f"{prefix}{i}" in present:
            cols.append(f"{prefix}{i}")
            i += 1
        if cols:
            return cols
    return []


# --- rows -> examples -------------------------------------------------------------------------------


def _text(row: Row, columns: list[str], name: str, *, allow_empty: bool = False) -> str:
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


def _as_float(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _sort_labels(keys: set[str]) -> list[str]:
    """Numeric labels in numeric order (so "10" follows "9"), otherwise alphabetical: stable across runs."""
    if all(re.fullmatch(r"-?\d+", k) for k in keys):
        return sorted(keys, key=int)
    return sorted(keys)


def infer_labels(spec: TaskSpec, rows: list[Row], columns: ResolvedColumns) -> TaskSpec:
    """Fill `spec.labels` / `spec.regression` from a training file's label column.

    Regression when asked, or for classification/similarity when every label is a number and some
    are not whole (e.g. STS-B's 0-5 scores); otherwise the sorted set of labels seen."""
    if spec.task == "multiple_choice":
        return spec
    col = columns.by_field["label"][0]
    keys = set()
    for row in rows:
        key = label_key(row.fields.get(col))
        if key is None:
            raise GptkitError(f"{row.where()}: empty label in field {col!r}")
        keys.add(key)
    numbers = [_as_float(k) for k in keys]
    if not spec.regression and spec.task != "entailment" and all(x is not None for x in numbers):
        spec.regression = any(not float(x).is_integer() for x in numbers)
    if spec.regression:
        bad = next((k for k, x in zip(keys, numbers) if x is None), None)
        if bad is not None:
            row = next(r for r in rows if label_key(r.fields.get(col)) == bad)
            raise GptkitError(f"{row.where()}: label {bad!r} in field {col!r} is not a number (regression task)")
        spec.labels = None
    else:
        if len(keys) < 2:
            raise GptkitError(f"{rows[0].source}: the label column {col!r} has only one value {sorted(keys)}; "
                              "a classifier needs at least two")
        spec.labels = _sort_labels(keys)
    return spec


def _mc_label(row: Row, col: str, value: Any, n: int, base: int) -> int:
    key = label_key(value)
    if key is None:
        raise GptkitError(f"{row.where()}: empty label in field {col!r}")
    if re.fullmatch(r"[A-Z]", key) and n <= 26:
        index = ord(key) - ord("A")  # RACE's answer letters
    elif re.fullmatch(r"-?\d+", key):
        index = int(key) - base
    else:
        raise GptkitError(f"{row.where()}: label {key!r} in field {col!r} is not a candidate index or letter")
    if not 0 <= index < n:
        raise GptkitError(
            f"{row.where()}: label {key!r} in field {col!r} is out of range for {n} candidates "
            f"(indices {base}..{base + n - 1})"
        )
    return index


def _choices(row: Row, columns: ResolvedColumns) -> tuple[str, ...]:
    cols = columns.by_field["choices"]
    if columns.choices_is_list:
        value = row.fields.get(cols[0])
        if isinstance(value, str):
            try:
                value = json.loads(value)  # a JSON list inside a CSV cell
            except json.JSONDecodeError:
                raise GptkitError(f"{row.where()}: field {cols[0]!r} (choices) is not a JSON list") from None
        if not isinstance(value, list | tuple) or len(value) < 2:
            raise GptkitError(f"{row.where()}: field {cols[0]!r} (choices) must be a list of at least 2 answers")
        items = [str(v).strip() if v is not None else "" for v in value]
    else:
        items = [_text(row, [c], "choices", allow_empty=True) for c in cols]
    for i, item in enumerate(items):
        if not item:
            raise GptkitError(f"{row.where()}: empty text in candidate {i} of field {'+'.join(cols)!r} (choices)")
    return tuple(items)


def parse_examples(spec: TaskSpec, rows: list[Row], *, need_label: bool = True) -> list[Example]:
    """Rows -> examples, checking every text, label and candidate list; errors name file, line, field."""
    columns = resolve_columns(spec, rows, need_label=need_label)
    label_cols = columns.by_field["label"]
    label_col = label_cols[0] if label_cols else None
    index = {name: i for i, name in enumerate(spec.labels or [])}
    out: list[Example] = []
    for row in rows:
        choices: tuple[str, ...] = ()
        if spec.task == "classification":
            texts = (_text(row, columns.by_field["text"], "text"),)
        elif spec.task in ("entailment", "similarity"):
            a, b = FIELDS[spec.task][:2]
            texts = (_text(row, columns.by_field[a], a), _text(row, columns.by_field[b], b))
        else:
            texts = (
                _text(row, columns.by_field["context"], "context"),
                _text(row, columns.by_field["question"], "question", allow_empty=True),
            )
            choices = _choices(row, columns)
            if spec.n_choices is None:
                spec.n_choices = len(choices)
            elif len(choices) != spec.n_choices:
                raise GptkitError(
                    f"{row.where()}: {len(choices)} candidates, but this task has {spec.n_choices} per example"
                )
        label: int | float | None = None
        if label_col is not None:
            value = row.fields.get(label_col)
            if spec.task == "multiple_choice":
                label = _mc_label(row, label_col, value, len(choices), spec.label_base)
            else:
                key = label_key(value)
                if key is None:
                    raise GptkitError(f"{row.where()}: empty label in field {label_col!r}")
                if spec.regression:
                    x = _as_float(key)
                    if x is None:
                        raise GptkitError(f"{row.where()}: label {key!r} in field {label_col!r} is not a number")
                    label = x
                elif key not in index:
                    raise GptkitError(
                        f"{row.where()}: label {key!r} in field {label_col!r} is not in the label set "
                        f"{spec.labels} learned from the training file"
                    )
                else:
                    label = index[key]
        out.append(Example(texts, label, row.where(), choices))
    return out


def load_examples(
    spec: TaskSpec, path: str | Path, *, need_label: bool = True, infer: bool = False
) -> list[Example]:
    """Read a task file into examples; with `infer`, first learn the label set from it (training file)."""
    from .readers import read_rows

    rows = read_rows(path)
    if infer:
        infer_labels(spec, rows, resolve_columns(spec, rows, need_label=True))
    return parse_examples(spec, rows, need_label=need_label)
