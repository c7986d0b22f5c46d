"""What a task is: its type, which columns hold its fields, its label set, its sequence budget.

The spec is learned from the training file (`taskfile.load_training_examples`: columns found,
labels seen) and saved as `task.json` next to the fine-tuned model, so evaluation and prediction read
new files exactly the same way. A spec is immutable: learning returns a new one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GptkitError
from ..textio import decode_utf8
from .metrics import METRICS
from .readers import parse_json
from .tasktype import TaskType, task_type


@dataclass(frozen=True)
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
    metrics: list[str] | None = None
    """The metrics reported (a GLUE preset's, as GLUE reports them); None: the task type's."""
    label_aliases: dict[str, str] = field(default_factory=dict)
    """Other spellings of a label in files -> its name: a ClassLabel's integer id, GLUE's `0`/`1`."""

    def __post_init__(self) -> None:
        fields = self.type.fields
        unknown = sorted(set(self.columns) - set(fields))
        if unknown:
            raise GptkitError(
                f"column override(s) for unknown field(s) {unknown}; a {self.task} task has {list(fields)}"
            )
        bad = sorted(set(self.metrics or []) - set(METRICS))
        if bad:
            raise GptkitError(f"unknown metric(s) {bad}; known: {', '.join(METRICS)}")
        stray = sorted(v for v in self.label_aliases.values() if v not in (self.labels or []))
        if stray:
            raise GptkitError(f"label alias(es) for {stray}, which are not in the label set {self.labels}")

    @property
    def type(self) -> TaskType:
        """The task type object (from the registry), which knows how to read, encode and score."""
        return task_type(self.task)

    @property
    def n_outputs(self) -> int:
        """Width of the head's output layer."""
        return self.type.n_outputs(self)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "task.json") -> TaskSpec:
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in data.items() if k != "training"}  # how it was trained: a record only
        unknown = sorted(set(data) - known)
        if unknown or "task" not in data:
            raise GptkitError(f"{source}: not a gptkit task spec (unknown fields {unknown})" if unknown
                              else f"{source}: missing field 'task'")
        try:
            return cls(**data)
        except GptkitError as e:
            raise GptkitError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> TaskSpec:
        path = Path(path)
        try:
            text = decode_utf8(path.read_bytes(), str(path), count_lines=True)
        except FileNotFoundError:
            raise GptkitError(f"{path}: no such file (is this a fine-tuned task model directory?)") from None
        data = parse_json(text, str(path))
        if not isinstance(data, dict):
            raise GptkitError(f"{path}: not a gptkit task spec (a JSON object expected)")
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
