"""Fine-tuning as a library function (the CLI and the demo call it).

Fine-tuning runs THE training loop (`gptkit.training.train`) with the task objective, an epoch-based
batch source, the paper's warmup-linear schedule, and an evaluation callback that keeps the best
checkpoint by the validation metric. Nothing here is a second loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_json
from ..errors import GptkitError
from ..interop.hf import load_weights_into
from ..modeldir import export_dir
from ..options import OptionError
from ..training import (
    RunLock,
    TrainConfig,
    build_optimizer,
    check_run_kind,
    prepare_run_dir,
    rank_info,
    train,
    warmup_linear,
)
from ..training.checkpoint import TRAINING_FILES, read_checkpoint
from ..training.distributed import apply_parallelism
from ..training.ranks import is_sharded
from ..training.sharded import export_view
from .build import build_trunk
from .config import FinetuneConfig
from .epochs import EpochBatches
from .glue import TASKS as GLUE
from .inference import score, score_and_predict
from .model import TaskModel, load_head, load_task_model, write_task_model
from .objective import FinetuneObjective
from .spec import TaskSpec
from .taskfile import load_examples, load_training_examples
from .transforms import EncodedExample, InputTransform, count_truncated

log = logging.getLogger(__name__)


@dataclass
class TaskData:
    """A run's spec (learned from the training file) and its encoded splits."""

    spec: TaskSpec
    train: list[EncodedExample]
    val: list[EncodedExample] | None
    test: list[EncodedExample] | None

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in (("train", self.train), ("val", self.val), ("test", self.test))
                if split}

    def truncated(self) -> dict[str, int]:
        return {name: count_truncated(split) for name, split in (("train", self.train), ("val", self.val),
                                                                   ("test", self.test)) if split is not None}


