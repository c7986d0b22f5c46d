"""Metrics of the GLUE-style tasks, in numpy: accuracy, F1, Matthews correlation, Pearson, Spearman.

Written out here (not imported from scikit-learn/scipy) to keep the core light; each follows the
textbook definition and returns 0.0 where the definition divides by zero (e.g. a constant prediction).
"""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if gold.size else 0.0


def confusion(pred: np.ndarray, gold: np.ndarray, n_classes: int) -> np.ndarray:
    """C[i, j] = number of examples of true class i predicted as j."""
    c = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(c, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return c


def f1(pred: np.ndarray, gold: np.ndarray, n_classes: int = 2, positive: int = 1) -> float:
    """Binary F1 of class `positive` (MRPC/QQP report the F1 of class 1); macro F1 for > 2 classes."""
    c = confusion(pred, gold, n_classes)
    classes = [positive] if n_classes == 2 else range(n_classes)
    scores = []
    for k in classes:
        tp = c[k, k]
        fp = c[:, k].sum() - tp
        fn = c[k, :].sum() - tp
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def matthews(pred: np.ndarray, gold: np.ndarray, n_classes: int = 2) -> float:
    """Matthews correlation (CoLA's metric), in its multi-class form (Gorodkin 2004):
    (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2))."""
    c = confusion(pred, gold, n_classes).astype(np.float64)
    t, p = c.sum(axis=1), c.sum(axis=0)
    s, correct = c.sum(), np.trace(c)
    denom = np.sqrt((s * s - (p * p).sum()) * (s * s - (t * t).sum()))
    return 0.0 if denom == 0 else float((correct * s - (p * t).sum()) / denom)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return 0.0 if denom == 0 else float((dx * dy).sum() / denom)


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (what Spearman's coefficient needs)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # Boundaries of runs of equal values; each run gets the mean of its positions.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the ranks."""
    return pearson(rankdata(x), rankdata(y))


def mse(pred: np.ndarray, gold: np.ndarray) -> float:
    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    return float(((pred - gold) ** 2).mean())


# name -> (function, whether it takes the number of classes)
METRICS = {
    "accuracy": (accuracy, False),
    "f1": (f1, True),
    "matthews": (matthews, True),
    "pearson": (pearson, False),
    "spearman": (spearman, False),
    "mse": (mse, False),
}


def compute(names: tuple[str, ...], pred: np.ndarray, gold: np.ndarray, *, n_classes: int | None = None) -> dict[str, float]:
    """The named metrics of predictions against gold labels (a task type says which it reports)."""
    out = {}
    for name in names:
        fn, needs_classes = METRICS[name]
        if needs_classes:
            n = n_classes or int(max(np.max(pred), np.max(gold)) + 1)
            out[name] = fn(pred, gold, n)
        else:
            out[name] = fn(pred, gold)
    return out
