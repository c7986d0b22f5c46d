"""The demo's results: `results.json`, a printed table (metric, split, sizes, wall time per stage),
and the plots. Every number comes from the stage outputs of this run; nothing is typed in."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Protocol

from ..atomic import atomic_write_text
from .settings import INITS, TASKS, DemoSettings


class Demo(Protocol):
    """What the report reads of a demo run (`pipeline.Demo`, which calls the report)."""

    settings: DemoSettings
    out: Path

    def run_dir(self, name: str) -> Path: ...

log = logging.getLogger(__name__)

STAGE_TITLES = {"host": "probe the machine", "data": "fetch data", "baselines": "baselines (TF-IDF, majority)", "tokenizer": "train tokenizer", "prepare": "prepare shards",
                "pretrain": "pre-train", "samples": "samples"}


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _difference_interval(p1: float, p2: float, n: int) -> float:
    """Half-width of an approximate 95% interval for a difference of two accuracies on n examples
    (normal approximation, treating the two as independent: conservative for the same test set). Used
    when the per-example predictions are not at hand (a run directory from before they were written)."""
    return 1.96 * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / max(1, n))


def _paired_interval(pred_a: list, pred_b: list, gold: list) -> float:
    """Half-width of an approximate 95% interval for the difference of two models' accuracies on the
    same test examples: the mean of d_i = right_a(i) - right_b(i) has standard error sd(d) / sqrt(n).
    The examples both models get right (or both wrong) add no noise to the difference, so this is
    narrower than the independent form, and is the interval that a comparison on one test set has."""
    d = [float(a == y) - float(b == y) for a, b, y in zip(pred_a, pred_b, gold, strict=True)]
    n = len(d)
    if n < 2:
        return float("nan")
    mean = sum(d) / n
    return 1.96 * math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n)


ARMS = ("pretrained", "scratch", "tfidf", "majority")
ARM_TITLES = {"pretrained": "pre-trained", "scratch": "from scratch", "tfidf": "TF-IDF + LR",
              "majority": "majority class"}


def _task_entry(task: str, runs: dict[str, dict[str, Any]], baselines: dict[str, Any] | None) -> dict[str, Any]:
    """One task's row: test and validation accuracy of every arm, and the two differences that matter
    (pre-trained minus from scratch, pre-trained minus TF-IDF) with their 95% intervals."""
    acc = {init: (runs[init].get("test") or {}).get("accuracy") for init in INITS}
    val = {init: (runs[init].get("val") or {}).get("accuracy") for init in INITS}
    n_test = runs["pretrained"]["examples"].get("test", 0)
    entry: dict[str, Any] = {
        "title": TASKS[task]["title"], "classes": len(runs["pretrained"]["labels"] or []),
        "metric": "accuracy", "split": "test", "examples": runs["pretrained"]["examples"],
        "steps": runs["pretrained"]["steps"],
    }
    for arm in ("tfidf", "majority"):
        acc[arm] = val[arm] = None
        if baselines is not None:
            acc[arm] = baselines[arm]["test"]["accuracy"]
            val[arm] = baselines[arm]["val"]["accuracy"]
    if baselines is not None:
        entry["tfidf"] = {k: baselines["tfidf"][k] for k in ("C", "chosen_on", "search", "features")}
        entry["majority_label"] = baselines["majority"]["label"]
        entry["baseline_examples"] = baselines["examples"]
    entry["test_accuracy"], entry["val_accuracy"] = acc, val
    preds = {init: runs[init].get("test_predictions") for init in INITS}
    if baselines is not None:
        preds["tfidf"] = baselines["tfidf"].get("test_predictions")
    gold = (preds["pretrained"] or {}).get("labels")
    for key, other in (("difference", "scratch"), ("vs_tfidf", "tfidf")):
        if acc["pretrained"] is not None and acc[other] is not None:
            entry[key] = acc["pretrained"] - acc[other]
            theirs = preds.get(other) or {}
            if gold is not None and theirs.get("labels") == gold:
                entry[f"{key}_95"] = _paired_interval(preds["pretrained"]["predictions"], theirs["predictions"], gold)
                entry[f"{key}_interval"] = "paired"
            else:
                entry[f"{key}_95"] = _difference_interval(acc["pretrained"], acc[other], n_test)
                entry[f"{key}_interval"] = "independent"
    return entry


def build_results(demo: Demo, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    s = demo.settings
    pre = outputs["pretrain"]
    baselines = outputs.get("baselines") or {}
    tasks = {task: _task_entry(task, {init: outputs[f"finetune_{task}_{init}"] for init in INITS}, baselines.get(task))
             for task in TASKS}
    stage_seconds = {name: outputs[name].get("seconds", 0.0) for name in outputs}
    stage_cpu = {name: outputs[name].get("cpu_seconds") for name in outputs}
    return {
        "profile": s.profile,
        "settings": s.to_dict(),
        "machine": machine_description(),
        "host": {k: v for k, v in outputs["host"].items() if k not in ("seconds", "cpu_seconds")},
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": outputs["data"],
        "baselines_missing": baselines.get("missing"),
        "tokenizer": outputs["tokenizer"],
        "corpus": outputs["prepare"],
        "pretrain": {k: v for k, v in pre.items() if k != "seconds"},
        "tasks": tasks,
        "samples": outputs["samples"]["samples"],
        "stage_seconds": stage_seconds,
        "total_seconds": round(sum(stage_seconds.values()), 1),
        "stage_cpu_seconds": stage_cpu,
        "total_cpu_seconds": round(sum(stage_cpu.values()), 1) if None not in stage_cpu.values() else None,
        "verdict": verdict(tasks),
    }


def _points(entry: dict[str, Any], key: str) -> str:
    return f"{100 * entry[key]:+.1f} (±{100 * entry[key + '_95']:.1f})"


def verdict(tasks: dict[str, Any]) -> str:
    """Two judgements per task, each naming every task. Against from scratch, a difference larger than
    its 95% interval counts as helping (or hurting), a smaller one is reported as within noise, not as a
    win. Against TF-IDF + LR, the pre-trained model beats it when its accuracy is at least as high."""
    helped, noise, hurt, missing = [], [], [], []
    for entry in tasks.values():
        if "difference" not in entry:
            missing.append(entry["title"])
            continue
        d, ci = entry["difference"], entry["difference_95"]
        (helped if d > ci else hurt if d < -ci else noise).append(f"{entry['title']} {_points(entry, 'difference')}")
    parts = []
    if helped:
        parts.append(f"pre-training helped (pre-trained minus from scratch, points, 95% interval) on {'; '.join(helped)}")
    if noise:
        parts.append(f"pre-training did NOT clearly help (within noise) on {'; '.join(noise)}")
    if hurt:
        parts.append(f"pre-training hurt on {'; '.join(hurt)}")
    if missing:
        parts.append(f"no test accuracy for {', '.join(missing)}")
    beat = [f"{e['title']} {_points(e, 'vs_tfidf')}" for e in tasks.values() if e.get("vs_tfidf", -1) >= 0]
    lost = [f"{e['title']} {_points(e, 'vs_tfidf')}" for e in tasks.values() if e.get("vs_tfidf", 0) < 0]
    if beat:
        parts.append(f"the pre-trained GPT matched or beat TF-IDF + LR on the same labelled examples on {'; '.join(beat)}")
    if lost:
        parts.append(f"the pre-trained GPT did NOT beat TF-IDF + LR on the same labelled examples on {'; '.join(lost)}")
    if not beat and not lost:
        parts.append("no TF-IDF + LR baseline (scikit-learn not installed)")
    return ". ".join([parts[0]] + [p[0].upper() + p[1:] for p in parts[1:]])


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _pretraining_text(docs: dict[str, int], data: dict[str, Any], settings: dict[str, Any]) -> str:
    """What the LM read, one part per source it read (`docs`: documents per source)."""
    parts = []
    if "shakespeare" in docs:
        parts.append(f"Shakespeare ({docs['shakespeare']} works)")
    if "wikipedia" in docs:
        parts.append(f"Wikipedia leads ({docs['wikipedia']:,} articles; the {data['held_out_articles']:,} "
                     "topic-task validation/test articles held out)")
    if "reviews" in docs:
        parts.append(f"{docs['reviews']:,} movie-review TRAIN sentences without labels (the "
                     f"{data.get('held_out_review_sentences', 0):,} validation/test ones held out)")
    if "opinion" in docs:
        parts.append(f"{docs['opinion']:,} tweets, product-review and editorial snippets")
    if "imdb" in docs:
        parts.append(f"{docs['imdb']:,} IMDB user reviews without labels (the "
                     f"{data.get('imdb_reviews_overlapping_held_out', 0):,} sharing 8 words with a validation/test "
                     "example held out)")
    repeat = settings.get("opinion_repeat", 1)
    if repeat > 1 and ("reviews" in docs or "opinion" in docs):
        return " + ".join(parts) + f"; the review sentences and snippets x{repeat}"
    return " + ".join(parts)


def _bf16_ceiling(host: dict[str, Any]) -> str:
    """The header's bf16 ceiling: measured, or why not (a CPU that emulates bf16: demo/host.py)."""
    if host.get("bf16_gflops") is None:
        return f"bf16 emulated ({host.get('bf16_matmul_speed', 0):.2f}x fp32's rate: no bf16 units)"
    return f"{host['bf16_gflops']:,.0f} GFLOP/s bf16"