def load_data(cfg: FinetuneConfig) -> tuple[TaskData, TaskModel, Any, dict[str, Any]]:
    """Read the task files (the spec learned from the training file), build the model, encode."""
    preset = GLUE[cfg.glue].spec_fields() if cfg.glue else {"regression": cfg.regression}
    spec = TaskSpec(cfg.task, columns=dict(cfg.columns), label_base=cfg.label_base, **preset)
    spec, train_x = load_training_examples(spec, cfg.train)
    val_x = load_examples(spec, cfg.val) if cfg.val is not None else None
    test_x = load_examples(spec, cfg.test) if cfg.test is not None else None
    gpt, tok, origin = build_trunk(cfg)
    n_ctx = gpt.config.n_ctx
    if cfg.max_len is not None and cfg.max_len > n_ctx:
        raise OptionError("FinetuneConfig", "max_len", f"{cfg.max_len} exceeds the model's context window n_ctx={n_ctx}")
    kind = spec.type
    valid_metrics = kind.metric_names(spec)
    spec = dataclasses.replace(spec, max_len=cfg.max_len or n_ctx, metric=cfg.metric or valid_metrics[0])
    if spec.metric not in (*valid_metrics, "loss"):
        raise OptionError("FinetuneConfig", "metric", f"{spec.metric}: a {spec.task}"
                                                      f"{' regression' if spec.regression else ''} task reports "
                                                      f"{', '.join(valid_metrics)} (or loss)")
    model = TaskModel(gpt, spec, cfg.clf_pdrop)
    transform = InputTransform(spec, tok, spec.max_len)
    data = TaskData(spec, transform.encode_all(train_x, name=str(cfg.train)),
                    transform.encode_all(val_x, name=str(cfg.val)) if val_x else None,
                    transform.encode_all(test_x, name=str(cfg.test)) if test_x else None)
    return data, model, tok, origin


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune, keep the best checkpoint by the validation metric, evaluate it on the test file.

    Writes RUN_DIR/checkpoints (the loop's), RUN_DIR/model (the last), RUN_DIR/best (the best task
    model directory) and RUN_DIR/summary.json; returns the summary."""
    started = time.time()
    if cfg.resume:  # before any file is read: a pre-training run directory is not this kind of run
        check_run_kind(Path(cfg.out), "finetune")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data, model, tok, origin = load_data(cfg)
    spec, val_e = data.spec, data.val

    ranks = rank_info()
    batches = EpochBatches(data.train, cfg.batch_size, tok.pad_id, spec, seed=cfg.seed, device=cfg.device,
                           rank=ranks.rank, world_size=ranks.world_size,
                           group_by_length=cfg.group_by_length)
    steps = cfg.max_steps or max(1, round(cfg.epochs * batches.batches_per_epoch))
    # Rounded down: 0.2% of a run of under 500 updates is less than one update, so such a run has no
    # warmup and its first update is at the full rate (docs/finetuning.md says so).
    warmup = int(cfg.warmup * steps)
    eval_every = max(1, batches.batches_per_epoch // max(1, cfg.evals_per_epoch))
    log.info("%s: %d train examples (%d labels), %d updates of batch %d (%.3g epochs), warmup %d, lr %.3g, lm_coef %g",
             spec.task, len(data.train), len(spec.labels or []), steps, cfg.batch_size,
             steps / batches.batches_per_epoch, warmup, cfg.lr, cfg.lm_coef)

    out = Path(cfg.out)
    resume_from = prepare_run_dir(out, resume=cfg.resume, overwrite=cfg.overwrite, kind="finetune",
                                  info={"task": spec.task})
    recipe = run_recipe(cfg, data)
    checkpoint = None
    if resume_from is not None:
        checkpoint = _same_world_checkpoint(resume_from, ranks.world_size, out)
        try:
            require_same_recipe(checkpoint, recipe)
        except GptkitError:
            RunLock.release_dir(out)
            raise
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    record.update(origin)

    def save_model(directory: Path) -> None:
        write_task_model(export_view(model), tok, directory, extra=record)  # FSDP: the gathered copy

    def load_model(directory: Path) -> None:
        load_weights_into(model.gpt, directory)
        load_head(model, directory)

    def evaluate(module: TaskModel) -> dict[str, float]:
        metrics = score(module, val_e, tok.pad_id, batch_size=cfg.eval_batch_size, device=cfg.device)
        return {f"val_{k}": v for k, v in metrics.items()}

    train_config = TrainConfig(
        max_steps=steps,
        grad_clip=cfg.grad_clip,
        log_every=cfg.log_every or max(1, min(50, eval_every)),
        eval_every=eval_every if val_e is not None else 0,
        checkpoint_every=eval_every,
        precision=cfg.precision,
        parallel=cfg.parallel,
        seed=cfg.seed,
        device=cfg.device,
        best_metric=f"val_{spec.metric}" if val_e is not None else None,
        best_mode="min" if spec.type.lower_is_better(spec.metric) else "max",
        progress=cfg.progress,
        keep_last=cfg.keep_last,
    )
    model = apply_parallelism(model, cfg.parallel, precision=cfg.precision)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = train(
        model, FinetuneObjective(cfg.lm_coef), batches, optimizer, warmup_linear(cfg.lr, warmup, steps), train_config,
        run_dir=out, resume_from=checkpoint, save_model=save_model, load_model=load_model,
        evaluate=evaluate if val_e is not None else None, extra_state={"recipe": recipe},
    )
    if not ranks.is_main:  # rank 0 alone exports best/ and writes the summary
        return {"steps": result.step, "stopped_by": result.stopped_by, "rank": ranks.rank}
    if result.stopped_by is not None:
        # Interrupted: the checkpoint is saved for --resume, but best/ and summary.json would present
        # a partial run as the result, so neither is written.
        RunLock.release_dir(out)
        return {"task": spec.task, "steps": result.step, "stopped_by": result.stopped_by,
                "checkpoint": str(result.last_checkpoint)}
    summary = summarize(cfg, data, model, tok, result, out, origin)
    summary["seconds"] = round(time.time() - started, 2)
    atomic_write_json(out / "summary.json", summary)
    RunLock.release_dir(out)
    return summary


RECIPE_FIELDS = ("task", "glue", "columns", "regression", "label_base", "init", "no_pretrain", "preset", "tokenizer",
                 "fresh_task_tokens", "transfer_layers", "max_len", "metric", "lm_coef", "max_steps", "epochs",
                 "batch_size", "group_by_length", "lr", "warmup", "weight_decay", "grad_clip", "clf_pdrop",
                 "evals_per_epoch", "seed")
"""The FinetuneConfig fields a resumed run must share with the run it continues: each changes the
model it starts from, the data it reads, the updates it plans or what an update computes. (Not the
device, precision or thread count, as for pre-training: the loop warns when the precision changes.)"""


def run_recipe(cfg: FinetuneConfig, data: TaskData) -> dict[str, Any]:
    """What must stay the same for a resumed run to continue this one, as JSON values (it is saved with
    every checkpoint and compared on resume): RECIPE_FIELDS as given (paths resolved; max_len and
    metric as they took effect; epochs only when max_steps does not override them), then the label
    set and a digest of the encoded training and validation examples, which also catch another file
    content, another tokenizer's ids and a label set in another order."""
    recipe: dict[str, Any] = {}
    for name in RECIPE_FIELDS:
        value = getattr(cfg, name)
        if name in ("init", "tokenizer") and value is not None:
            value = str(Path(value).resolve())
        elif name == "max_len":
            value = data.spec.max_len
        elif name == "metric":
            value = data.spec.metric
        elif name == "epochs" and cfg.max_steps is not None:
            value = None
        elif isinstance(value, Path):
            value = str(value)
        recipe[name] = json.loads(json.dumps(value))  # as it reads back from trainer_state.json
    recipe["labels"] = data.spec.labels
    recipe["train_examples"] = _digest(data.train)
    recipe["val_examples"] = _digest(data.val)
    return recipe


