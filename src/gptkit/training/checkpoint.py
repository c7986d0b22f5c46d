"""Checkpoints: atomic, self-contained, never pickled; the newest intact one is found on resume.

Layout of a run directory:

    RUN_DIR/run.json                      what made this directory (refuses accidental reuse)
    RUN_DIR/checkpoints/step_000123/      the model as the caller saves it (for GPT: an HF directory
                                          with the tokenizer, so interop.load_pretrained works on it)
                                          + trainer_state.json, optimizer.safetensors, rng_state.safetensors
    RUN_DIR/checkpoints/latest            the newest step directory's name (a hint; see below)
    RUN_DIR/checkpoints/best              the best step directory's name, when a metric is tracked
    RUN_DIR/model/                        the newest model alone (hard links), for downstream commands

A checkpoint is written into `checkpoints/.tmp-step_...`, every file fsynced, and only then renamed
to `step_...`; a rename is atomic, so a `step_*` directory is complete by construction. Directories
are deleted by renaming them to `.trash-*` first, so a kill during deletion never leaves a partial
`step_*`. The `latest` file is only a hint: if it is missing or names something absent, the newest
complete `step_*` wins; on resume a `step_*` whose files do not match the sizes its state recorded
is passed over for the one before. RUN_DIR/model is replaced by swapping directories, never absent.
Claiming the run directory (lock, reuse rules, run kind) is rundir.py's job.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..atomic import atomic_write_bytes, atomic_write_json, replace_dir
from ..errors import GptkitError
from ..interop.weights import atomic_save_safetensors, load_safetensors
from ..jsonio import field, read_json
from ..modeldir import discard, export_dir, fsync_tree
from ..options import OptionError
from .config import PRECISIONS

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng_state.safetensors"
SHARDED_DIR = "sharded"
"""An FSDP run's model + optimizer shards, one safetensors file per rank (training.sharded)."""
TRAINING_FILES = (STATE_FILE, OPTIMIZER_FILE, RNG_FILE, SHARDED_DIR)
RUN_FILE = "run.json"
MODEL_DIR = "model"
"""RUN_DIR/model: the newest model alone, for downstream commands."""
CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER, BEST_POINTER = "latest", "best"
STEP_RE = re.compile(r"^step_(\d+)$")
FORMAT_VERSION = 1


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


# --- optimizer and RNG state as tensors + JSON (no pickle) -------------------------------------------


def optimizer_state_to_safetensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into tensors (`state.<param>.<key>`) and a JSON part (the
    param groups and any non-tensor per-parameter values)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_from_safetensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, source: Path
) -> None:
    """Load what `optimizer_state_to_safetensors` wrote (`source`: the checkpoint directory). Every
    tensor is checked against the parameter it belongs to first: torch's `load_state_dict` checks
    neither shapes nor dtypes (it casts a moment to the parameter's dtype), so a damaged or edited
    optimizer.safetensors would otherwise train on, silently, from corrupt AdamW moments."""
    file = Path(source) / OPTIMIZER_FILE
    groups = []
    try:
        for g in meta["param_groups"]:
            g = dict(g)
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
            groups.append(g)
        saved_ids = [pid for g in groups for pid in g["params"]]
    except (KeyError, TypeError, ValueError) as e:
        raise GptkitError(f"{Path(source) / STATE_FILE}: field optimizer.param_groups is malformed ({_one_line(e)})") from None
    # torch pairs the saved parameter ids with the optimizer's parameters in order, group by group
    params = dict(zip(saved_ids, (p for g in optimizer.param_groups for p in g["params"]), strict=False))
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = (name.split(".", 2) + ["", ""])[:3]
        param = params.get(int(pid)) if pid.isdigit() else None
        if param is None:
            raise GptkitError(f"{file}: tensor {name} belongs to no parameter of this optimizer")
        expected = () if key == "step" else tuple(param.shape)
        if not value.is_floating_point() or tuple(value.shape) not in (expected, *(((1,),) if key == "step" else ())):
            raise GptkitError(f"{file}: tensor {name} is {str(value.dtype).removeprefix('torch.')} of shape "
                              f"{tuple(value.shape)}; its parameter needs a floating-point tensor of shape {expected}")
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise GptkitError(f"{source}: optimizer state does not fit this model ({_one_line(e)})") from None


