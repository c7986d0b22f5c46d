"""The yardstick a fine-tuned GPT has to beat: what a user would build from the labelled data alone.

Two baselines, read from the same task files as `gptkit finetune` and scored with the same metrics:

- majority class: always the most frequent training label (regression: the mean training label);
- TF-IDF + logistic regression: word 1-2 grams, sublinear term frequency, an L2-regularised
  logistic regression (ridge regression for real-valued labels) whose strength C is chosen on the
  validation file (on 5-fold cross-validation of the training file when there is none), never on test.

Pair tasks (entailment, similarity) are bags of words of the two texts joined. Multiple choice is a
binary "is this the right answer" logistic regression on the bag of words of context (+ question) and
one candidate joined, fitted on every candidate of every training example; an example's prediction is
its highest-scoring candidate, and its majority class the most frequent position of the right answer.
scikit-learn does the fitting (the `baseline` extra); nothing here re-implements it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GptkitError
from .tasks.examples import Example
from .tasks.spec import TaskSpec
from .tasks.taskfile import load_examples, load_training_examples

C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
"""Inverse regularisation strengths tried for TF-IDF + logistic regression (ridge: alpha = 1 / C)."""


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
    label_base: int = 0
    """Multiple choice: the index of the first candidate in the label column (as `finetune --label-base`)."""

    def __post_init__(self) -> None:
        # `not c > 0` (not `c <= 0`): NaN compares false to everything and reached scikit-learn.
        if not self.c_grid or any(not (math.isfinite(c) and c > 0) for c in self.c_grid):
            raise GptkitError(f"--c {' '.join(map(str, self.c_grid))}: every value must be a positive, finite "
                              f"number")


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


def candidate_texts(example: Example) -> list[str]:
    """Multiple choice: one bag of words per candidate, the context (and question) joined with it."""
    stem = example_text(example)
    return [f"{stem} {choice}" for choice in example.choices]


class TfidfModel:
    """TF-IDF features (fit on the training texts only) and a linear model on them, refitted along an
    ascending path of C values: each fit starts from the previous solution (warm start), which makes the
    whole search about as costly as one cold fit at the smallest C.

    With `choices`, each example is its candidates (`candidate_texts`), the model a binary right/wrong
    regression over all of them, and the prediction the index of the example's highest-scoring one."""

    def __init__(self, regression: bool, seed: int, *, choices: bool = False) -> None:
        TfidfVectorizer, LogisticRegression, Ridge, _, _ = _sklearn()
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self.model = Ridge() if regression else LogisticRegression(max_iter=2000, warm_start=True, random_state=seed)
        self.regression = regression
        self.choices = choices
        self.features = None

    def _texts(self, examples: list[Example]) -> list[str]:
        if self.choices:
            return [t for e in examples for t in candidate_texts(e)]
        return [example_text(e) for e in examples]

    def fit_features(self, examples: list[Example]) -> TfidfModel:
        self.features = self.vectorizer.fit_transform(self._texts(examples))
        self.n_choices = len(examples[0].choices) if self.choices else 0
        return self

    def fit(self, c: float, labels: np.ndarray) -> TfidfModel:
        if self.choices:  # answer index -> one right (1) / wrong (0) target per candidate
            labels = (np.arange(self.n_choices)[None, :] == labels[:, None]).astype(np.int64).ravel()
        self.model.set_params(**({"alpha": 1.0 / c} if self.regression else {"C": c}))
        self.model.fit(self.features, labels)
        return self

    def predict(self, examples: list[Example]) -> np.ndarray:
        x = self.vectorizer.transform(self._texts(examples))
        if self.choices:
            return self.model.decision_function(x).reshape(len(examples), -1).argmax(axis=1)
        return self.model.predict(x)