def format_table(results: dict[str, Any]) -> str:
    pre, data, corpus = results["pretrain"], results["data"], results["corpus"]
    cfg = pre["config"]
    docs = data["pretrain_documents"]
    train_tokens = corpus["tokens"].get("train", 0)
    host = results["host"]
    order = cfg.get("block_order", "post_ln")
    lines = [
        f"gptkit demo ({results['profile']} profile), {_fmt_seconds(results['total_seconds'])} on {results['machine']}",
        f"host: {host.get('device_name', 'cpu')}, matmul ceilings {host['fp32_gflops']:,.0f} GFLOP/s fp32, {_bf16_ceiling(host)} "
        f"({host['threads']} threads); precision {host['precision']} ({host['reason']})",
        f"model: GPT ({order.replace('_', '-').replace('ln', 'LN')} blocks"
        + (" (GPT-2's order; GPT-1's post-LN trained worse at this budget, see docs/demo.md)" if order == "pre_ln" else "")
        + ", "
        f"{cfg.get('activation', 'gelu').upper()}, tied LM head), {cfg['n_layer']} layers x {cfg['n_embd']}, "
        f"{cfg['n_head']} heads, n_ctx {cfg['n_ctx']}, {pre['parameters'] / 1e6:.2f}M parameters; "
        f"BPE vocabulary {results['tokenizer']['vocab_size']:,} ({results['tokenizer']['style']} style)",
        "pre-training text: " + _pretraining_text(docs, data, results["settings"])
        + f" = {train_tokens:,} train / {corpus['tokens'].get('val', 0):,} validation tokens",
        f"pre-training: {pre['steps']:,} steps x {pre['batch_size']} x {pre['seq_len']} tokens = "
        f"{pre['tokens_seen']:,} tokens ({pre['tokens_seen'] / max(1, train_tokens):.2f} epochs)",
        "",
        "| task | metric (split) | train / val / test examples | " + " | ".join(ARM_TITLES[a] for a in ARMS)
        + " | pre-trained - from scratch (95% CI) | pre-trained - TF-IDF (95% CI) |",
        "|---|---|---|" + "---|" * (len(ARMS) + 2),
    ]
    fmt = lambda v: f"{100 * v:.1f}%" if v is not None else "n/a"  # noqa: E731
    for entry in results["tasks"].values():
        ex = entry["examples"]
        acc = entry["test_accuracy"]
        diffs = [f"{_points(entry, key)} points" if key in entry else "n/a" for key in ("difference", "vs_tfidf")]
        lines.append(f"| {entry['title']} ({entry['classes']} classes) | accuracy (test) | "
                     f"{ex.get('train', 0):,} / {ex.get('val', 0):,} / {ex.get('test', 0):,} | "
                     + " | ".join(fmt(acc.get(a)) for a in ARMS) + " | " + " | ".join(diffs) + " |")
    ppl = pre.get("val_ppl")
    lines.append(f"| language model | perplexity (validation, {corpus['tokens'].get('val', 0):,} held-out tokens) | "
                 f"{train_tokens:,} tokens | {ppl:.1f} | {cfg['vocab_size']:,} (uniform guess) | | | | |"
                 if ppl is not None else "| language model | perplexity (validation) | | n/a | | | | | |")
    if results.get("baselines_missing"):
        lines.append(f"(TF-IDF + LR and majority class: n/a, {results['baselines_missing']})")
    kinds = {e.get(f"{k}_interval") for e in results["tasks"].values() for k in ("difference", "vs_tfidf")} - {None}
    if kinds == {"paired"}:
        lines.append("(differences in points; 95% intervals paired over the test examples: both models are scored "
                     "on the same examples, and those both get right or both get wrong add no noise)")
    elif kinds:
        lines.append("(differences in points; 95% intervals paired over the test examples where both runs' "
                     "predictions are at hand, else treating the two accuracies as independent, which is wider)")
    cpu = results.get("stage_cpu_seconds") or {}
    fmt_cpu = lambda v: _fmt_seconds(v) if v is not None else "n/a"  # noqa: E731
    lines += ["", "| stage | wall time | CPU time (all threads) |", "|---|---|---|"]
    for name, seconds in results["stage_seconds"].items():
        title = STAGE_TITLES.get(name) or name.replace("finetune_", "fine-tune ").replace("_", " ")
        lines.append(f"| {title} | {_fmt_seconds(seconds)} | {fmt_cpu(cpu.get(name))} |")
    lines.append(f"| total | {_fmt_seconds(results['total_seconds'])} | {fmt_cpu(results.get('total_cpu_seconds'))} |")
    lines.append("(CPU time below wall time means the machine was shared with other work; a stage that "
                 "uses several cores shows more CPU time than wall time)")
    lines += ["", f"verdict: {results['verdict']}", "", "samples from the pre-trained LM (temperature 0.8, top-k 40):"]
    for sample in results["samples"]:
        lines.append(f"  {sample['prompt']!r} -> {sample['completion']!r}")
    return "\n".join(lines)


