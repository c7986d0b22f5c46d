"""The yardstick a fine-tuned GPT has to beat: what a user would build from the labelled data alone.

Two baselines, read from the same task files as `gptkit finetune` and scored with the same metrics:

- majority class: always the most frequent training label (regression: the mean training label);
- TF-IDF + logistic regression: word 1-2 grams, sublinear term frequency, an L2-regularised
  logistic regression (ridge regression for real-valued labels) whose strength C is chosen on the
  validation file (on 5-fold cross-validation of the training file when there is none), never on test.

Pair tasks (entailment, similarity) are bags of words of the two texts joined. scikit-learn does the
fitting (the `baseline` extra); nothing here re-implements it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GptkitError
from .tasks.metrics import default_metric, task_metrics
from .tasks.spec import Example, TaskSpec, load_examples

C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
"""Inverse regularisation strengths tried for TF-IDF + logistic regression (ridge: alpha = 1 / C)."""
LOWER_IS_BETTER = ("loss", "mse")


@dataclass
class BaselineConfig:
    task: str
    train: str | Path
    val: str | Path | None = None
    test: str | Path | None = None
    columns: dict[str, str] = field(default_factory=dict)
    regression: bool = False
    metric: str | None = None
    """Validation metric that picks C (default: accuracy; pearson for regression)."""
    c_grid: tuple[float, ...] = C_GRID
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task == "multiple_choice":
            raise GptkitError("gptkit baseline: multiple-choice tasks have no bag-of-words baseline here; "
                              "use classification, entailment or similarity")
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise GptkitError(f"--c {list(self.c_grid)}: every value must be positive")


MISSING_SKLEARN = "the baselines need scikit-learn: pip install 'gptkit[baseline]'"


def have_sklearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


def _sklearn():
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.model_selection import KFold, StratifiedKFold
    except ImportError:
        raise GptkitError(MISSING_SKLEARN) from None
    return TfidfVectorizer, LogisticRegression, Ridge, KFold, StratifiedKFold


def example_text(example: Example) -> str:
    """One bag of words per example: a pair task's two texts joined."""
    return " ".join(t for t in example.texts if t)


class TfidfModel:
    """TF-IDF features (fit on the training texts only) and a linear model on them, refitted along an
    ascending path of C values: each fit starts from the previous solution (warm start), which makes the
    whole search about as costly as one cold fit at the smallest C."""

    def __init__(self, regression: bool, seed: int) -> None:
        TfidfVectorizer, LogisticRegression, Ridge, _, _ = _sklearn()
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self.model = Ridge() if regression else LogisticRegression(max_iter=2000, warm_start=True, random_state=seed)
        self.regression = regression
        self.features = None

    def fit_features(self, texts: list[str]) -> TfidfModel:
        self.features = self.vectorizer.fit_transform(texts)
        return self

    def fit(self, c: float, labels: np.ndarray) -> TfidfModel:
        self.model.set_params(**({"alpha": 1.0 / c} if self.regression else {"C": c}))
        self.model.fit(self.features, labels)
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.model.predict(self.vectorizer.transform(texts))


def _score(spec: TaskSpec, pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    return task_metrics(spec.task, pred, gold, n_classes=len(spec.labels or []) or None, regression=spec.regression)


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric in LOWER_IS_BETTER else a > b


def _cv_score(cfg: BaselineConfig, spec: TaskSpec, metric: str, c: float, texts: list[str], gold: np.ndarray) -> float:
    """Mean validation metric over 5 folds of the training set (when no validation file is given)."""
    _, _, _, KFold, StratifiedKFold = _sklearn()
    n_splits = 5
    if not spec.regression:
        n_splits = min(n_splits, int(np.bincount(gold.astype(np.int64)).min()))
    if n_splits < 2:
        raise GptkitError(f"{cfg.train}: too few examples of some label to choose C by cross-validation; pass --val")
    folds = (KFold if spec.regression else StratifiedKFold)(n_splits=n_splits, shuffle=True, random_state=cfg.seed)
    scores = []
    for tr, va in folds.split(np.zeros(len(gold)), gold):
        model = TfidfModel(spec.regression, cfg.seed).fit_features([texts[i] for i in tr]).fit(c, gold[tr])
        scores.append(_score(spec, model.predict([texts[i] for i in va]), gold[va])[metric])
    return float(np.mean(scores))


def run_baselines(cfg: BaselineConfig) -> dict[str, Any]:
    """Fit both baselines on `cfg.train`, choose C on `cfg.val`, score on val and test.

    Returns {"task", "labels", "examples", "metric", "majority": {...}, "tfidf": {...}}; each baseline
    holds its "val" and "test" metrics (when those files are given)."""
    spec = TaskSpec(task=cfg.task, columns=dict(cfg.columns), regression=cfg.regression)
    train = load_examples(spec, cfg.train, infer=True)
    splits = {"val": cfg.val, "test": cfg.test}
    data = {"train": train, **{k: load_examples(spec, p) for k, p in splits.items() if p is not None}}
    texts = {k: [example_text(e) for e in v] for k, v in data.items()}
    gold = {k: np.asarray([e.label for e in v], dtype=np.float64 if spec.regression else np.int64)
            for k, v in data.items()}
    metric = cfg.metric or default_metric(spec.task, spec.regression)
    probe = _score(spec, gold["train"][:2], gold["train"][:2])
    if metric not in probe:
        raise GptkitError(f"--metric {metric}: not a metric of this task (choose one of {', '.join(probe)})")

    if spec.regression:
        constant = float(gold["train"].mean())
        majority: dict[str, Any] = {"prediction": constant}
    else:
        counts = np.bincount(gold["train"], minlength=len(spec.labels or []))
        constant = int(counts.argmax())  # ties: the first label in sorted order
        majority = {"label": (spec.labels or [])[constant]}
    for k in splits:
        if k in data:
            majority[k] = _score(spec, np.full(len(gold[k]), constant), gold[k])

    search: dict[str, float] = {}
    best: tuple[float, float, TfidfModel] | None = None  # (C, metric, a copy of the model fitted with it)
    path = TfidfModel(spec.regression, cfg.seed).fit_features(texts["train"]) if "val" in data else None
    for c in sorted(cfg.c_grid):
        if path is not None:
            value = _score(spec, path.fit(c, gold["train"]).predict(texts["val"]), gold["val"])[metric]
        else:
            value = _cv_score(cfg, spec, metric, c, texts["train"], gold["train"])
        search[f"{c:g}"] = value
        if best is None or _better(metric, value, best[1]):
            best = (c, value, copy.deepcopy(path) if path is not None else None)
    assert best is not None
    final = best[2] or TfidfModel(spec.regression, cfg.seed).fit_features(texts["train"]).fit(best[0], gold["train"])
    tfidf: dict[str, Any] = {
        "C": best[0], "chosen_on": "validation" if "val" in data else "5-fold cross-validation of train",
        "search": search, "features": len(final.vectorizer.vocabulary_),
    }
    for k in splits:
        if k in data:
            tfidf[k] = _score(spec, final.predict(texts[k]), gold[k])
    return {
        "task": spec.task, "labels": spec.labels, "regression": spec.regression,
        "examples": {k: len(v) for k, v in data.items()}, "metric": metric,
        "majority": majority, "tfidf": tfidf,
    }