def rng_state_to_safetensors(per_rank: dict[str, list[torch.Tensor]] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """torch (CPU and every CUDA device), numpy's global and Python's `random` states.

    per_rank: under DDP, each rank's own generator states (`{"torch": [rank0, rank1, ...], "cuda": [...]}`)
    gathered to rank 0, so every rank's dropout continues exactly after a resume."""
    tensors = {"torch": torch.get_rng_state()}
    for kind, states in (per_rank or {}).items():
        for r, state in enumerate(states):
            tensors[f"rank{r}.{kind}"] = state
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    return tensors, meta


def rng_state_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict, rank: int = 0) -> None:
    torch.set_rng_state(tensors.get(f"rank{rank}.torch", tensors["torch"]))
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if f"rank{rank}.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[f"rank{rank}.cuda"])
    n = meta["numpy"]
    keys = tensors["numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


class CheckpointManager:
    """Writes, finds, loads and prunes the checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path, keep_last: int = 3) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / CHECKPOINTS_DIR
        self.keep_last = keep_last

    # finding ---------------------------------------------------------------------------------------

    def complete(self) -> list[tuple[int, Path]]:
        """Every complete checkpoint, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = STEP_RE.match(p.name)
            if m and p.is_dir() and (p / STATE_FILE).is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        hint = _read_pointer(self.dir / LATEST_POINTER)
        if hint is not None and STEP_RE.match(hint) and (self.dir / hint / STATE_FILE).is_file():
            newest = self.complete()
            # the hint can lag a crash between the rename and its update; the scan is the truth
            if newest and newest[-1][1].name != hint:
                return newest[-1][1]
            return self.dir / hint
        found = self.complete()
        return found[-1][1] if found else None

    def resumable(self, *, warn: bool = True) -> Path | None:
        """The newest checkpoint that is intact (`verify_checkpoint`); a damaged newer one (a disk
        error, a truncated copy) is passed over with a warning instead of failing the resume.
        `warn=False`: a look ahead of the resume itself, which will warn."""
        for _, path in reversed(self.complete()):
            try:
                verify_checkpoint(path)
            except GptkitError as e:
                if warn:
                    log.warning("skipping damaged checkpoint %s (%s); trying the one before", path, e)
                continue
            return path
        return None

    def best(self) -> Path | None:
        hint = _read_pointer(self.dir / BEST_POINTER)
        if hint is not None and STEP_RE.match(hint) and (self.dir / hint / STATE_FILE).is_file():
            return self.dir / hint
        return None

    # writing ---------------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        write_model: Callable[[Path], None],
        state: dict[str, Any],
        tensor_files: dict[str, dict[str, torch.Tensor]],
        *,
        is_best: bool = False,
        tmp: Path | None = None,
    ) -> Path:
        """Write one checkpoint atomically and return its directory. `tensor_files` maps a file name
        (e.g. optimizer.safetensors) to its tensors; `state` becomes trainer_state.json, written last.

        `tmp`: a temporary directory already holding part of the checkpoint (an FSDP run's shards,
        written there by every rank), committed with the rest.

        A failed write (disk full, a file too large, any OSError) removes the partial checkpoint and
        is a one-line GptkitError; the previous checkpoints and RUN_DIR/model are untouched."""
        name = step_dir_name(step)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if tmp is None:
                tmp = self.dir / f".tmp-{name}-{os.getpid()}"
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir()
            write_model(tmp)
            for filename, tensors in tensor_files.items():
                atomic_save_safetensors(tensors, tmp / filename)
            fsync_tree(tmp)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            atomic_write_json(tmp / STATE_FILE, {"format": FORMAT_VERSION, **state, "files": files})
        except (OSError, SafetensorError) as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            raise GptkitError(f"{self.dir}: could not write the checkpoint of step {step} ({_one_line(e)}); "
                              f"its partial files were removed and {kept}") from None
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.dir / name
        replace_dir(tmp, final)  # e.g. a resumed run saving the step it resumed from
        atomic_write_bytes(self.dir / LATEST_POINTER, (name + "\n").encode())
        if is_best:
            atomic_write_bytes(self.dir / BEST_POINTER, (name + "\n").encode())
        self.prune()
        try:
            self.export_model(final)
        except OSError as e:
            shutil.rmtree(self.run_dir / f".tmp-model-{os.getpid()}", ignore_errors=True)
            raise GptkitError(f"{self.run_dir / MODEL_DIR}: could not be refreshed ({_one_line(e)}); the checkpoint "
                              f"{final} is complete") from None
        return final

    def prune(self) -> None:
        """Keep the newest `keep_last` complete checkpoints and the best one."""
        found = self.complete()
        best = self.best()
        for _, path in found[: max(0, len(found) - self.keep_last)]:
            if best is None or path.name != best.name:
                self._discard(path)

    def export_model(self, checkpoint: Path) -> Path:
        """Refresh RUN_DIR/model with the checkpoint's model files (hard links: no extra space). The
        new directory is swapped in (`replace_dir`), so RUN_DIR/model exists at every instant."""
        return export_dir(checkpoint, self.run_dir / MODEL_DIR, skip=TRAINING_FILES, link=True)

    def clean_stale(self) -> None:
        """Remove what a killed process left behind: temp and trash directories, temp files of
        atomic writes. Only called by the run directory's lock holder, so nothing here is live."""
        for parent in (self.dir, self.run_dir):
            if not parent.is_dir():
                continue
            for p in parent.iterdir():
                if p.name.startswith((".tmp-", ".trash-")) and p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                    p.unlink(missing_ok=True)

    def _discard(self, path: Path) -> None:
        discard(path)

    # reading ---------------------------------------------------------------------------------------

    @staticmethod
    def read_state(checkpoint: Path) -> dict[str, Any]:
        return read_checkpoint(checkpoint).state

    @staticmethod
    def read_tensors(checkpoint: Path, filename: str) -> dict[str, torch.Tensor]:
        return Checkpoint(Path(checkpoint), {}).tensors(filename)


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint directory as read back: its trainer state (parsed once, here) and
    its tensor files (parsed when asked for, once each by the one caller that needs them)."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def tensors(self, filename: str) -> dict[str, torch.Tensor]:
        path = self.path / filename
        if not path.is_file():
            raise GptkitError(f"{path}: missing from the checkpoint")
        return load_safetensors(path)

    def require_same(self, owner: str, current: dict[str, Any]) -> None:
        """Refuse to continue this run with settings that change what it computes: `current` is the
        caller's `extra_state["recipe"]`, compared with the one the checkpoint saved."""
        saved = self.state.get("extra", {}).get("recipe", {})
        for key, value in current.items():
            if key in saved and saved[key] != value:
                raise OptionError(owner, key, f"is {value!r} but the run being resumed ({self.path}) used "
                                              f"{saved[key]!r}; resume with the same settings (or start a new run)")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """THE reader of a checkpoint's trainer state; a missing or malformed one is a GptkitError."""
    path = Path(path)
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise GptkitError(f"{state_path}: missing; {path} is not a complete checkpoint")
    state = read_json(state_path)
    if state.get("format") != FORMAT_VERSION:
        raise GptkitError(f"{state_path}: unknown checkpoint format {state.get('format')!r:.40}")
    check_state(state, state_path)
    return Checkpoint(path, state)


