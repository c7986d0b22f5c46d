"""A task type is one object: its fields and default columns, its input transformation, the order
its sequences take in a batch, its head, its loss, its metrics and its prediction record.

Everything else in gptkit (reading files, batching, the task model, fine-tuning, evaluation,
prediction, `/v1/classify`) asks the spec's task type instead of testing its name. The four types
of the paper are in `builtin_types`; a new one is a subclass registered with `register`, and then
`finetune`, `evaluate`, `predict` and the CLI's `--task` accept it unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GptkitError
from ..interop.heads import sequence_classification
from ..model import ClassifierHead, GPTConfig
from . import glue
from . import metrics as M
from .columns import ColumnPicker, ResolvedColumns
from .examples import (
    Example,
    as_float,
    class_or_value,
    label_key,
    label_keys,
    row_label,
    sort_labels,
    text_of,
)
from .readers import Row

if TYPE_CHECKING:  # typing only: spec.py imports this module to validate a spec's task name
    from .batching import TaskBatch
    from .spec import TaskSpec
    from .transforms import InputTransform

LABEL_COLUMNS = ("label", "labels", "score")
CLASS_METRICS = ("accuracy", "f1", "matthews")
REGRESSION_METRICS = ("pearson", "spearman", "mse")


class TaskType:
    """The base: a task of text fields and one label, a class from a label set or a real value.

    A subclass names its fields and column candidates (`text_columns`) and its transformation
    (`encode`); the label handling, head, loss and metrics here fit any classification or
    regression task and are overridden where a type differs (multiple choice)."""

    name: ClassVar[str] = ""
    text_fields: ClassVar[tuple[str, ...]] = ()
    """The text fields, in the order their texts enter the input transformation."""
    optional_fields: ClassVar[frozenset[str]] = frozenset()
    """Text fields that may be empty (a multiple-choice question)."""
    extra_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that are not single texts (multiple choice's `choices`)."""
    label_columns: ClassVar[tuple[str, ...]] = LABEL_COLUMNS
    n_special: ClassVar[int] = 3
    """Task tokens the transformation adds (<s>, $, <e>); a sequence budget must leave room for text."""
    infer_regression: ClassVar[bool] = True
    """Numeric training labels with some not whole (STS-B's 0-5 scores) make a regression task."""

    @property
    def fields(self) -> tuple[str, ...]:
        return (*self.text_fields, *self.extra_fields, "label")

    # --- reading a file -------------------------------------------------------------------------

    def text_columns(self, pick: ColumnPicker) -> dict[str, list[str]]:
        """The columns of each non-label field in this file."""
        raise NotImplementedError

    def resolve(self, spec: TaskSpec, rows: list[Row], *, need_label: bool) -> ResolvedColumns:
        # A file in one of GLUE's layouts (recognised by its exact header) names its own columns;
        # the user's --column still wins.
        header = tuple(rows[0].fields)
        layout = glue.layout_columns(header, self.text_fields)
        if not layout and glue.layout_of(header) and not set(self.text_fields) & set(spec.columns):
            found = glue.layout_of(header)
            raise GptkitError(f"{rows[0].source}: this is GLUE's {found.name} layout ({len(found.texts)} text "
                              f"column(s): {', '.join(found.texts)}), which a {self.name} task does not read; read it "
                              f"as task type {found.task} (--glue {found.name}), or name the texts with --column")
        pick = ColumnPicker(rows, {**layout, **spec.columns})
        by_field = self.text_columns(pick)
        by_field["label"] = pick.label(self.label_columns, by_field, need_label)
        return ResolvedColumns(by_field)

    def learn(self, spec: TaskSpec, rows: list[Row], columns: ResolvedColumns) -> TaskSpec:
        """What a training file teaches the spec (a new spec; the given one is not changed): the
        sorted label set (a ClassLabel's names, in their id order), or regression when asked or
        inferred. A label set fixed in advance (a GLUE preset) is kept: `parse` holds the file to it."""
        if spec.labels is not None:
            return spec
        col = columns.by_field["label"][0]
        names = (rows[0].class_names or {}).get(col)
        if names and not spec.regression:
            ids = {str(i): name for i, name in enumerate(names)}
            return dataclasses.replace(spec, labels=list(names),
                                       label_aliases={} if set(ids) & set(names) else ids)
        keys = label_keys(rows, col)
        numbers = [as_float(k) for k in keys]
        regression = spec.regression
        if not regression and self.infer_regression and all(x is not None for x in numbers):
            regression = any(not float(x).is_integer() for x in numbers)
        if regression:
            bad = next((k for k, x in zip(keys, numbers) if x is None), None)
            if bad is not None:
                row = next(r for r in rows if label_key(r.fields.get(col)) == bad)
                raise GptkitError(f"{row.where()}: label {bad!r} in field {col!r} is not a number (regression task)")
            return dataclasses.replace(spec, regression=True, labels=None)
        if len(keys) < 2:
            raise GptkitError(f"{rows[0].source}: the label column {col!r} has only one value {sorted(keys)}; "
                              "a classifier needs at least two")
        return dataclasses.replace(spec, labels=sort_labels(keys))

    def texts(self, row: Row, columns: ResolvedColumns) -> tuple[str, ...]:
        return tuple(text_of(row, columns.by_field[f], f, allow_empty=f in self.optional_fields)
                     for f in self.text_fields)

    def example(self, spec: TaskSpec, row: Row, columns: ResolvedColumns) -> Example:
        label_cols = columns.by_field["label"]
        label = None
        if label_cols:
            label = class_or_value(row, label_cols[0], row_label(row, label_cols[0]), spec.labels, spec.regression,
                                   spec.label_aliases)
        return Example(self.texts(row, columns), label, row.where())

    def parse(self, spec: TaskSpec, rows: list[Row], *, need_label: bool) -> list[Example]:
        columns = self.resolve(spec, rows, need_label=need_label)
        return [self.example(spec, row, columns) for row in rows]

    # --- encoding and batching ------------------------------------------------------------------

    def encode(self, transform: InputTransform, example: Example) -> tuple[list[list[int]], bool]:
        """The example's token sequences (each ending in <e>) and whether any was truncated."""
        raise NotImplementedError

    def batch_sequences(self, sequences: list[list[list[int]]]) -> list[list[int]]:
        """The rows of a batch from each example's sequences (default: example by example)."""
        return [s for seqs in sequences for s in seqs]

    def choices_per_example(self, sequences: list[list[list[int]]]) -> int:
        return 1

    # --- the model ------------------------------------------------------------------------------

    def n_outputs(self, spec: TaskSpec) -> int:
        """Width of the head's output layer."""
        return 1 if spec.regression else len(spec.labels or [])

    def make_head(self, spec: TaskSpec, n_embd: int, pdrop: float, init_std: float) -> nn.Module:
        return ClassifierHead(n_embd, self.n_outputs(spec), pdrop, init_std)

    def logits(self, spec: TaskSpec, head: nn.Module, hidden: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        """(B, n_outputs) class scores, or (B,) values for regression."""
        out = head(hidden, batch.extract)
        return out.squeeze(-1) if spec.regression else out

    def loss(self, spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over classes; mean squared error for regression."""
        if spec.regression:
            return F.mse_loss(logits.float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def probabilities(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        """Class distribution; regression values are returned unchanged."""
        return logits if spec.regression else logits.float().softmax(dim=-1)

    def predictions(self, spec: TaskSpec, probs: np.ndarray) -> np.ndarray:
        return probs if spec.regression else probs.argmax(-1)

    def hf_head(self, spec: TaskSpec, head: nn.Module, config: GPTConfig,
                pad_id: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The head under transformers' names and config keys (`interop.heads`), or None where
        transformers has no equivalent (`hf_missing` says why)."""
        if type(head) is not ClassifierHead:
            return None
        return sequence_classification(head.linear.weight, config, labels=None if spec.regression else spec.labels,
                                       pad_id=pad_id)

    hf_missing: ClassVar[str] = "its head is not one of transformers' task heads"

    def label_dtype(self, spec: TaskSpec) -> torch.dtype:
        return torch.float32 if spec.regression else torch.long

    # --- results --------------------------------------------------------------------------------

    def metric_names(self, spec: TaskSpec) -> tuple[str, ...]:
        """Every metric the task reports (the spec's, when a preset fixed them); the first picks the
        best checkpoint by default."""
        if spec.metrics:
            return tuple(spec.metrics)
        return REGRESSION_METRICS if spec.regression else CLASS_METRICS

    def metrics(self, spec: TaskSpec, pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
        n_classes = len(spec.labels) if spec.labels else None
        return M.compute(self.metric_names(spec), pred, gold, n_classes=n_classes)

    def lower_is_better(self, metric: str) -> bool:
        return metric in ("loss", "mse")

    def gold(self, spec: TaskSpec, label: int | float) -> Any:
        """A label as the user's file wrote it."""
        return float(label) if spec.regression else spec.labels[int(label)]

    def record(self, spec: TaskSpec, pred: Any, prob: np.ndarray) -> dict[str, Any]:
        """`predict`'s fields for one example: the prediction and its probabilities."""
        if spec.regression:
            return {"prediction": float(pred)}
        return {"prediction": spec.labels[int(pred)], **{f"p_{n}": float(p) for n, p in zip(spec.labels, prob)}}

    def response(self, spec: TaskSpec, prob: np.ndarray) -> dict[str, Any]:
        """`/v1/classify`'s answer for one example."""
        if spec.regression:
            return {"value": float(prob)}
        return {"label": spec.labels[int(prob.argmax())], "probabilities": dict(zip(spec.labels, prob.tolist()))}


# --- the registry -------------------------------------------------------------------------------

_TYPES: dict[str, TaskType] = {}


def register(task_type: TaskType, *, replace: bool = False) -> TaskType:
    """Make a task type known to every command by its name."""
    if not task_type.name or not task_type.text_fields:
        raise GptkitError(f"{type(task_type).__name__}: a task type needs a name and its text fields")
    if task_type.name in _TYPES and not replace:
        raise GptkitError(f"task type {task_type.name!r} is already registered")
    _TYPES[task_type.name] = task_type
    return task_type


def unregister(name: str) -> None:
    _TYPES.pop(name, None)


def task_type(name: str) -> TaskType:
    try:
        return _TYPES[name]
    except KeyError:
        raise GptkitError(f"unknown task type {name!r}; choose one of {', '.join(_TYPES)}") from None


def task_type_names() -> tuple[str, ...]:
    return tuple(_TYPES)
