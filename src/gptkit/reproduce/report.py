"""The reproduction's results: Table 5 with 95% intervals, Figure 2 (left and right) as tables and
PNGs, results.json, results.md and commands.sh. Every number comes from this run's stage outputs.

Intervals. A fine-tuned cell is the mean test accuracy over its seeds; its 95% interval is
1.96 x sqrt(p(1 - p) / n + s^2 / k): the sampling error of a test set of n examples (normal
approximation) plus the seed-to-seed variance s^2 of the k seeds' accuracies (nothing for k = 1). The
baselines are deterministic: test-set error only. The average column's interval combines the tasks'
variances as independent (sqrt of their sum, over the number of tasks).
"""

from __future__ import annotations

import logging
import math
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_write_json
from ..demo.report import _fmt_seconds, machine_description
from .settings import ARMS, TITLES, ZEROSHOT

if TYPE_CHECKING:
    from .pipeline import Reproduction

log = logging.getLogger(__name__)

PAPER_TABLE5 = {"full": 74.7, "no_pretrain": 59.9, "no_aux": 75.0}
"""The paper's Table 5 averages over its GLUE-style tasks (not comparable in level: other tasks, other scale)."""
BASELINES = {"tfidf": "TF-IDF + logistic regression", "majority": "majority class"}


def cell(accuracies: list[float], n: int) -> dict[str, Any]:
    """Mean accuracy over seeds and its 95% half-width (test-set sampling + seed variance)."""
    k = len(accuracies)
    p = sum(accuracies) / k
    seed_var = sum((a - p) ** 2 for a in accuracies) / (k - 1) if k > 1 else 0.0
    var = p * (1 - p) / max(1, n) + seed_var / k
    return {"mean": p, "ci95": 1.96 * math.sqrt(var), "var": var, "seeds": accuracies, "n_test": n}


def average(cells: list[dict[str, Any]]) -> dict[str, Any]:
    t = len(cells)
    return {"mean": sum(c["mean"] for c in cells) / t, "ci95": 1.96 * math.sqrt(sum(c["var"] for c in cells)) / t}


