"""`evaluate` (every metric of a fine-tuned model on a labelled file) and `predict` (one record per
input row, as JSONL or CSV), reading files exactly as the model's saved spec says."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import GptkitError
from ..options import Check, OptionError, optional, positive_int
from ..options import device as usable_device
from .inference import infer, score
from .model import load_task_model
from .taskfile import load_examples
from .transforms import InputTransform, count_truncated


def check_inference_options(owner: str, *, batch_size: int, device: str, max_len: int | None = None) -> None:
    """The options every scoring command takes, checked before a model is loaded: a batch size of 0 or
    less, a device this machine does not have, or a max_len of 0 or less would otherwise fail deep in
    torch or numpy with their own traceback (or, for max_len 0, silently mean "the default"). `owner`
    names the command (`evaluate`, `predict`, `zeroshot`); the CLI turns `owner.field` into its flag."""
    checks: tuple[tuple[str, object, Check], ...] = (
        ("batch_size", batch_size, positive_int), ("device", device, usable_device),
        ("max_len", max_len, optional(positive_int)))
    for field, value, check in checks:
        if not check(value):
            must = check.must.removesuffix(" or None")  # None is the default, not something to type
            raise OptionError(owner, field, f"must be {must}, got {value!r}")


def check_max_len(owner: str, max_len: int | None, n_ctx: int) -> None:
    """A max_len the model cannot read (the same refusal as fine-tuning's)."""
    if max_len is not None and max_len > n_ctx:
        raise OptionError(owner, "max_len", f"{max_len} exceeds the model's context window n_ctx={n_ctx}")


def _open(owner: str, model_dir: str | Path, data: str | Path, device: str, max_len: int | None, batch_size: int, *,
          need_label: bool):
    """The task model of a run or task directory, and a file read and encoded as its spec says."""
    check_inference_options(owner, batch_size=batch_size, device=device, max_len=max_len)
    model, tok = load_task_model(resolve_task_dir(model_dir), device=device)
    spec = model.spec
    check_max_len(owner, max_len, model.gpt.config.n_ctx)
    examples = load_examples(spec, data, need_label=need_label)
    transform = InputTransform(spec, tok, max_len or spec.max_len or model.gpt.config.n_ctx)
    return model, tok, examples, transform.encode_all(examples, name=str(data))


def evaluate(model_dir: str | Path, data: str | Path, *, batch_size: int = 64,
             device: str = "cpu", max_len: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Every metric of the task on a labelled file, with the example and truncation counts."""
    model, tok, _, encoded = _open("evaluate", model_dir, data, device, max_len, batch_size, need_label=True)
    spec = model.spec
    metrics = score(model, encoded, tok.pad_id, batch_size=batch_size, device=device, progress=progress)
    return {"task": spec.task, "examples": len(encoded), "truncated": count_truncated(encoded), **metrics}


def predict(model_dir: str | Path, data: str | Path, out: str | Path, *, batch_size: int = 64,
            device: str = "cpu", max_len: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Write one prediction per input row (label and probabilities) as JSONL or CSV (by suffix)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise GptkitError(f"{out}: predictions are written as .jsonl or .csv")
    refuse_input_as_output(out, data)
    model, tok, examples, encoded = _open("predict", model_dir, data, device, max_len, batch_size, need_label=False)
    spec = model.spec
    preds, probs, _ = infer(model, encoded, tok.pad_id, batch_size=batch_size, device=device, progress=progress)
    kind = spec.type
    records = []
    for x, e, pred, prob in zip(examples, encoded, preds, probs):
        rec: dict[str, Any] = {"where": x.where, **kind.record(spec, pred, prob)}
        if x.label is not None:
            rec["gold"] = kind.gold(spec, x.label)
        rec["truncated"] = e.truncated
        records.append(rec)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".jsonl":
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


def refuse_input_as_output(out: Path, data: str | Path) -> None:
    """Refuse an `out` that is the input file itself (also through a link, or another spelling of its
    path): writing the predictions there would replace what was read. (The model directory's files are
    never .jsonl or .csv, and a saved dataset's neither, so `--data` is the one input `out` can name.)"""
    data = Path(data)
    if out.exists() and data.exists() and os.path.samefile(out, data):
        raise GptkitError(f"{out}: is the input file {data}; writing the predictions there would replace it "
                          "(write them to another file)")


def resolve_task_dir(path: str | Path) -> Path:
    """A fine-tuning run directory -> its `best/`; a task model directory -> itself."""
    p = Path(path)
    if (p / "best" / "task.json").is_file():
        return p / "best"
    return p
