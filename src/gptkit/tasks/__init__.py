"""Supervised fine-tuning on downstream tasks (SPEC sections 4-6): task files -> typed examples ->
the paper's input transformations -> batches; the task model and its objective; metrics; zero-shot
heuristics that use the pre-trained LM alone. A task type is one object (`tasktype.TaskType`); the
paper's four are registered by `builtin_types`, imported first so that every spec can find them."""

from . import builtin_types  # noqa: F401  (registers the four built-in task types)
from .batching import TaskBatch, collate, iterate_batches
from .examples import Example
from .metrics import accuracy, f1, matthews, pearson, spearman
from .model import TaskModel, TaskOutput, load_task_model, save_task_model
from .objective import FinetuneObjective, masked_lm_loss, task_loss
from .readers import Row, read_rows
from .spec import TaskSpec, parse_column_overrides
from .taskfile import learn_spec, load_examples, load_training_examples, parse_examples
from .tasktype import TaskType, register, task_type, task_type_names
from .transforms import EncodedExample, InputTransform, fit_parts

__all__ = [
    "EncodedExample",
    "Example",
    "FinetuneObjective",
    "InputTransform",
    "Row",
    "TaskBatch",
    "TaskModel",
    "TaskOutput",
    "TaskSpec",
    "TaskType",
    "accuracy",
    "collate",
    "f1",
    "fit_parts",
    "iterate_batches",
    "learn_spec",
    "load_examples",
    "load_task_model",
    "load_training_examples",
    "masked_lm_loss",
    "matthews",
    "parse_column_overrides",
    "parse_examples",
    "pearson",
    "read_rows",
    "register",
    "save_task_model",
    "spearman",
    "task_loss",
    "task_type",
    "task_type_names",
]
