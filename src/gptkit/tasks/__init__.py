"""Supervised fine-tuning on downstream tasks (SPEC sections 4-6): task files -> typed examples ->
the paper's input transformations -> batches; the task model and its objective; metrics; zero-shot
heuristics that use the pre-trained LM alone."""

from .batching import TaskBatch, collate, iterate_batches
from .metrics import accuracy, f1, matthews, pearson, spearman, task_metrics
from .model import TaskModel, TaskOutput, load_task_model, save_task_model
from .objective import FinetuneObjective, masked_lm_loss, task_loss
from .readers import Row, read_rows
from .spec import TASK_TYPES, Example, TaskSpec, load_examples, parse_column_overrides, parse_examples
from .transforms import EncodedExample, InputTransform, fit_parts

__all__ = [
    "TASK_TYPES",
    "EncodedExample",
    "Example",
    "FinetuneObjective",
    "InputTransform",
    "Row",
    "TaskBatch",
    "TaskModel",
    "TaskOutput",
    "TaskSpec",
    "accuracy",
    "collate",
    "f1",
    "fit_parts",
    "iterate_batches",
    "load_examples",
    "load_task_model",
    "masked_lm_loss",
    "matthews",
    "parse_column_overrides",
    "parse_examples",
    "pearson",
    "read_rows",
    "save_task_model",
    "spearman",
    "task_loss",
    "task_metrics",
]
