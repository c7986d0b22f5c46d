"""Task files -> examples, through the spec's task type; the training file also teaches the spec
its label set (a new spec is returned: nothing is changed behind the caller's back)."""

from __future__ import annotations

from pathlib import Path

from .examples import Example
from .readers import Row, read_rows
from .spec import TaskSpec


def learn_spec(spec: TaskSpec, rows: list[Row]) -> TaskSpec:
    """The spec completed by a training file: labels (or regression), number of candidates."""
    kind = spec.type
    return kind.learn(spec, rows, kind.resolve(spec, rows, need_label=True))


def parse_examples(spec: TaskSpec, rows: list[Row], *, need_label: bool = True) -> list[Example]:
    """Rows -> examples, checking every text, label and candidate list; errors name file, line, field."""
    return spec.type.parse(spec, rows, need_label=need_label)


def load_examples(spec: TaskSpec, path: str | Path, *, need_label: bool = True) -> list[Example]:
    """A validation, test or prediction file, read as the (learned) spec says."""
    return parse_examples(spec, read_rows(path), need_label=need_label)


def load_training_examples(spec: TaskSpec, path: str | Path) -> tuple[TaskSpec, list[Example]]:
    """A training file: the spec it teaches, and its examples read with that spec."""
    rows = read_rows(path)
    learned = learn_spec(spec, rows)
    return learned, parse_examples(learned, rows)
