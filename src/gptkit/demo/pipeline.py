"""`gptkit demo`: the paper's recipe end to end on the built-in data, resumable stage by stage.

host probe -> fetch -> baselines -> tokenizer -> prepare shards -> pre-train -> fine-tune
{sentiment, topics} x {pre-trained, from scratch} -> samples -> report. Each finished stage leaves `stages/<name>.json` (its outputs and
wall time) in the output folder; a re-run skips those stages, and an interrupted pre-training or
fine-tuning run continues from its last checkpoint through the training loop's resume.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..builtin_data import fetch_many, read_jsonl
from ..builtin_data.fetcher import Downloader
from ..builtin_data.registry import Dataset
from ..data.overlap import drop_overlapping
from ..errors import GptkitError
from ..jsonio import read_json
from .report import write_report
from .settings import INITS, TASKS, DemoSettings

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
PROMPTS = ("This movie is", "The river flows", "In mathematics, a", "The best thing about")


def cpu_seconds() -> float | None:
    """CPU time of this process and its finished children: on a shared machine it shows the work a
    stage took when the wall time is inflated by other programs."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class DemoInterrupted(KeyboardInterrupt):
    """A training stage stopped on a signal after saving a checkpoint; re-running resumes it."""

    def __init__(self, message: str, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


OPINION_GROUP = 64
"""Sentences per pre-training document of opinion text (consecutive lines of the source)."""


def _opinion_documents(sentences: list[str], repeat: int, rng: random.Random) -> list[str]:
    """Short opinion sentences grouped into documents of OPINION_GROUP, each holding `repeat` copies
    of its group (later copies shuffled). All copies of a sentence sit in ONE document, so the
    corpus's per-document train/validation split cannot put a copy on each side; after shuffling,
    a sentence's next copy is usually further away than the model's context window."""
    documents = []
    for start in range(0, len(sentences), OPINION_GROUP):
        group = sentences[start: start + OPINION_GROUP]
        copies = [group] + [rng.sample(group, len(group)) for _ in range(repeat - 1)]
        documents.append("\n".join(line for copy in copies for line in copy))
    return documents


class Demo:
    """One demo run in `out`; `run()` executes the stages not finished yet and returns the results."""

    def __init__(self, settings: DemoSettings, out: str | Path, *, cache_dir: str | Path | None = None,
                 progress: bool = True, downloader: Downloader | None = None,
                 registry: dict[str, Dataset] | None = None, keep_checkpoints: int | None = None) -> None:
        self.settings = settings
        # None: the demo's own checkpoints (one every quarter of pre-training, the last 3 kept); N: one
        # every 1/N of pre-training, all N kept (`gptkit reproduce` reads them for its zero-shot curve).
        self.keep_checkpoints = keep_checkpoints
        self.out = Path(out)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.progress = progress
        self.downloader = downloader
        self.registry = registry
        self.stages: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
            ("host", "measure this machine's matmul ceilings and choose the precision", self.stage_host),
            ("data", "fetch the built-in data and write the demo's inputs", self.stage_data),
            ("baselines", "fit the majority-class and TF-IDF + logistic-regression baselines", self.stage_baselines),
            ("tokenizer", "train the BPE tokenizer on the pre-training text", self.stage_tokenizer),
            ("prepare", "tokenize the pre-training text into shards", self.stage_prepare),
            ("pretrain", "pre-train the language model", self.stage_pretrain),
        ]
        for task in TASKS:
            for init in INITS:
                how = "from the pre-trained model" if init == "pretrained" else "from scratch (no pre-training)"
                self.stages.append((f"finetune_{task}_{init}", f"fine-tune {TASKS[task]['title']} {how}",
                                    lambda t=task, i=init: self.stage_finetune(t, i)))
        self.stages.append(("samples", "generate samples from the pre-trained model", self.stage_samples))

    # --- paths ---------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    @property
    def tokenizer_dir(self) -> Path:
        return self.out / "tokenizer"

    @property
    def corpus_dir(self) -> Path:
        return self.out / "corpus"

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def marker(self, stage: str) -> Path:
        return self.out / "stages" / f"{stage}.json"

    # --- driver --------------------------------------------------------------------------------------
    def check_settings(self) -> None:
        """A folder holds one demo: resuming it with other settings would mix two experiments."""
        path = self.out / "settings.json"
        wanted = self.settings.to_dict()
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved != json.loads(json.dumps(wanted)):
                raise GptkitError(
                    f"{path}: this folder holds a demo run with other settings (profile {saved.get('profile')!r}); "
                    "choose another --out, or delete the folder to start over"
                )
        else:
            _write_json(path, wanted)

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.check_settings()
        outputs: dict[str, dict[str, Any]] = {}
        n = len(self.stages) + 1
        for i, (name, title, fn) in enumerate(self.stages, start=1):
            marker = self.marker(name)
            if marker.is_file():
                outputs[name] = json.loads(marker.read_text(encoding="utf-8"))
                log.info("[%d/%d] %s: done in an earlier run, skipped", i, n, title)
                continue
            log.info("[%d/%d] %s ...", i, n, title)
            started, cpu_started = time.perf_counter(), cpu_seconds()
            result = fn()
            result["seconds"] = round(time.perf_counter() - started, 1)
            if cpu_started is not None:
                result["cpu_seconds"] = round(cpu_seconds() - cpu_started, 1)
            _write_json(marker, result)
            outputs[name] = result
            log.info("[%d/%d] %s: %.0f s", i, n, title, result["seconds"])
        log.info("[%d/%d] write results.json, the table and the plots", n, n)
        return write_report(self, outputs)

    @property
    def host(self) -> dict[str, Any]:
        """What the host probe found: the device and the precision (fp32 or bf16) every training stage uses.
        A caller that runs single stages (`gptkit reproduce`) gets the probe run and recorded on first use."""
        marker = self.marker("host")
        if not marker.is_file():
            _write_json(marker, self.stage_host())
        return json.loads(marker.read_text(encoding="utf-8"))

    @property
    def precision(self) -> str:
        return self.host["precision"]

    # --- stages --------------------------------------------------------------------------------------
    def stage_host(self) -> dict[str, Any]:
        from ..model import GPTConfig
        from .host import probe_host

        s = self.settings
        config = GPTConfig(vocab_size=s.vocab_size, **s.model)
        return probe_host(s.precision, config, s.pretrain_batch, s.pretrain_steps)

    def stage_data(self) -> dict[str, Any]:
        s = self.settings
        # the two tasks' datasets always; the others only when the LM reads them
        needed = ["wikipedia", "movie_reviews"]
        needed += [name for source, name in (("shakespeare", "shakespeare"), ("opinion", "opinion_snippets"),
                                             ("imdb", "imdb_reviews"))
                   if source in s.pretrain_sources]
        dirs = fetch_many(needed, self.cache_dir, downloader=self.downloader, registry=self.registry)
        rng = random.Random(s.seed)
        plays = read_jsonl(dirs["shakespeare"] / "documents.jsonl") if "shakespeare" in dirs else []
        articles = read_jsonl(dirs["wikipedia"] / "documents.jsonl")
        # The topic task's validation and test articles never enter pre-training: the LM must not have
        # read the texts the best checkpoint is chosen on or scored on (the same rule as for the reviews).
        held_out = [a for a in articles if a.get("topic_split") in ("validation", "test")]
        articles = [a for a in articles if a.get("topic_split") not in ("validation", "test")]
        # In-domain unlabelled text for the sentiment task, as the paper's recipe allows: the review
        # sentences of the TRAIN split only (their labels dropped), plus the study's other opinion
        # snippets. Validation and test review sentences never enter pre-training.
        reviews = read_jsonl(dirs["movie_reviews"] / "train.jsonl")
        unseen = {r["text"] for split in ("validation", "test")
                  for r in read_jsonl(dirs["movie_reviews"] / f"{split}.jsonl")}
        reviews = [r for r in reviews if r["text"] not in unseen]  # a sentence repeated across splits stays out
        snippets = read_jsonl(dirs["opinion_snippets"] / "documents.jsonl") if "opinion_snippets" in dirs else []
        # Whole user reviews from another site: none is a task example, but a review can quote a critic's
        # sentence that is one, so any review sharing an 8-word run with a held-out example stays out.
        imdb = read_jsonl(dirs["imdb_reviews"] / "documents.jsonl") if "imdb_reviews" in dirs else []
        if s.pretrain_doc_limit is not None:
            plays, articles = plays[: s.pretrain_doc_limit], articles[: s.pretrain_doc_limit]
            reviews, snippets = reviews[: s.pretrain_doc_limit], snippets[: s.pretrain_doc_limit]
            imdb = imdb[: s.pretrain_doc_limit]
        imdb_overlapping = 0
        if imdb:
            kept, imdb_overlapping = drop_overlapping([d["text"] for d in imdb], unseen | {a["text"] for a in held_out})
            imdb = [{"text": t} for t in kept]
        sources = {"shakespeare": plays, "wikipedia": articles, "reviews": reviews, "opinion": snippets, "imdb": imdb}
        sources = {name: docs for name, docs in sources.items() if name in s.pretrain_sources}
        for name, docs in sources.items():
            texts = [d["text"] for d in docs]
            if name in ("reviews", "opinion"):
                texts = _opinion_documents(texts, s.opinion_repeat, random.Random(s.seed))
            _write_jsonl(self.data_dir / "pretrain" / f"{name}.jsonl", [{"text": t} for t in texts])
        tasks: dict[str, dict[str, int]] = {}
        for task, info in TASKS.items():
            source = dirs[info["dataset"]] / info["subdir"]
            tasks[task] = {}
            for split in SPLITS:
                records = [{"text": r["text"], "label": r["label"]} for r in read_jsonl(source / f"{split}.jsonl")]
                if split == "train" and s.train_limit is not None and len(records) > s.train_limit:
                    records = rng.sample(records, s.train_limit)
                _write_jsonl(self.data_dir / "tasks" / task / f"{split}.jsonl", records)
                tasks[task][split] = len(records)
            tasks[task]["labels"] = len({r["label"] for r in read_jsonl(source / "train.jsonl")})
        return {
            "pretrain_documents": {name: len(docs) for name, docs in sources.items()},
            "pretrain_words": sum(len(d["text"].split()) for docs in sources.values() for d in docs),
            "held_out_articles": len(held_out),
            "held_out_review_sentences": len(unseen),
            "imdb_reviews_overlapping_held_out": imdb_overlapping,
            "tasks": tasks,
            "sources": {name: str(path) for name, path in dirs.items()},
        }

    def stage_baselines(self) -> dict[str, Any]:
        """What the labelled examples alone give, on exactly the files the GPT arms are fine-tuned on."""
        from ..baseline import MISSING_SKLEARN, BaselineConfig, have_sklearn, run_baselines

        if not have_sklearn():  # the demo still runs; its table says why the columns are empty
            log.warning("%s; the demo's baseline columns stay empty", MISSING_SKLEARN)
            return {"missing": MISSING_SKLEARN}
        out: dict[str, Any] = {}
        for task in TASKS:
            data = self.data_dir / "tasks" / task
            out[task] = run_baselines(BaselineConfig(task="classification", train=data / "train.jsonl",
                                                     val=data / "validation.jsonl", test=data / "test.jsonl"))
        return out

    def _pretrain_texts(self):
        # Paragraph-sized pieces: the BPE trainer counts words per piece, and a whole play is one huge piece.
        for path in sorted((self.data_dir / "pretrain").glob("*.jsonl")):
            for record in read_jsonl(path):
                yield from (p for p in record["text"].split("\n\n") if p.strip())

    def stage_tokenizer(self) -> dict[str, Any]:
        from ..tokenizer import train_from_texts

        s = self.settings
        tok = train_from_texts(self._pretrain_texts(), s.vocab_size, s.tokenizer_style, show_progress=self.progress)
        tok.save(self.tokenizer_dir)
        return {"vocab_size": tok.vocab_size, "style": s.tokenizer_style, "path": str(self.tokenizer_dir)}

    def stage_prepare(self) -> dict[str, Any]:
        from ..data.prepare import PrepareOptions, prepare_corpus

        s = self.settings
        opts = PrepareOptions(val_fraction=s.val_fraction, seed=s.seed, overwrite=True, show_progress=self.progress)
        meta = prepare_corpus([self.data_dir / "pretrain"], self.tokenizer_dir, self.corpus_dir, opts)
        return {"documents": meta.get("documents"), "tokens": {k: v["tokens"] for k, v in meta["splits"].items()},
                "split_documents": {k: v["documents"] for k, v in meta["splits"].items()}}

    def stage_pretrain(self) -> dict[str, Any]:
        from ..interop.hf import load_pretrained
        from ..model import GPTConfig
        from ..tokenizer import GPTTokenizer
        from ..training.pretrain import PretrainOptions, pretrain, pretrain_loop

        s = self.settings
        run_dir = self.run_dir("pretrain")
        tok = GPTTokenizer.load(self.tokenizer_dir)
        config = GPTConfig(vocab_size=tok.vocab_size, **s.model)
        config_path = self.out / "model_config.json"
        _write_json(config_path, config.to_dict())
        loop = pretrain_loop(max_steps=s.pretrain_steps, precision=self.precision, device=self.host["device"],
                             eval_every=s.eval_every,
                             checkpoint_every=max(1, s.pretrain_steps // (self.keep_checkpoints or 4)),
                             keep_last=self.keep_checkpoints or 3, log_every=max(1, min(10, s.pretrain_steps // 20)),
                             seed=s.seed, progress=self.progress)
        opts = PretrainOptions(
            data=self.corpus_dir, out=run_dir, preset=None, config=config_path, batch_size=s.pretrain_batch,
            lr=s.pretrain_lr, warmup=s.pretrain_warmup, resume=run_dir.exists(), eval_windows=s.eval_windows,
            train=loop,
        )
        result = pretrain(opts)
        if result.stopped_by is not None:
            raise DemoInterrupted(f"pre-training stopped by {result.stopped_by} at step {result.step}",
                                  result.stopped_by)
        model = load_pretrained(run_dir / "model")
        return {
            "steps": result.step, "batch_size": s.pretrain_batch, "seq_len": config.n_ctx,
            "tokens_seen": result.step * s.pretrain_batch * config.n_ctx,
            "val_loss": result.last_eval.get("val_loss"), "val_ppl": result.last_eval.get("val_ppl"),
            "final_train_loss": next((r["loss"] for r in reversed(result.history) if r.get("loss") is not None), None),
            "parameters": model.num_parameters(), "config": config.to_dict(), "model_dir": str(run_dir / "model"),
            "precision": self.precision,
        }

    def stage_finetune(self, task: str, init: str) -> dict[str, Any]:
        from ..tasks.config import FinetuneConfig
        from ..tasks.finetune import finetune

        s = self.settings
        data = self.data_dir / "tasks" / task
        run_dir = self.run_dir(f"{task}_{init}")
        cfg = FinetuneConfig(
            task="classification", train=data / "train.jsonl", val=data / "validation.jsonl", test=data / "test.jsonl",
            out=run_dir, init=self.run_dir("pretrain"), no_pretrain=init == "scratch", lm_coef=s.lm_coef,
            epochs=s.topic_epochs if task == "topics" else s.finetune_epochs, batch_size=s.finetune_batch, lr=s.finetune_lr,
            max_len=s.sentiment_max_len if task == "sentiment" else s.topic_max_len,
            evals_per_epoch=s.evals_per_epoch, seed=s.seed, precision=self.precision, device=self.host["device"],
            resume=run_dir.exists(), progress=self.progress,
        )
        summary = finetune(cfg)
        if summary.get("stopped_by") is not None:
            raise DemoInterrupted(f"fine-tuning {task} ({init}) stopped by {summary['stopped_by']}",
                                  summary["stopped_by"])
        predictions = summary.get("test_predictions")
        return {"task": task, "init": init, "examples": summary["examples"], "labels": summary["labels"],
                "steps": summary["steps"], "truncated": summary["truncated"], "best_step": summary["best_step"],
                "val": summary.get("val"), "test": summary.get("test"), "run_dir": str(run_dir),
                "test_predictions": read_json(predictions) if predictions else None}

    def stage_samples(self) -> dict[str, Any]:
        import torch

        from ..generation import GenerationConfig, generate
        from ..interop.loading import load_model_and_tokenizer
        s = self.settings
        model_dir = self.run_dir("pretrain") / "model"
        model, tok = load_model_and_tokenizer(model_dir)
        prompts = list(PROMPTS[: s.samples])
        config = GenerationConfig(max_new_tokens=s.sample_tokens, temperature=0.8, top_k=40, seed=s.seed,
                                  stop_ids=(tok.eot_id,))
        with torch.no_grad():
            completions = generate(model, [tok.encode(p) for p in prompts], config)
        return {"settings": {"temperature": 0.8, "top_k": 40, "max_new_tokens": s.sample_tokens, "seed": s.seed},
                "samples": [{"prompt": p, "completion": tok.decode(c.ids)} for p, c in zip(prompts, completions)]}
