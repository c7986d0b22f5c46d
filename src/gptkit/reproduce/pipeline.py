"""`gptkit reproduce`: the paper's Table 5 and Figure 2 on the built-in data, resumable stage by stage.

    data -> [tokenizer -> prepare -> pretrain]   the demo's own stages (skipped with --init)
    tasks        the two built-in tasks and the derived ones, subsampled, checked against pre-training text
    baselines    majority class, TF-IDF + logistic regression (`gptkit baseline`)
    finetune_*   Table 5 rows (full model, w/o pre-training, w/o aux LM) x tasks x seeds
    transfer_*   Figure 2 left: 0 .. n_layer-1 transferred blocks (n_layer is the full model's run)
    zeroshot_*   Figure 2 right: the section-5 heuristics on every kept pre-training checkpoint
    report       results.json, results.md, figures, commands.sh

Every fine-tuning and zero-shot number comes from running a `gptkit` command (the CLI runs them in its
own process; the library, without a runner given, in a fresh `python -m gptkit`), and that command line
is recorded next to the number: anyone can re-run one cell. Each finished stage leaves `stages/<name>.json`;
a re-run skips those, and an interrupted fine-tuning or pre-training run resumes from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..builtin_data import read_jsonl
from ..builtin_data.derived import DERIVED_TASKS, build_derived, example_sentences, normalize, split_sentences
from ..builtin_data.fetcher import Downloader
from ..builtin_data.registry import Dataset
from ..demo import Demo, DemoInterrupted
from ..demo.pipeline import SPLITS, cpu_seconds
from ..errors import GptkitError
from .commands import (
    CommandRunner,
    ReproduceInterrupted,
    run_gptkit,
    subprocess_runner,
    task_type,
    write_json,
    write_jsonl,
)
from .settings import ARMS, BUILTIN, TITLES, ZEROSHOT, ReproduceSettings

log = logging.getLogger(__name__)

class Reproduction:
    """One reproduction in `out`; `run()` executes the stages not finished yet and returns the results."""

    def __init__(self, settings: ReproduceSettings, out: str | Path, *, init: str | Path | None = None,
                 cache_dir: str | Path | None = None, threads: int | None = None, progress: bool = True,
                 downloader: Downloader | None = None, registry: dict[str, Dataset] | None = None,
                 runner: CommandRunner = subprocess_runner) -> None:
        self.settings = settings
        self.runner = runner
        self.out = Path(out)
        self.init = Path(init).resolve() if init is not None else None
        self.threads = threads
        self.progress = progress
        # The demo's stages write the data, tokenizer, corpus and runs/pretrain into the same folder.
        self.demo = Demo(settings.demo_settings(), self.out, cache_dir=cache_dir, progress=progress,
                         downloader=downloader, registry=registry, keep_checkpoints=settings.pretrain_checkpoints)
        self.outputs: dict[str, dict[str, Any]] = {}

    # --- paths ---------------------------------------------------------------------------------------
    def task_dir(self, task: str) -> Path:
        return self.out / "tasks" / task

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def marker(self, stage: str) -> Path:
        return self.out / "stages" / f"{stage}.json"

    @property
    def lm_run_dir(self) -> Path | None:
        """The pre-training run directory whose checkpoints the zero-shot curve reads (None: a bare model)."""
        if self.init is None:
            return self.demo.run_dir("pretrain")
        for candidate in (self.init / "runs" / "pretrain", self.init):  # a demo folder, or a pre-training run
            if (candidate / "checkpoints").is_dir():
                return candidate
        return None

    @property
    def lm_model_dir(self) -> Path:
        from ..tasks.build import resolve_model_dir

        if self.init is None:
            return self.demo.run_dir("pretrain") / "model"
        demo_run = self.init / "runs" / "pretrain"
        return resolve_model_dir(demo_run if demo_run.is_dir() else self.init)

    # --- driver --------------------------------------------------------------------------------------
    def check_settings(self) -> None:
        """A folder holds one reproduction: resuming it with other settings would mix two experiments."""
        path = self.out / "settings.json"
        wanted = json.loads(json.dumps({"reproduce": self.settings.to_dict(), "init": str(self.init) if self.init else None,
                                        "demo": self.demo.settings.to_dict()}))
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved != wanted:
                raise GptkitError(
                    f"{path}: this folder holds a reproduction with other settings (profile "
                    f"{saved.get('reproduce', {}).get('profile')!r}, init {saved.get('init')!r}); choose another --out, "
                    "or delete the folder to start over")
        else:
            write_json(path, wanted)

    def stage_list(self) -> list[tuple[str, str, Callable[[], dict[str, Any]]]]:
        """The stages, in order. The fine-tuning and zero-shot stages depend on the model (its depth,
        its checkpoints), so the list is built once the LM stages have run."""
        stages: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
            ("data", "fetch the built-in data and write the pre-training text (the demo's)", self.demo.stage_data)]
        if self.init is None:
            stages += [
                ("tokenizer", "train the BPE tokenizer (the demo's)", self.demo.stage_tokenizer),
                ("prepare", "tokenize the pre-training text into shards", self.demo.stage_prepare),
                ("pretrain", f"pre-train the LM, keeping {self.settings.pretrain_checkpoints} checkpoints",
                 self.demo.stage_pretrain),
            ]
        stages += [("tasks", "write the task files (built-in + derived), check them against the pre-training text",
                    self.stage_tasks),
                   ("baselines", "majority-class and TF-IDF + logistic-regression baselines", self.stage_baselines)]
        return stages

    def later_stages(self) -> list[tuple[str, str, Callable[[], dict[str, Any]]]]:
        from ..interop.hf import read_config

        s = self.settings
        stages = []
        for arm, arm_title in ARMS.items():
            for task in s.tasks:
                for seed in s.seeds:
                    stages.append((f"finetune_{arm}_{task}_s{seed}",
                                   f"Table 5: {TITLES[task]}, {arm_title.format(lm_coef=s.lm_coef)}, seed {seed}",
                                   lambda a=arm, t=task, sd=seed: self.stage_finetune(a, t, sd)))
        n_layer = read_config(self.lm_model_dir)[0].n_layer
        for task in s.transfer_tasks:
            for k in range(n_layer):
                stages.append((f"transfer_{task}_L{k}", f"Figure 2 left: {TITLES[task]}, {k} of {n_layer} blocks transferred",
                               lambda t=task, n=k: self.stage_transfer(t, n)))
        for step, model_dir in self.zeroshot_models():
            name, when = (f"zeroshot_step{step:06d}", f"after {step:,} updates") if step is not None else \
                ("zeroshot_model", "of the --init model")
            stages.append((name, f"Figure 2 right: zero-shot heuristics {when}",
                           lambda st=step, d=model_dir: self.stage_zeroshot(st, d)))
        return stages

    def expected_later_stages(self) -> int:
        """How many stages follow the LM's (exact once the LM exists; before, from the demo's settings)."""
        if self.init is not None or (self.lm_model_dir / "config.json").is_file():
            return len(self.later_stages())
        s = self.settings
        n_layer = int(self.demo.settings.model["n_layer"])
        return len(ARMS) * len(s.tasks) * len(s.seeds) + len(s.transfer_tasks) * n_layer + s.pretrain_checkpoints + 1

    def run(self) -> dict[str, Any]:
        from ..baseline import MISSING_SKLEARN, have_sklearn
        from .report import write_report

        if not have_sklearn():  # Table 5's TF-IDF row: say so before an hour of pre-training, not after
            raise GptkitError(MISSING_SKLEARN)
        self.out.mkdir(parents=True, exist_ok=True)
        self.check_settings()
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        first = self.stage_list()
        self._run_stages(first, 0, len(first) + self.expected_later_stages() + 1)
        later = self.later_stages()
        self._run_stages(later, len(first), len(first) + len(later) + 1)
        total = len(first) + len(later) + 1
        log.info("[%d/%d] write results.json, results.md, the figures and commands.sh", total, total)
        return write_report(self, self.outputs)

    def _run_stages(self, stages, offset: int, total: int) -> None:
        for i, (name, title, fn) in enumerate(stages, start=offset + 1):
            where = f"[{i}/{total}]"
            marker = self.marker(name)
            if marker.is_file():
                self.outputs[name] = json.loads(marker.read_text(encoding="utf-8"))
                log.info("%s %s: done in an earlier run, skipped", where, title)
                continue
            log.info("%s %s ...", where, title)
            started, cpu_started = time.perf_counter(), cpu_seconds()
            try:
                result = fn()
            except DemoInterrupted as e:
                raise ReproduceInterrupted(str(e), e.signal_name) from None
            result["seconds"] = round(time.perf_counter() - started, 1)
            if cpu_started is not None:
                result["cpu_seconds"] = round(cpu_seconds() - cpu_started, 1)
            write_json(marker, result)
            self.outputs[name] = result
            log.info("%s %s: %.0f s", where, title, result["seconds"])

    # --- tasks ---------------------------------------------------------------------------------------
    def pretrain_sentences(self) -> set[str]:
        """Every sentence (and line) of the pre-training text, normalised: what a test passage must avoid."""
        out: set[str] = set()
        for path in sorted((self.demo.data_dir / "pretrain").glob("*.jsonl")):
            for record in read_jsonl(path):
                for line in record["text"].split("\n"):
                    out.add(normalize(line))
                    out.update(normalize(s) for s in split_sentences(line))
        return out

    def stage_tasks(self) -> dict[str, Any]:
        s = self.settings
        data = self.outputs["data"]
        wiki = Path(data["sources"]["wikipedia"]) / "documents.jsonl"
        pretrain_text = self.pretrain_sentences()
        derived_names = sorted({t for t in s.tasks if t in DERIVED_TASKS} | {"derived_word_order", "derived_next_sentence"})
        derived, stats = build_derived(read_jsonl(wiki), derived_names, exclude=pretrain_text)
        written: dict[str, Any] = {}
        for task in dict.fromkeys([*s.tasks, "derived_word_order", "derived_next_sentence"]):
            dropped = 0
            if task in BUILTIN:
                splits = {split: read_jsonl(self.demo.data_dir / "tasks" / task / f"{split}.jsonl") for split in SPLITS}
                # The demo keeps these tasks' test texts out of pre-training; a test text that is ALSO
                # found elsewhere in the pre-training text (a short review sentence repeated verbatim
                # among the opinion snippets, say) is dropped here, so no test text was ever read.
                kept = [r for r in splits["test"] if normalize(r["text"]) not in pretrain_text]
                dropped, splits["test"] = len(splits["test"]) - len(kept), kept
            else:
                splits = derived[task]
                dropped = stats["tasks"][task]["dropped_overlapping"]
            rng = random.Random(f"{task}:{s.train_limit}:{s.val_limit}")
            limits = {"train": s.train_limit, "validation": s.val_limit, "test": None}
            sizes = {}
            for split, rows in splits.items():
                limit = limits[split]
                if limit is not None and len(rows) > limit:
                    rows = rng.sample(rows, limit)
                if not rows:
                    raise GptkitError(f"task {task}: no {split} examples (the source data is too small)")
                write_jsonl(self.task_dir(task) / f"{split}.jsonl", rows)
                sizes[split] = len(rows)
            overlap = self._test_overlap(task, pretrain_text)
            if overlap:
                raise GptkitError(f"task {task}: {overlap} test examples contain a sentence of the pre-training text")
            written[task] = {"type": task_type(task), "title": TITLES[task], "sizes": sizes, "dropped_overlap": dropped,
                             "labels": sorted({str(r["label"]) for r in read_jsonl(self.task_dir(task) / "train.jsonl")}),
                             "derived": task in DERIVED_TASKS}
        write_json(self.out / "tasks" / "derived_meta.json", stats)
        return {"tasks": written, "derived": stats}

    def _test_overlap(self, task: str, pretrain_text: set[str]) -> int:
        rows = read_jsonl(self.task_dir(task) / "test.jsonl")
        if task in DERIVED_TASKS:
            texts = [example_sentences(r, DERIVED_TASKS[task]) for r in rows]
        else:
            texts = [[r["text"]] for r in rows]
        if task == "derived_word_order":
            return 0  # scrambled sentences are new text; their originals were checked by build_derived
        return sum(any(normalize(t) in pretrain_text for t in ts) for ts in texts)

    def baseline_argv(self, task: str) -> list[str]:
        d = self.task_dir(task)
        return ["baseline", "--task", task_type(task), "--train", str(d / "train.jsonl"),
                "--val", str(d / "validation.jsonl"), "--test", str(d / "test.jsonl"), "--json"]

    def stage_baselines(self) -> dict[str, Any]:
        """`gptkit baseline` on each task's files: the same training subset, validation (which picks C)
        and test split as the fine-tuned rows."""
        out = {}
        for task in self.settings.tasks:
            argv = self.baseline_argv(task)
            result = json.loads(run_gptkit(self.runner, argv, self.out / "logs" / f"baseline_{task}.txt"))
            tfidf, majority = result["tfidf"], result["majority"]
            out[task] = {"majority": majority["test"]["accuracy"], "tfidf": tfidf["test"]["accuracy"],
                         "majority_label": majority["label"], "C": tfidf["C"], "search": tfidf["search"],
                         "val": {"majority": majority["val"]["accuracy"], "tfidf": tfidf["val"]["accuracy"]},
                         "test_examples": result["examples"]["test"], "command": shlex.join(["gptkit", *argv])}
        return out

    # --- fine-tuning ---------------------------------------------------------------------------------
    def finetune_argv(self, task: str, run_dir: Path, *, seed: int, lm_coef: float, no_pretrain: bool = False,
                      transfer: int | None = None) -> list[str]:
        from ..interop.hf import read_config

        s = self.settings
        d = self.task_dir(task)
        n_ctx = read_config(self.lm_model_dir)[0].n_ctx
        argv = ["finetune", "--task", task_type(task), "--train", str(d / "train.jsonl"),
                "--val", str(d / "validation.jsonl"), "--test", str(d / "test.jsonl"), "--out", str(run_dir),
                "--init", str(self.lm_model_dir)]
        if no_pretrain:
            argv.append("--no-pretrain")
        if transfer is not None:
            argv += ["--transfer-layers", str(transfer)]
        argv += ["--lm-coef", f"{lm_coef:g}", "--epochs", f"{s.epochs:g}", "--batch-size", str(s.batch_size),
                 "--lr", f"{s.lr:g}", "--max-len", str(min(n_ctx, s.max_len.get(task, n_ctx))),
                 "--evals-per-epoch", str(s.evals_per_epoch), "--seed", str(seed), "--quiet"]
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        return argv

    def _finetune(self, name: str, argv: list[str]) -> dict[str, Any]:
        run_dir = self.run_dir(name)
        # The recorded command starts afresh (--overwrite); this process continues a half-finished run.
        command = shlex.join(["gptkit", *argv, "--overwrite"])
        run_gptkit(self.runner, argv + (["--resume"] if (run_dir / "checkpoints").is_dir() else ["--overwrite"]),
                   self.out / "logs" / f"{name}.txt")
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        if summary.get("stopped_by") is not None:
            raise ReproduceInterrupted(f"fine-tuning {name} stopped by {summary['stopped_by']}", summary["stopped_by"])
        # Finished: its resume state is no longer needed (best/, metrics.jsonl and summary.json stay).
        # Dozens of runs would otherwise keep gigabytes of optimizer state.
        for leftover in ("checkpoints", "model"):
            shutil.rmtree(run_dir / leftover, ignore_errors=True)
        return {"command": command, "run_dir": str(run_dir), "steps": summary["steps"],
                "examples": summary["examples"], "best_step": summary.get("best_step"),
                "val_accuracy": (summary.get("val") or {}).get("accuracy"),
                "test_accuracy": (summary.get("test") or {}).get("accuracy")}

    def stage_finetune(self, arm: str, task: str, seed: int) -> dict[str, Any]:
        name = f"{arm}_{task}_s{seed}"
        argv = self.finetune_argv(task, self.run_dir(name), seed=seed, no_pretrain=arm == "no_pretrain",
                                  lm_coef=0.0 if arm == "no_aux" else self.settings.lm_coef)
        return {"arm": arm, "task": task, "seed": seed, **self._finetune(name, argv)}

    def stage_transfer(self, task: str, layers: int) -> dict[str, Any]:
        name = f"transfer_{task}_L{layers}"
        seed = self.settings.seeds[0]
        argv = self.finetune_argv(task, self.run_dir(name), seed=seed, lm_coef=self.settings.lm_coef, transfer=layers)
        return {"task": task, "layers": layers, "seed": seed, **self._finetune(name, argv)}

    # --- zero-shot -----------------------------------------------------------------------------------
    def zeroshot_models(self) -> list[tuple[int | None, Path]]:
        """(pre-training updates, model directory): a random initialisation of the LM's shape (0 updates),
        then every kept checkpoint of the pre-training run, or the --init model alone (updates unknown)."""
        from ..training.checkpoint import CheckpointManager

        points: list[tuple[int | None, Path]] = [(0, self.out / "lm_init")]
        run = self.lm_run_dir
        if run is not None:
            points += [(step, path) for step, path in CheckpointManager(run).complete() if step > 0]
        else:
            points.append((None, self.lm_model_dir))
        return points

    def _write_init_model(self) -> Path:
        """The 0-updates point: the LM's architecture with the pre-training run's initial weights (the
        run seeds torch with its seed before building the model), and its tokenizer."""
        import torch

        from ..interop.hf import read_config, save_pretrained
        from ..model import GPT
        from ..tokenizer import GPTTokenizer

        target = self.out / "lm_init"
        if (target / "config.json").is_file():
            return target
        config = read_config(self.lm_model_dir)[0]
        torch.manual_seed(self.demo.settings.seed)
        tmp = target.with_name(".lm_init.tmp")
        save_pretrained(GPT(config), tmp)
        GPTTokenizer.load(self.lm_model_dir).save(tmp)
        tmp.rename(target)
        return target

    def zeroshot_data(self) -> dict[str, Path]:
        """Capped copies of the test (and, for the threshold, train) files the heuristics score."""
        s = self.settings
        files = {}
        for key, (task, split) in {"sentiment": ("sentiment", "test"), "acceptability": ("derived_word_order", "test"),
                                   "acceptability_train": ("derived_word_order", "train"),
                                   "multiple_choice": ("derived_next_sentence", "test")}.items():
            path = self.out / "zeroshot" / "data" / f"{key}.jsonl"
            if not path.is_file():
                rows = read_jsonl(self.task_dir(task) / f"{split}.jsonl")
                rows = random.Random(f"zeroshot:{key}").sample(rows, min(len(rows), s.zeroshot_limit))
                write_jsonl(path, rows)
            files[key] = path
        return files

    def zeroshot_argv(self, heuristic: str, model_dir: Path, files: dict[str, Path]) -> list[str]:
        argv = ["zeroshot", str(model_dir), "--task", heuristic, "--data", str(files[heuristic])]
        if heuristic == "acceptability":
            argv += ["--train", str(files["acceptability_train"]), "--acceptable-label", "original"]
        return argv + ["--batch-size", str(self.settings.zeroshot_batch), "--json", "--quiet"]

    def stage_zeroshot(self, step: int | None, model_dir: Path) -> dict[str, Any]:
        if step == 0:
            model_dir = self._write_init_model()
        files = self.zeroshot_data()
        results = {}
        for heuristic in ZEROSHOT:
            argv = self.zeroshot_argv(heuristic, model_dir, files)
            printed = run_gptkit(self.runner, argv, self.out / "logs" / f"zeroshot_{step if step is not None else 'model'}_{heuristic}.txt")
            report = json.loads(printed)
            results[heuristic] = {"accuracy": report["accuracy"], "examples": report["examples"],
                                  "command": shlex.join(["gptkit", *argv]),
                                  **({"matthews": report["matthews"]} if "matthews" in report else {})}
        return {"step": step, "model_dir": str(model_dir), "heuristics": results}
