"""`gptkit baseline --task TYPE --train F --val F --test F`: the majority-class and TF-IDF + logistic
regression yardsticks for a task, from the same files and with the same metrics as `gptkit finetune`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .finetune import add_column_args, format_metrics


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "baseline", help="majority-class and TF-IDF + logistic-regression baselines for a task (no GPT)",
        description="What a fine-tuned GPT has to beat: the majority class, and TF-IDF (word 1-2 grams, "
                    "sublinear tf) + logistic regression (ridge for real-valued labels) with C chosen on --val "
                    "(5-fold cross-validation of --train without it). Pair tasks: the two texts joined. Multiple "
                    "choice: a right/wrong regression on context + each candidate joined; the best-scoring wins. "
                    "Needs scikit-learn (pip install 'gptkit[baseline]'). See docs/finetuning.md.")
    p.add_argument("--task", required=True, choices=("classification", "entailment", "similarity", "multiple_choice"),
                   help="task type")
    p.add_argument("--train", required=True, type=Path, help="training file (.jsonl, .csv, .tsv, .parquet, or a saved dataset)")
    p.add_argument("--val", type=Path, help="validation file: chooses C")
    p.add_argument("--test", type=Path, help="test file, scored once with the chosen C")
    add_column_args(p)
    p.add_argument("--label-base", type=int, default=0,
                   help="multiple choice: index of the first candidate in the label column (Story Cloze: 1)")
    p.add_argument("--regression", action="store_true", help="real-valued labels (inferred from non-integer labels)")
    p.add_argument("--metric", help="validation metric that chooses C (accuracy; pearson for regression; also f1, "
                                    "matthews, spearman, mse)")
    p.add_argument("--c", type=float, nargs="+", default=None, metavar="C",
                   help="values of C to try (default 1 3 10 30 100)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..baseline import C_GRID, BaselineConfig, run_baselines
    from ..tasks.spec import parse_column_overrides

    cfg = BaselineConfig(task=args.task, train=args.train, val=args.val, test=args.test,
                         columns=parse_column_overrides(args.column), regression=args.regression,
                         label_base=args.label_base, metric=args.metric, c_grid=tuple(args.c) if args.c else C_GRID)
    result = run_baselines(cfg)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    ex = result["examples"]
    print(f"task {result['task']}: " + ", ".join(f"{k} {v} examples" for k, v in ex.items()))
    if result.get("labels"):
        print(f"labels: {', '.join(result['labels'])}")
    majority, tfidf = result["majority"], result["tfidf"]
    if "label" not in majority:
        what = f"always {majority['prediction']:.4g}"
    elif result["task"] == "multiple_choice":
        what = f"always candidate {majority['label']}"
    else:
        what = f"always {majority['label']!r}"
    print(f"majority class ({what}):")
    for split in ("val", "test"):
        if split in majority:
            print(f"  {split + ':':5} {format_metrics(majority[split])}")
    search = ", ".join(f"C={c} {v:.4f}" for c, v in tfidf["search"].items())
    print(f"TF-IDF (1-2 grams, {tfidf['features']:,} features) + "
          f"{'ridge' if result['regression'] else 'logistic'} regression, C={tfidf['C']:g} "
          f"chosen by {result['metric']} on {tfidf['chosen_on']} ({search}):")
    for split in ("val", "test"):
        if split in tfidf:
            print(f"  {split + ':':5} {format_metrics(tfidf[split])}")
    return 0