def check_state(state: dict[str, Any], source: Path) -> None:
    """The fields of trainer_state.json that a resume reads, each of the type it needs, so that a file
    edited by hand (or damaged inside its size) is one GptkitError naming the field, not a KeyError
    or a ValueError from deep inside the resume, and not a resume at step -5. Fields a checkpoint
    may lack (an older one, a library user's minimal state) are checked only when present; `step`
    must also be the one the directory's name says."""
    step = field(state, "step", int, source)
    m = STEP_RE.match(source.parent.name)
    if step < 0 or (m and int(m.group(1)) != step):
        raise GptkitError(f"{source}: field 'step' is {step}, but the checkpoint is {source.parent.name}")
    for key, minimum in (("tokens_seen", 0), ("world_size", 1)):
        if key in state and field(state, key, int, source) < minimum:
            raise GptkitError(f"{source}: field {key!r} must be at least {minimum}, got {state[key]}")
    for key in ("batches", "optimizer", "rng", "config", "extra", "files"):
        if key in state:
            field(state, key, dict, source)
    if "batches_per_rank" in state:
        per_rank = field(state, "batches_per_rank", list, source)
        if len(per_rank) != state.get("world_size", 1) or not all(isinstance(b, dict) for b in per_rank):
            raise GptkitError(f"{source}: field 'batches_per_rank' must hold one object per rank "
                              f"({state.get('world_size', 1)})")
    if "optimizer" in state:
        groups = field(state["optimizer"], "param_groups", list, f"{source}: optimizer")
        if not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                   and all(isinstance(i, int) and not isinstance(i, bool) for i in g["params"]) for g in groups):
            raise GptkitError(f"{source}: field optimizer.param_groups must be objects with a list of "
                              f"parameter ids in 'params'")
        scalars = state["optimizer"].get("scalars", {})
        if not (isinstance(scalars, dict) and all(isinstance(v, dict) for v in scalars.values())):
            raise GptkitError(f"{source}: field optimizer.scalars must map parameter ids to objects")
    if "rng" in state:
        numpy_state = field(state["rng"], "numpy", dict, f"{source}: rng")
        for key, kind in (("kind", str), ("pos", int), ("has_gauss", int), ("cached_gaussian", (int, float))):
            field(numpy_state, key, kind, f"{source}: rng.numpy")
        python_state = field(state["rng"], "python", dict, f"{source}: rng")
        field(python_state, "version", int, f"{source}: rng.python")
        if not all(isinstance(x, int) for x in field(python_state, "state", list, f"{source}: rng.python")):
            raise GptkitError(f"{source}: field rng.python.state must be a list of integers")
    config = state.get("config", {})
    for key, check in (("grad_accum_steps", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
                       ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
                       ("precision", lambda v: v in PRECISIONS)):
        if key in config and not check(config[key]):
            raise GptkitError(f"{source}: field config.{key} is {config[key]!r:.40}, not a value the loop takes")
    best = state.get("best")
    if best is not None:
        value = best.get("value") if isinstance(best, dict) else None
        if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                and isinstance(best.get("metric"), str) and isinstance(best.get("step"), int)):
            raise GptkitError(f"{source}: field 'best' must be null or {{metric, value, step}} with a finite "
                              f"value, got {best!r:.60}")
    recipe = state.get("extra", {}).get("recipe", {})
    if not isinstance(recipe, dict):
        raise GptkitError(f"{source}: field extra.recipe must be an object")


def verify_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint's state and check its files without loading them: each file the state
    lists has the size it was written with, and every safetensors header parses. Cheap (no tensor
    is read), and it catches truncated or missing files."""
    checkpoint = read_checkpoint(path)
    files = checkpoint.state.get("files")
    if isinstance(files, dict):
        for rel, size in files.items():
            f = checkpoint.path / rel
            actual = f.stat().st_size if f.is_file() else None
            if actual != size:
                raise GptkitError(f"{f}: {'missing' if actual is None else f'{actual} bytes'}, written with {size}")
    for f in checkpoint.path.rglob("*.safetensors"):
        try:
            with safe_open(str(f), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError) as e:
            raise GptkitError(f"{f}: not a readable safetensors file ({_one_line(e)})") from None
    return checkpoint


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _read_pointer(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):  # a hint only: the scan of step_* directories decides
        return None
