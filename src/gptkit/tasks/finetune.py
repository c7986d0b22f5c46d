"""Fine-tuning, evaluation and prediction as library functions (the CLI and the demo call these).

Fine-tuning runs THE training loop (`gptkit.training.train`) with the task objective, an epoch-based
batch source, the paper's warmup-linear schedule, and an evaluation callback that keeps the best
checkpoint by the validation metric. Nothing here is a second loop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import replace_dir
from ..errors import GptkitError
from ..interop.weights import atomic_write_json, load_safetensors
from ..model import GPT
from ..model.config import PRESETS
from ..options import (
    OptionError,
    boolean,
    check_options,
    fraction,
    integer,
    like,
    non_negative_int,
    non_negative_real,
    option,
    optional,
    positive_int,
    positive_real,
)
from ..training.config import TrainConfig
from .batching import TaskBatch, collate, iterate_batches
from .metrics import default_metric, task_metrics
from .model import HEAD_FILE, TaskModel, load_task_model, write_task_model
from .objective import FinetuneObjective, task_loss
from .progress import progress_bar
from .spec import TaskSpec, load_examples
from .transforms import EncodedExample, InputTransform, count_truncated

log = logging.getLogger(__name__)


TASKS = ("classification", "entailment", "similarity", "multiple_choice")


@dataclass
class FinetuneConfig:
    """One fine-tuning run. Defaults are the paper's (SPEC section 4); each field is declared once
    here (or, for the loop's knobs, in TrainConfig) with its check and help; the CLI reads them."""

    task: str = option(help="task type", choices=TASKS)
    train: str | Path = option(help="training file (.jsonl, .csv, .tsv, .parquet, or a saved dataset)")
    val: str | Path | None = option(None, help="validation file: metrics each epoch, best checkpoint kept by the metric")
    test: str | Path | None = option(None, help="test file, scored once with the best checkpoint")
    out: str | Path = option("runs/finetune", help="run directory (checkpoints, metrics, best/, summary.json)")
    init: str | Path | None = option(None, help="pre-training run directory (its model/) or a model directory "
                                                "with a tokenizer")
    no_pretrain: bool = option(False, help="random initial weights (Table 5 'w/o pre-training'): the preset's "
                                           "shape, or init's", check=boolean)
    preset: str | None = option(None, help="model preset for no_pretrain", choices=(*PRESETS, None))
    tokenizer: str | Path | None = option(None, help="tokenizer (default: the one in init)")
    columns: dict[str, str] = field(default_factory=dict)
    regression: bool = option(False, help="real-valued labels, MSE loss (inferred from non-integer labels)",
                              check=boolean)
    label_base: int = option(0, help="multiple choice: index of the first candidate in the label column "
                                     "(Story Cloze: 1)", check=integer)
    lm_coef: float = option(0.5, help="weight of the auxiliary LM loss (0 = 'w/o aux LM')", check=non_negative_real)
    transfer_layers: int | None = option(None, help="keep embeddings + the first N pre-trained blocks, "
                                                    "re-initialise the rest (Figure 2)",
                                         check=optional(non_negative_int))
    epochs: float = option(3.0, help="passes over the training file", check=positive_real)
    batch_size: int = option(32, help="examples per update", check=positive_int)
    lr: float = option(6.25e-5, help="maximum learning rate", check=positive_real)
    warmup: float = option(0.002, help="fraction of the updates spent warming up linearly from 0 (paper: 0.2%), "
                                       "then linear decay to 0", check=fraction)
    weight_decay: float = option(0.01, help="decoupled weight decay on matrices", check=non_negative_real)
    grad_clip: float = like(TrainConfig, "grad_clip")
    clf_pdrop: float = option(0.1, help="dropout before the classifier", check=fraction)
    max_len: int | None = option(None, help="token budget per sequence (default: the model's n_ctx)",
                                 check=optional(positive_int))
    metric: str | None = option(None, help="validation metric that picks the best checkpoint (accuracy; pearson "
                                           "for regression; also f1, matthews, spearman, loss)")
    evals_per_epoch: int = option(1, help="validation runs per epoch", check=positive_int)
    log_every: int | None = option(None, help="metrics line every N updates (default: every evaluation, at most 50)",
                                   check=optional(positive_int))
    eval_batch_size: int = option(64, help="examples per evaluation batch", check=positive_int)
    max_steps: int | None = option(None, help="number of updates (overrides epochs)", check=optional(positive_int))
    seed: int = like(TrainConfig, "seed", 42, help="seed for head init, dropout and shuffling")
    device: str = like(TrainConfig, "device")
    precision: str = like(TrainConfig, "precision")
    parallel: str = like(TrainConfig, "parallel")
    threads: int | None = option(None, help="torch CPU threads", check=optional(positive_int))
    keep_last: int = like(TrainConfig, "keep_last", 1, help="recent checkpoints kept besides the best (each "
                                                           "evaluation writes one, so a crash loses little)")
    resume: bool = option(False, help="continue the run in the run directory", check=boolean)
    overwrite: bool = option(False, help="replace the run in the run directory", check=boolean)
    progress: bool = like(TrainConfig, "progress")

    def __post_init__(self) -> None:
        """Contradictory or out-of-range options fail here, before any file is read."""
        check_options(self)
        if self.no_pretrain and self.transfer_layers is not None:
            raise OptionError("FinetuneConfig", "transfer_layers", "keeps pre-trained blocks; it contradicts no_pretrain")
        if self.preset is not None and not self.no_pretrain:
            raise OptionError("FinetuneConfig", "preset", "builds a random model: use it with no_pretrain (or pass "
                                                          "init alone)")
        if self.init is None and not (self.no_pretrain and self.preset is not None):
            raise OptionError("FinetuneConfig", "init", "is needed (a model or run directory), or no_pretrain with "
                                                        "a preset and a tokenizer")
        if self.resume and self.overwrite:
            raise OptionError("FinetuneConfig", "resume", "contradicts overwrite; pass one")


class EpochBatches:
    """Shuffled epochs over the encoded training set; resumable (a fresh order per epoch, drawn from
    the seed and the epoch number, so the state is two integers)."""

    def __init__(self, examples: list[EncodedExample], batch_size: int, pad_id: int, *, task: str,
                 regression: bool, seed: int, device: str | torch.device = "cpu",
                 rank: int = 0, world_size: int = 1) -> None:
        self.examples = examples
        self.batch_size = batch_size
        # Under torchrun every rank walks the same epoch order and takes its own slice of each global
        # batch of batch_size x world_size examples (batch_size is per rank, as in pre-training).
        self.rank, self.world_size = rank, world_size
        self.pad_id = pad_id
        self.task = task
        self.regression = regression
        self.seed = seed
        self.device = device
        self.epoch = 0
        self.index = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.examples) / (self.batch_size * self.world_size))

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.examples))

    def next_batch(self) -> TaskBatch:
        if self.index >= len(self.examples):
            self.epoch, self.index = self.epoch + 1, 0
        order = self._order()[self.index : self.index + self.batch_size * self.world_size]
        self.index += len(order)
        if self.world_size > 1:
            # an epoch's last global batch is topped up from the start of the order, so that every
            # rank gets a full slice (a rank with nothing to do would leave the others' all-reduce hanging)
            short = self.batch_size * self.world_size - len(order)
            if short > 0:
                order = np.concatenate([order, np.resize(self._order(), short)])
            order = order[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        batch = collate([self.examples[i] for i in order], self.pad_id, task=self.task, regression=self.regression)
        # The loop moves tensors in dicts/tuples; a TaskBatch moves itself.
        return batch.to(self.device)

    def count_tokens(self, batch: TaskBatch) -> int:
        """Real (unpadded) tokens in a batch, for the loop's tokens/s."""
        return int(batch.mask.sum())

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "n": len(self.examples)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("n") != len(self.examples) or state.get("seed") != self.seed:
            raise GptkitError("the checkpoint was written for another training file or seed; cannot resume")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


# --- inference --------------------------------------------------------------------------------------


@torch.no_grad()
def infer(model: TaskModel, encoded: list[EncodedExample], pad_id: int, *, batch_size: int = 64,
          device: str | torch.device = "cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Run the model over examples -> (predictions, probabilities or values, mean task loss if labelled)."""
    was_training = model.training
    model.eval()
    preds, probs, losses, weights = [], [], [], []
    spec = model.spec
    bar = progress_bar(len(encoded), "scoring", progress)
    for batch in iterate_batches(encoded, batch_size, pad_id, task=spec.task, regression=spec.regression):
        bar.update(batch.n_examples)
        batch = batch.to(device)
        out = model(batch)
        p = model.probabilities(out.logits).float().cpu()
        probs.append(p.numpy())
        preds.append(p.numpy() if spec.regression else p.argmax(-1).numpy())
        if batch.labels is not None:
            losses.append(float(task_loss(model, out, batch.labels)) * batch.n_examples)
            weights.append(batch.n_examples)
    bar.close()
    model.train(was_training)
    loss = sum(losses) / sum(weights) if weights and len(weights) == len(preds) else None
    return np.concatenate(preds), np.concatenate(probs), loss


def score(model: TaskModel, encoded: list[EncodedExample], pad_id: int, *, batch_size: int = 64,
          device: str | torch.device = "cpu", progress: bool = False) -> dict[str, float]:
    """All metrics of the task on labelled examples, plus the mean task loss."""
    if any(x.label is None for x in encoded):
        raise GptkitError("evaluation needs a label on every example")
    preds, _, loss = infer(model, encoded, pad_id, batch_size=batch_size, device=device, progress=progress)
    gold = np.array([x.label for x in encoded])
    spec = model.spec
    metrics = task_metrics(spec.task, preds, gold, n_classes=len(spec.labels or []) or None, regression=spec.regression)
    metrics["loss"] = float(loss) if loss is not None else float("nan")
    return metrics


# --- building the model -----------------------------------------------------------------------------


def resolve_model_dir(path: str | Path) -> Path:
    """A pre-training run directory -> its exported `model/`; a model directory -> itself."""
    p = Path(path)
    from ..training.checkpoint import MODEL_DIR

    if (p / MODEL_DIR / "config.json").is_file():
        return p / MODEL_DIR
    if (p / "config.json").is_file():
        return p
    if not p.exists():
        raise GptkitError(f"{p}: no such directory")
    raise GptkitError(f"{p}: neither a model directory (config.json) nor a run directory with model/config.json")


def build_model(cfg: FinetuneConfig, spec: TaskSpec) -> tuple[TaskModel, Any, dict[str, Any]]:
    """The task model and tokenizer for `cfg`, plus a note of where the weights came from."""
    from ..interop.hf import read_config
    from ..model import preset as make_preset
    from ..tokenizer import GPTTokenizer

    torch.manual_seed(cfg.seed)
    init_dir = resolve_model_dir(cfg.init) if cfg.init is not None else None
    tok_source = cfg.tokenizer or init_dir
    if tok_source is None:
        raise OptionError("FinetuneConfig", "tokenizer", "is needed with no_pretrain and a preset (there is no init "
                                                         "to take it from)")
    tok = GPTTokenizer.load(tok_source)
    origin: dict[str, Any] = {"tokenizer": str(tok_source)}
    if cfg.no_pretrain:
        if init_dir is not None:
            config, _ = read_config(init_dir)
            origin["init"] = f"random weights, shape of {init_dir}"
        elif cfg.preset is not None:
            config = make_preset(cfg.preset, vocab_size=tok.vocab_size)
            origin["init"] = f"random weights, preset {cfg.preset}"
        else:
            raise OptionError("FinetuneConfig", "no_pretrain", "needs a preset (or an init to copy a model's shape)")
        gpt = GPT(config)
    else:
        if init_dir is None:
            raise OptionError("FinetuneConfig", "init", "is needed (a model or run directory), or no_pretrain with a "
                                                        "preset and a tokenizer")
        gpt = GPT.from_pretrained(init_dir)
        origin["init"] = str(init_dir)
        if cfg.transfer_layers is not None:
            reinit_blocks(gpt, cfg.transfer_layers)
            origin["transfer_layers"] = cfg.transfer_layers
    if gpt.config.vocab_size < tok.vocab_size:
        # The task tokens: fresh N(0, 0.02) rows, as the paper's new embeddings.
        log.info("growing the token embedding %d -> %d for the task tokens", gpt.config.vocab_size, tok.vocab_size)
        gpt.resize_token_embeddings(tok.vocab_size)
    gpt.train()
    return TaskModel(gpt, spec, cfg.clf_pdrop), tok, origin


def reinit_blocks(gpt: GPT, keep: int) -> None:
    """Figure 2's ablation: transfer the embeddings and the first `keep` blocks; the rest start afresh."""
    n = gpt.config.n_layer
    if not 0 <= keep <= n:
        raise OptionError("FinetuneConfig", "transfer_layers", f"is {keep}, but the model has {n} blocks (choose 0..{n})")
    for block in gpt.transformer.blocks[keep:]:
        block.apply(gpt._init_weights)
    if gpt.transformer.ln_f is not None and keep < n:
        gpt.transformer.ln_f.apply(gpt._init_weights)


# --- fine-tuning ------------------------------------------------------------------------------------


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune, keep the best checkpoint by the validation metric, evaluate it on the test file.

    Writes RUN_DIR/checkpoints (the loop's), RUN_DIR/model (the last), RUN_DIR/best (the best task
    model directory) and RUN_DIR/summary.json; returns the summary."""
    from ..interop.hf import load_weights_into
    from ..training import (
        RunLock,
        build_optimizer,
        check_run_kind,
        prepare_run_dir,
        rank_info,
        train,
        warmup_linear,
    )
    from ..training.distributed import apply_parallelism, is_sharded
    from ..training.sharded import export_view

    started = time.time()
    if cfg.resume:  # before any file is read: a pre-training run directory is not this kind of run
        check_run_kind(Path(cfg.out), "finetune")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = TaskSpec(cfg.task, columns=dict(cfg.columns), regression=cfg.regression, label_base=cfg.label_base)
    train_x = load_examples(spec, cfg.train, infer=True)
    val_x = load_examples(spec, cfg.val) if cfg.val is not None else None
    test_x = load_examples(spec, cfg.test) if cfg.test is not None else None
    model, tok, origin = build_model(cfg, spec)
    n_ctx = model.gpt.config.n_ctx
    if cfg.max_len is not None and cfg.max_len > n_ctx:
        raise OptionError("FinetuneConfig", "max_len", f"{cfg.max_len} exceeds the model's context window n_ctx={n_ctx}")
    spec.max_len = cfg.max_len or n_ctx
    spec.metric = cfg.metric or default_metric(spec.task, spec.regression)
    valid_metrics = ("pearson", "spearman", "mse") if spec.regression else \
        ("accuracy",) if spec.task == "multiple_choice" else ("accuracy", "f1", "matthews")
    if spec.metric not in (*valid_metrics, "loss"):
        raise OptionError("FinetuneConfig", "metric", f"{spec.metric}: a {spec.task}"
                                                      f"{' regression' if spec.regression else ''} task reports "
                                                      f"{', '.join(valid_metrics)} (or loss)")
    transform = InputTransform(spec, tok, spec.max_len)
    train_e = transform.encode_all(train_x, name=str(cfg.train))
    val_e = transform.encode_all(val_x, name=str(cfg.val)) if val_x else None
    test_e = transform.encode_all(test_x, name=str(cfg.test)) if test_x else None
    truncated = {"train": count_truncated(train_e)}
    if val_e is not None:
        truncated["val"] = count_truncated(val_e)
    if test_e is not None:
        truncated["test"] = count_truncated(test_e)

    ranks = rank_info()
    batches = EpochBatches(train_e, cfg.batch_size, tok.pad_id, task=spec.task, regression=spec.regression,
                           seed=cfg.seed, device=cfg.device, rank=ranks.rank, world_size=ranks.world_size)
    steps = cfg.max_steps or max(1, round(cfg.epochs * batches.batches_per_epoch))
    warmup = int(cfg.warmup * steps)
    eval_every = max(1, batches.batches_per_epoch // max(1, cfg.evals_per_epoch))
    log.info("%s: %d train examples (%d labels), %d updates of batch %d (%.3g epochs), warmup %d, lr %.3g, lm_coef %g",
             spec.task, len(train_e), len(spec.labels or []), steps, cfg.batch_size,
             steps / batches.batches_per_epoch, warmup, cfg.lr, cfg.lm_coef)

    out = Path(cfg.out)
    resume_from = prepare_run_dir(out, resume=cfg.resume, overwrite=cfg.overwrite, kind="finetune",
                                  info={"task": spec.task})
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    record.update(origin)

    def save_model(directory: Path) -> None:
        write_task_model(export_view(model), tok, directory, extra=record)  # FSDP: the gathered copy

    def load_model(directory: Path) -> None:
        load_weights_into(model.gpt, directory)
        model.head.load_state_dict(load_safetensors(Path(directory) / HEAD_FILE))

    metric_key = f"val_{spec.metric}"

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
        best_metric=metric_key if val_e is not None else None,
        best_mode="min" if spec.metric in ("loss", "mse") else "max",
        progress=cfg.progress,
        keep_last=cfg.keep_last,
    )
    model = apply_parallelism(model, cfg.parallel, precision=cfg.precision)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = train(
        model, FinetuneObjective(cfg.lm_coef), batches, optimizer, warmup_linear(cfg.lr, warmup, steps), train_config,
        run_dir=out, resume_from=resume_from, save_model=save_model, load_model=load_model,
        evaluate=evaluate if val_e is not None else None,
    )
    if not ranks.is_main:  # rank 0 alone exports best/ and writes the summary
        return {"steps": result.step, "stopped_by": result.stopped_by, "rank": ranks.rank}
    if result.stopped_by is not None:
        # Interrupted: the checkpoint is saved for --resume, but best/ and summary.json would present
        # a partial run as the result, so neither is written.
        RunLock.release_dir(out)
        return {"task": spec.task, "steps": result.step, "stopped_by": result.stopped_by,
                "checkpoint": str(result.last_checkpoint)}
    best_ckpt = result.best_checkpoint or result.last_checkpoint
    best_dir = out / "best"
    if best_ckpt is not None:
        _export_task_dir(best_ckpt, best_dir)
    summary: dict[str, Any] = {
        "task": spec.task,
        "labels": spec.labels,
        "regression": spec.regression,
        "metric": spec.metric,
        "steps": result.step,
        "stopped_by": result.stopped_by,
        "examples": {"train": len(train_e), **({"val": len(val_e)} if val_e else {}),
                     **({"test": len(test_e)} if test_e else {})},
        "truncated": truncated,
        "best_dir": str(best_dir),
        "best_step": _step_of(best_ckpt),
        "best_value": result.best_value,
        "final_train_loss": next((r["loss"] for r in reversed(result.history) if "loss" in r), None),
        **origin,
        "lm_coef": cfg.lm_coef,
    }
    if val_e is not None and best_ckpt is not None:
        best_model, _ = load_task_model(best_dir, device=cfg.device)
        summary["val"] = score(best_model, val_e, tok.pad_id, batch_size=cfg.eval_batch_size, device=cfg.device)
        if test_e is not None:
            summary["test"] = _score_or_none(best_model, test_e, tok.pad_id, cfg)
    elif test_e is not None:  # a sharded model cannot run on rank 0 alone: score its exported copy
        scorer = load_task_model(best_dir, device=cfg.device)[0] if is_sharded(model) and best_ckpt else model
        summary["test"] = _score_or_none(scorer, test_e, tok.pad_id, cfg)
    summary["seconds"] = round(time.time() - started, 2)
    atomic_write_json(out / "summary.json", summary)
    RunLock.release_dir(out)
    return summary


def _score_or_none(model: TaskModel, encoded: list[EncodedExample], pad_id: int, cfg: FinetuneConfig):
    if any(x.label is None for x in encoded):
        return None
    return score(model, encoded, pad_id, batch_size=cfg.eval_batch_size, device=cfg.device)


def _step_of(path: Path | None) -> int | None:
    if path is None:
        return None
    from ..training.checkpoint import read_checkpoint

    try:
        return read_checkpoint(path).step
    except (GptkitError, KeyError, ValueError):
        return None


def _export_task_dir(checkpoint: Path, target: Path) -> None:
    """Copy a checkpoint's model files (not its optimizer state) to a standalone task model directory."""
    from ..training.checkpoint import TRAINING_FILES

    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(checkpoint, tmp, ignore=lambda d, names: [n for n in names if n in TRAINING_FILES])
    replace_dir(tmp, target)  # swapped in: a complete best/ exists at every moment


# --- evaluate / predict -----------------------------------------------------------------------------


def evaluate(model_dir: str | Path, data: str | Path, *, batch_size: int = 64,
             device: str = "cpu", max_len: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Every metric of the task on a labelled file, with the example and truncation counts."""
    model, tok = load_task_model(resolve_task_dir(model_dir), device=device)
    spec = model.spec
    examples = load_examples(spec, data)
    transform = InputTransform(spec, tok, max_len or spec.max_len or model.gpt.config.n_ctx)
    encoded = transform.encode_all(examples, name=str(data))
    metrics = score(model, encoded, tok.pad_id, batch_size=batch_size, device=device, progress=progress)
    return {"task": spec.task, "examples": len(encoded), "truncated": count_truncated(encoded), **metrics}


def predict(model_dir: str | Path, data: str | Path, out: str | Path, *, batch_size: int = 64,
            device: str = "cpu", max_len: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Write one prediction per input row (label and probabilities) as JSONL or CSV (by suffix)."""
    import csv
    import io

    from ..interop.weights import atomic_write_bytes

    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".jsonl", ".csv"):
        raise GptkitError(f"{out}: predictions are written as .jsonl or .csv")
    model, tok = load_task_model(resolve_task_dir(model_dir), device=device)
    spec = model.spec
    examples = load_examples(spec, data, need_label=False)
    transform = InputTransform(spec, tok, max_len or spec.max_len or model.gpt.config.n_ctx)
    encoded = transform.encode_all(examples, name=str(data))
    preds, probs, _ = infer(model, encoded, tok.pad_id, batch_size=batch_size, device=device, progress=progress)
    records = []
    for x, e, pred, prob in zip(examples, encoded, preds, probs):
        rec: dict[str, Any] = {"where": x.where}
        if spec.regression:
            rec["prediction"] = float(pred)
        elif spec.task == "multiple_choice":
            rec["prediction"] = int(pred) + spec.label_base
            rec.update({f"p_{i + spec.label_base}": float(p) for i, p in enumerate(prob)})
        else:
            rec["prediction"] = spec.labels[int(pred)]
            rec.update({f"p_{name}": float(p) for name, p in zip(spec.labels, prob)})
        if x.label is not None:
            rec["gold"] = (float(x.label) if spec.regression else int(x.label) + spec.label_base
                           if spec.task == "multiple_choice" else spec.labels[int(x.label)])
        rec["truncated"] = e.truncated
        records.append(rec)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for r in records for k in r))
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        text = buf.getvalue()
    atomic_write_bytes(out, text.encode("utf-8"))
    return {"task": spec.task, "rows": len(records), "truncated": count_truncated(encoded), "out": str(out)}


def resolve_task_dir(path: str | Path) -> Path:
    """A fine-tuning run directory -> its `best/`; a task model directory -> itself."""
    p = Path(path)
    if (p / "best" / "task.json").is_file():
        return p / "best"
    return p