def write_plots(demo: Demo, results: dict[str, Any]) -> list[str]:
    """Pre-training loss, fine-tuning curves, and the accuracy comparison, as PNG files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plots (pip install 'gptkit[plot]')")
        return []
    from ..training import read_metrics

    plots_dir = demo.out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []

    records = read_metrics(demo.run_dir("pretrain"))
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", markersize=4)
    ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", title="pre-training")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, plots_dir / "pretrain_loss.png", plt))

    fig, axes = plt.subplots(2, len(TASKS), figsize=(6 * len(TASKS), 7), squeeze=False)
    for col, task in enumerate(TASKS):
        for init, color in zip(INITS, ("tab:blue", "tab:orange")):
            recs = read_metrics(demo.run_dir(f"{task}_{init}"))
            loss = [(r["step"], r["loss"]) for r in recs if r.get("loss") is not None]
            acc = [(r["step"], r["val_accuracy"]) for r in recs if r.get("val_accuracy") is not None]
            if loss:
                axes[0][col].plot(*zip(*loss), color=color, linewidth=1, label=init)
            if acc:
                axes[1][col].plot(*zip(*acc), "o-", color=color, markersize=4, label=init)
        axes[0][col].set(title=f"{TASKS[task]['title']}: training loss (task + {demo.settings.lm_coef} x LM)",
                         xlabel="step")
        axes[1][col].set(title=f"{TASKS[task]['title']}: validation accuracy", xlabel="step")
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.3)
            ax.legend()
    written.append(_save(fig, plots_dir / "finetune_curves.png", plt))

    fig, ax = plt.subplots(figsize=(8, 4))
    names = [results["tasks"][t]["title"] for t in TASKS]
    width = 0.2
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:gray")
    for k, (arm, color) in enumerate(zip(ARMS, colors)):
        values = [results["tasks"][t]["test_accuracy"][arm] for t in TASKS]
        if None in values:
            continue
        bars = ax.bar([i + (k - 1.5) * width for i in range(len(names))], [100 * v for v in values], width,
                      color=color, label=ARM_TITLES[arm])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="test accuracy (%)", title="fine-tuned GPT with vs without pre-training, and the baselines",
           ylim=(0, 100))
    ax.legend(loc="lower right", fontsize=8)
    written.append(_save(fig, plots_dir / "accuracy_comparison.png", plt))
    return written


def _save(fig, path: Path, plt) -> str:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return str(path)


def write_report(demo: Demo, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    results = build_results(demo, outputs)
    results["plots"] = write_plots(demo, results)
    results["table"] = format_table(results)
    atomic_write_text(demo.out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(demo.out / "results.md", results["table"] + "\n")
    return results