def _digest(encoded: list[EncodedExample] | None) -> str | None:
    if encoded is None:
        return None
    payload = json.dumps([[x.sequences, x.label] for x in encoded], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def require_same_recipe(checkpoint: Any, recipe: dict[str, Any]) -> None:
    """Refuse to resume with a recipe other than the checkpoint's (`Checkpoint.require_same`, the
    wording pre-training's resume uses): every FinetuneConfig field first, so the message names the
    flag that changed, then the label set and the examples, named as the file that gives them. A
    checkpoint written before runs saved their recipe has nothing to compare and resumes as before."""
    owner = "FinetuneConfig"
    checkpoint.require_same(owner, {k: v for k, v in recipe.items() if k in RECIPE_FIELDS})
    saved = checkpoint.state.get("extra", {}).get("recipe", {})
    again = "resume with the same settings (or start a new run)"
    if "labels" in saved and saved["labels"] != recipe["labels"]:
        raise OptionError(owner, "train", f"gives the labels {recipe['labels']!r} but the run being resumed "
                                          f"({checkpoint.path}) used {saved['labels']!r}; {again}")
    for field, key in (("train", "train_examples"), ("val", "val_examples")):
        if key in saved and saved[key] != recipe[key]:
            raise OptionError(owner, field, f"holds other examples than the run being resumed ({checkpoint.path}) "
                                            f"{'was trained on' if field == 'train' else 'was validated on'} "
                                            f"(another file, or its content changed); {again}")


def _same_world_checkpoint(path: Path, world_size: int, out: Path):  # noqa: ANN202 (a Checkpoint)
    """The checkpoint to resume, refused when another number of processes wrote it. Pre-training
    continues at any world size (same global batch, same windows), but fine-tuning plans its updates
    per epoch, its warmup and its evaluations from the process count, and tops up an epoch's last
    batch per rank: resumed by another count it would silently train other epochs on another schedule
    (measured: a 20-epoch run stopped at update 27 of 60 on 2 ranks re-planned 120 updates in one
    process and ran 40 epochs)."""
    checkpoint = read_checkpoint(path)
    saved = int(checkpoint.state.get("world_size", 1))
    if saved != world_size:
        RunLock.release_dir(out)
        how = "in one process (without torchrun)" if saved == 1 else f"under torchrun --nproc-per-node {saved}"
        raise GptkitError(f"{path}: written by {saved} process(es), resumed by {world_size}; fine-tuning plans its "
                          f"epochs, warmup and evaluations per process count, so it resumes only {how}")
    return checkpoint


def summarize(cfg: FinetuneConfig, data: TaskData, model: TaskModel, tok: Any, result: Any, out: Path,
              origin: dict[str, Any]) -> dict[str, Any]:
    """Export best/ (the best checkpoint as a task model directory) and score it on val and test."""
    spec = data.spec
    best_ckpt = result.best_checkpoint or result.last_checkpoint
    best_dir = out / "best"
    if best_ckpt is not None:
        export_dir(best_ckpt, best_dir, skip=TRAINING_FILES)
    summary: dict[str, Any] = {
        "task": spec.task,
        "glue": cfg.glue,
        "labels": spec.labels,
        "regression": spec.regression,
        "metric": spec.metric,
        "steps": result.step,
        "stopped_by": result.stopped_by,
        "examples": data.sizes(),
        "truncated": data.truncated(),
        "best_dir": str(best_dir),
        "best_step": _step_of(best_ckpt),
        "best_value": result.best_value,
        "final_train_loss": next((r["loss"] for r in reversed(result.history) if "loss" in r), None),
        **origin,
        "lm_coef": cfg.lm_coef,
    }
    if data.val is not None and best_ckpt is not None:
        best_model, _ = load_task_model(best_dir, device=cfg.device)
        summary["val"] = score(best_model, data.val, tok.pad_id, batch_size=cfg.eval_batch_size, device=cfg.device)
        if data.test is not None:
            summary["test"] = _score_test(best_model, data.test, tok.pad_id, cfg, out)
    elif data.test is not None:  # a sharded model cannot run on rank 0 alone: score its exported copy
        scorer = load_task_model(best_dir, device=cfg.device)[0] if is_sharded(model) and best_ckpt else model
        summary["test"] = _score_test(scorer, data.test, tok.pad_id, cfg, out)
    if summary.get("test") is not None:
        summary["test_predictions"] = str(out / TEST_PREDICTIONS)
    return summary


TEST_PREDICTIONS = "test_predictions.json"
"""The best model's prediction for every test example next to its label, in file order (label indices;
values for regression): what a paired comparison of two runs on the same test file needs."""


def _score_test(model: TaskModel, encoded: list[EncodedExample], pad_id: int, cfg: FinetuneConfig, out: Path):
    """The test metrics (None when the test file has no labels), and TEST_PREDICTIONS written."""
    if any(x.label is None for x in encoded):
        return None
    metrics, preds = score_and_predict(model, encoded, pad_id, batch_size=cfg.eval_batch_size, device=cfg.device)
    atomic_write_json(out / TEST_PREDICTIONS, {"predictions": preds.tolist(), "labels": [x.label for x in encoded]})
    return metrics


def _step_of(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return read_checkpoint(path).step
    except (GptkitError, KeyError, ValueError):
        return None