def _score(spec: TaskSpec, pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    return spec.type.metrics(spec, pred, gold)


def _better(spec: TaskSpec, metric: str, a: float, b: float) -> bool:
    return a < b if spec.type.lower_is_better(metric) else a > b


def _model(cfg: BaselineConfig, spec: TaskSpec) -> TfidfModel:
    return TfidfModel(spec.regression, cfg.seed, choices=spec.task == "multiple_choice")


def _cv_score(cfg: BaselineConfig, spec: TaskSpec, metric: str, c: float, train: list[Example], gold: np.ndarray) -> float:
    """Mean validation metric over 5 folds of the training set (when no validation file is given)."""
    _, _, _, KFold, StratifiedKFold = _sklearn()
    n_splits = 5
    # Classes are stratified; answer positions of multiple choice need not be (any fold has all candidates).
    stratify = not spec.regression and spec.task != "multiple_choice"
    if stratify:
        n_splits = min(n_splits, int(np.bincount(gold.astype(np.int64)).min()))
    else:
        n_splits = min(n_splits, len(gold))
    if n_splits < 2:
        raise GptkitError(f"{cfg.train}: too few examples of some label to choose C by cross-validation; pass --val")
    folds = (StratifiedKFold if stratify else KFold)(n_splits=n_splits, shuffle=True, random_state=cfg.seed)
    scores = []
    for tr, va in folds.split(np.zeros(len(gold)), gold):
        model = _model(cfg, spec).fit_features([train[i] for i in tr]).fit(c, gold[tr])
        scores.append(_score(spec, model.predict([train[i] for i in va]), gold[va])[metric])
    return float(np.mean(scores))


def run_baselines(cfg: BaselineConfig) -> dict[str, Any]:
    """Fit both baselines on `cfg.train`, choose C on `cfg.val`, score on val and test.

    Returns {"task", "labels", "examples", "metric", "majority": {...}, "tfidf": {...}}; each baseline
    holds its "val" and "test" metrics (when those files are given); with a test file, "tfidf" also holds
    "test_predictions": {"predictions": [...], "labels": [...]} in file order (label indices)."""
    spec, train = load_training_examples(TaskSpec(task=cfg.task, columns=dict(cfg.columns), regression=cfg.regression,
                                                                  label_base=cfg.label_base),
                                         cfg.train)
    splits = {"val": cfg.val, "test": cfg.test}
    data = {"train": train, **{k: load_examples(spec, p) for k, p in splits.items() if p is not None}}
    gold = {k: np.asarray([e.label for e in v], dtype=np.float64 if spec.regression else np.int64)
            for k, v in data.items()}
    metric = cfg.metric or spec.type.metric_names(spec)[0]
    probe = _score(spec, gold["train"][:2], gold["train"][:2])
    if metric not in probe:
        raise GptkitError(f"--metric {metric}: not a metric of this task (choose one of {', '.join(probe)})")

    if spec.regression:
        constant = float(gold["train"].mean())
        majority: dict[str, Any] = {"prediction": constant}
    else:
        # Multiple choice: the most frequent position of the right answer (reported as the file writes it).
        names = spec.labels or [str(i + spec.label_base) for i in range(spec.n_choices or 0)]
        counts = np.bincount(gold["train"], minlength=len(names))
        constant = int(counts.argmax())  # ties: the first label in sorted order (the first position)
        majority = {"label": names[constant]}
    for k in splits:
        if k in data:
            majority[k] = _score(spec, np.full(len(gold[k]), constant), gold[k])

    search: dict[str, float] = {}
    best: tuple[float, float, TfidfModel] | None = None  # (C, metric, a copy of the model fitted with it)
    path = _model(cfg, spec).fit_features(data["train"]) if "val" in data else None
    for c in sorted(cfg.c_grid):
        if path is not None:
            value = _score(spec, path.fit(c, gold["train"]).predict(data["val"]), gold["val"])[metric]
        else:
            value = _cv_score(cfg, spec, metric, c, data["train"], gold["train"])
        search[f"{c:g}"] = value
        if best is None or _better(spec, metric, value, best[1]):
            best = (c, value, copy.deepcopy(path) if path is not None else None)
    assert best is not None
    final = best[2] or _model(cfg, spec).fit_features(data["train"]).fit(best[0], gold["train"])
    tfidf: dict[str, Any] = {
        "C": best[0], "chosen_on": "validation" if "val" in data else "5-fold cross-validation of train",
        "search": search, "features": len(final.vectorizer.vocabulary_),
    }
    predicted = {k: final.predict(data[k]) for k in splits if k in data}
    for k, pred in predicted.items():
        tfidf[k] = _score(spec, pred, gold[k])
    if "test" in predicted:  # for a paired comparison with another model on the same test file
        tfidf["test_predictions"] = {"predictions": predicted["test"].tolist(), "labels": gold["test"].tolist()}
    return {
        "task": spec.task, "labels": spec.labels, "regression": spec.regression,
        "examples": {k: len(v) for k, v in data.items()}, "metric": metric,
        "majority": majority, "tfidf": tfidf,
    }