def build_results(repro: Reproduction, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    s = repro.settings
    tasks = outputs["tasks"]["tasks"]
    table: dict[str, Any] = {}
    for arm in ARMS:
        row: dict[str, Any] = {}
        for task in s.tasks:
            runs = [outputs[f"finetune_{arm}_{task}_s{seed}"] for seed in s.seeds]
            row[task] = {**cell([r["test_accuracy"] for r in runs], runs[0]["examples"]["test"]),
                         "commands": [r["command"] for r in runs]}
        row["average"] = average([row[t] for t in s.tasks])
        table[arm] = row
    for name in BASELINES:
        row = {}
        for task in s.tasks:
            b = outputs["baselines"][task]
            row[task] = {**cell([b[name]], b["test_examples"]), "commands": [b["command"]]}
        row["average"] = average([row[t] for t in s.tasks])
        table[name] = row

    seed = s.seeds[0]
    left = {}
    for task in s.transfer_tasks:
        layers = sorted(int(k.rsplit("_L", 1)[1]) for k in outputs if k.startswith(f"transfer_{task}_L"))
        full = outputs[f"finetune_full_{task}_s{seed}"]
        scratch = outputs[f"finetune_no_pretrain_{task}_s{seed}"]
        points = [{"layers": k, "accuracy": outputs[f"transfer_{task}_L{k}"]["test_accuracy"],
                   "command": outputs[f"transfer_{task}_L{k}"]["command"]} for k in layers]
        n_layer = len(layers)
        points.append({"layers": n_layer, "accuracy": full["test_accuracy"], "command": full["command"],
                       "note": "full transfer = the full model's Table 5 run (same seed)"})
        left[task] = {"title": TITLES[task], "points": points, "seed": seed,
                      "scratch": {"accuracy": scratch["test_accuracy"], "command": scratch["command"]},
                      "n_test": full["examples"]["test"]}

    right: dict[str, Any] = {}
    zs = sorted((o for k, o in outputs.items() if k.startswith("zeroshot_")),
                key=lambda o: math.inf if o["step"] is None else o["step"])
    for heuristic, info in ZEROSHOT.items():
        right[heuristic] = {"title": info["title"], "task": info["task"], "chance": info["chance"],
                            "points": [{"step": o["step"], **o["heuristics"][heuristic]} for o in zs]}

    stage_seconds = {name: o.get("seconds", 0.0) for name, o in outputs.items()}
    stage_cpu = {name: o.get("cpu_seconds") for name, o in outputs.items()}
    pre = outputs.get("pretrain")
    return {
        "profile": s.profile,
        "settings": s.to_dict(),
        "demo_settings": repro.demo.settings.to_dict(),
        "init": str(repro.init) if repro.init else None,
        "lm": {"model_dir": str(repro.lm_model_dir),
               **({k: pre[k] for k in ("steps", "val_ppl", "parameters", "config") if k in pre} if pre else {})},
        "machine": machine_description(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "tasks": tasks,
        "table5": table,
        "figure2_left": left,
        "figure2_right": right,
        "stage_seconds": stage_seconds,
        "total_seconds": round(sum(stage_seconds.values()), 1),
        "stage_cpu_seconds": stage_cpu,
        "total_cpu_seconds": round(sum(stage_cpu.values()), 1) if None not in stage_cpu.values() else None,
    }


def _pct(c: dict[str, Any] | None) -> str:
    return "n/a" if c is None or c.get("mean") is None else f"{100 * c['mean']:.1f} ± {100 * c['ci95']:.1f}"


def format_table(results: dict[str, Any]) -> str:
    s = results["settings"]
    tasks = s["tasks"]
    lm = results["lm"]
    lines = [f"gptkit reproduce ({results['profile']} profile), {_fmt_seconds(results['total_seconds'])} "
             f"(CPU {_fmt_seconds(results['total_cpu_seconds'] or 0)}) on {results['machine']}"]
    if "steps" in lm:
        cfg = lm["config"]
        lines.append(f"LM: pre-trained here (the demo's {results['demo_settings']['profile']} profile): {lm['steps']:,} "
                     f"updates, {cfg['n_layer']} layers x {cfg['n_embd']}, {lm['parameters'] / 1e6:.2f}M parameters, "
                     f"validation perplexity {lm['val_ppl']:.1f}")
    else:
        lines.append(f"LM: {lm['model_dir']} (--init)")
    seeds = s["seeds"]
    lines += [
        "",
        f"Table 5 (test accuracy %, mean over {len(seeds)} fine-tuning seed{'s' if len(seeds) > 1 else ''} "
        f"({', '.join(map(str, seeds))}) ± 95% interval; {s['train_limit']:,} training examples per task):",
        "",
        "| method | " + " | ".join(results["tasks"][t]["title"] for t in tasks) + " | average |",
        "|---|" + "---|" * (len(tasks) + 1),
    ]
    for arm, row in results["table5"].items():
        title = ARMS[arm].format(lm_coef=s["lm_coef"]) if arm in ARMS else BASELINES[arm]
        lines.append(f"| {title} | " + " | ".join(_pct(row[t]) for t in tasks) + f" | {_pct(row['average'])} |")
    sizes = ", ".join(f"{results['tasks'][t]['title']} {results['tasks'][t]['sizes']['test']:,}" for t in tasks)
    lines += [f"(test examples: {sizes}; chance: 4-way multiple choice 25%, the others 50% or less; the paper's "
              f"averages over its GLUE tasks: full {PAPER_TABLE5['full']}, w/o pre-training {PAPER_TABLE5['no_pretrain']}, "
              f"w/o aux LM {PAPER_TABLE5['no_aux']})", ""]

    lines.append("Figure 2 left (test accuracy % by transferred blocks; 0 = embeddings only; seed "
                 f"{s['seeds'][0]}):")
    for entry in results["figure2_left"].values():
        pts = ", ".join(f"{p['layers']}: {100 * p['accuracy']:.1f}" for p in entry["points"])
        lines.append(f"  {entry['title']}: from scratch {100 * entry['scratch']['accuracy']:.1f}; {pts} (full transfer)")
    lines += ["", "Figure 2 right (zero-shot accuracy % by pre-training updates; step 0 = random init):"]
    for entry in results["figure2_right"].values():
        pts = ", ".join(f"{'the --init model' if p['step'] is None else p['step']}: {100 * p['accuracy']:.1f}" for p in entry["points"])
        lines.append(f"  {entry['title']} (chance {100 * entry['chance']:.0f}): {pts}")
    lines += ["  (no Winograd-style point: no built-in dataset holds Winograd schemas; "
              "`gptkit zeroshot --task winograd` scores your own)", ""]
    cpu = results.get("stage_cpu_seconds") or {}
    groups: dict[str, list[float]] = {}
    for name, sec in results["stage_seconds"].items():
        key = name.split("_")[0] if name.startswith(("finetune_", "transfer_", "zeroshot_")) else name
        groups.setdefault(key, [0.0, 0.0])
        groups[key][0] += sec
        groups[key][1] += cpu.get(name) or 0.0
    lines += ["| stage | wall time | CPU time |", "|---|---|---|"]
    lines += [f"| {k} | {_fmt_seconds(w)} | {_fmt_seconds(c)} |" for k, (w, c) in groups.items()]
    lines.append("(commands.sh lists the exact command behind every number)")
    return "\n".join(lines)


def write_figures(repro: Reproduction, results: dict[str, Any]) -> list[str]:
    from ..demo.report import _save
    from ..errors import GptkitError
    from ..inspect.plots import _pyplot

    try:
        plt = _pyplot()
    except GptkitError as e:
        log.warning("no figures: %s", e)
        return []

    out = repro.out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for entry in results["figure2_left"].values():
        xs = [p["layers"] for p in entry["points"]]
        ys = [100 * p["accuracy"] for p in entry["points"]]
        (line,) = ax.plot(xs, ys, "o-", label=entry["title"])
        ax.plot(xs[-1], ys[-1], "*", markersize=14, color=line.get_color())
        ax.axhline(100 * entry["scratch"]["accuracy"], linestyle=":", color=line.get_color())
    ax.plot([], [], "*", color="gray", markersize=12, label="full transfer (Table 5's full model)")
    ax.plot([], [], ":", color="gray", label="from scratch (no pre-training)")
    ax.set(xlabel="pre-trained blocks transferred (0 = embeddings only)", ylabel="test accuracy (%)",
           title="Figure 2 (left): transfer of pre-trained blocks")
    ax.set_xticks(range(0, len(next(iter(results["figure2_left"].values()))["points"])) if results["figure2_left"] else [])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "figure2_left.png", plt))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for entry in results["figure2_right"].values():
        pts = [p for p in entry["points"] if p["step"] is not None]
        (line,) = ax.plot([p["step"] for p in pts], [100 * p["accuracy"] for p in pts], "o-", label=entry["title"])
        ax.axhline(100 * entry["chance"], linestyle="--", linewidth=1, color=line.get_color())
    ax.plot([], [], "--", color="gray", label="chance")
    ax.set(xlabel="pre-training updates", ylabel="zero-shot accuracy (%)",
           title="Figure 2 (right): zero-shot heuristics during pre-training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "figure2_right.png", plt))
    return written


def write_commands(repro: Reproduction, results: dict[str, Any]) -> Path:
    lines = ["#!/bin/sh", "# The exact commands behind every number of results.md (paths as gptkit reproduce was given them:",
             "# run from the directory it ran in).", ""]
    if repro.init is None:
        lines += ["# The LM comes from the first stages of `gptkit reproduce` itself: the demo's data, tokenizer, corpus and",
                  f"# pre-training code with the demo's {repro.demo.settings.profile!r} settings, keeping "
                  f"{repro.settings.pretrain_checkpoints} checkpoints. No single gptkit command equals",
                  "# them; this redoes them (and, resumed, everything else): " + shlex.join(
                      ["gptkit", "reproduce", "--profile", results["profile"], "--out", str(repro.out)]), ""]
    for arm, row in results["table5"].items():
        for task in repro.settings.tasks:
            for i, command in enumerate(row[task]["commands"]):
                if arm in ARMS:
                    lines += [f"# Table 5, {arm}, {task}, seed {repro.settings.seeds[i]}", command]
                elif arm == "tfidf":  # one `gptkit baseline` command prints both baseline rows
                    lines += [f"# Table 5, TF-IDF + logistic regression and majority class, {task}", command]
    for entry in results["figure2_left"].values():
        for p in entry["points"][:-1]:
            lines += [f"# Figure 2 left, {entry['title']}, {p['layers']} blocks", p["command"]]
    for entry in results["figure2_right"].values():
        for p in entry["points"]:
            lines += [f"# Figure 2 right, {entry['title']}, step {p['step']}", p["command"]]
    path = repro.out / "commands.sh"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_report(repro: Reproduction, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    results = build_results(repro, outputs)
    results["figures"] = write_figures(repro, results)
    results["commands_file"] = str(write_commands(repro, results))
    results["table"] = format_table(results)
    atomic_write_json(repro.out / "results.json", results)
    (repro.out / "results.md").write_text(results["table"] + "\n", encoding="utf-8")
    return results
