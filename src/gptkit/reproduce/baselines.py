"""Table 5's two reference rows without any neural network: the majority class, and TF-IDF features
with a logistic regression, for every task type of the reproduction. (Interim: the rows are to move onto
the project's `gptkit baseline` once it lands, keeping a multiple-choice adapter here.)

    classification   TF-IDF(text)
    entailment       [TF-IDF(premise), TF-IDF(hypothesis), shared(premise, hypothesis)]
    similarity       [TF-IDF(a) + TF-IDF(b), shared(a, b)]        (symmetric, like the task)
    multiple choice  each (context, candidate): [TF-IDF(candidate), shared(context, candidate)], a binary
                     regression (right answer or not); the highest-scoring candidate wins

shared(a, b) is the element-wise product TF-IDF(a) * TF-IDF(b) (the words two texts share, weighted)
plus its sum, the cosine similarity: without them a linear model of two bags of words cannot see any
relation between the texts. The vocabulary (unigrams and bigrams
seen in at least 2 training texts, at most 50,000) and the IDF weights come from the training split
alone. The logistic regression is L2-regularised (sklearn's C = 1 objective), fitted by L-BFGS on
sparse tensors; it is deterministic.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
MAX_FEATURES = 50_000


def _terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class TfidfVectorizer:
    """Sublinear TF (1 + log tf), smoothed IDF (log((1 + n) / (1 + df)) + 1), rows L2-normalised."""

    def fit(self, texts: Sequence[str]) -> TfidfVectorizer:
        df: Counter[str] = Counter()
        for t in texts:
            df.update(set(_terms(t)))
        kept = sorted((term for term, c in df.items() if c >= 2), key=lambda term: (-df[term], term))[:MAX_FEATURES]
        self.index = {term: i for i, term in enumerate(sorted(kept))}
        n = len(texts)
        self.idf = torch.tensor([math.log((1 + n) / (1 + df[term])) + 1 for term in sorted(kept)])
        return self

    @property
    def size(self) -> int:
        return len(self.index)

    def transform(self, texts: Sequence[str]) -> torch.Tensor:
        rows, cols, vals = [], [], []
        for r, t in enumerate(texts):
            counts = Counter(term for term in _terms(t) if term in self.index)
            if not counts:
                continue
            ids = [self.index[term] for term in counts]
            w = torch.tensor([1 + math.log(c) for c in counts.values()]) * self.idf[ids]
            w = w / w.norm()
            rows.extend([r] * len(ids))
            cols.extend(ids)
            vals.extend(w.tolist())
        return torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
                                       torch.tensor(vals, dtype=torch.float32), (len(texts), self.size),
                                       check_invariants=False).coalesce()


def _hstack(*mats: torch.Tensor) -> torch.Tensor:
    return torch.cat([m.coalesce() for m in mats], dim=1).coalesce()


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The shared terms of two texts, weighted, and, as one last column, their cosine similarity (the
    sum of those weights: one feature a small training set can learn, unlike one weight per word)."""
    shared = (a * b).coalesce()
    cosine = torch.sparse.sum(shared, dim=1).to_dense() if shared._nnz() else torch.zeros(a.shape[0])
    column = cosine.reshape(-1, 1).to_sparse()
    return torch.cat([shared, column], dim=1).coalesce()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, c: float = 1.0,
                 max_iter: int = 200) -> torch.Tensor:
    """Weights (features + 1, classes) minimising 0.5 |W|^2 + C * sum cross-entropy (bias not decayed)."""
    torch.manual_seed(0)
    w = torch.zeros(x.shape[1] + 1, n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def closure():
        opt.zero_grad()
        logits = torch.sparse.mm(x, w[:-1]) + w[-1]
        loss = c * torch.nn.functional.cross_entropy(logits, y, reduction="sum") + 0.5 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _scores(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.sparse.mm(x, w[:-1]) + w[-1]


def _features(kind: str, vec: TfidfVectorizer, rows: Sequence[dict[str, Any]]) -> torch.Tensor:
    if kind == "classification":
        return vec.transform([r["text"] for r in rows])
    a, b = (vec.transform([r[k] for r in rows]) for k in
            (("premise", "hypothesis") if kind == "entailment" else ("sentence1", "sentence2")))
    if kind == "entailment":
        return _hstack(a, b, _product(a, b))
    return _hstack((a + b).coalesce(), _product(a, b))


def _corpus(kind: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    fields = {"classification": ("text",), "entailment": ("premise", "hypothesis"),
              "similarity": ("sentence1", "sentence2"), "multiple_choice": ("context",)}[kind]
    texts = [r[f] for r in rows for f in fields]
    if kind == "multiple_choice":
        texts += [c for r in rows for c in r["choices"]]
    return texts


def majority_accuracy(kind: str, train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]]) -> float:
    """Accuracy of always answering the training split's most frequent label (for multiple choice: the
    most frequent position of the right answer; ties go to the smallest)."""
    counts = Counter(str(r["label"]) for r in train)
    top = min(counts, key=lambda k: (-counts[k], k))
    return sum(str(r["label"]) == top for r in test) / max(1, len(test))


def tfidf_accuracy(kind: str, train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]]) -> float:
    """Test accuracy of TF-IDF + logistic regression trained on `train` (see the module docstring)."""
    vec = TfidfVectorizer().fit(_corpus(kind, train))
    if kind == "multiple_choice":
        def pairs(rows):
            ctx = vec.transform([r["context"] for r in rows for _ in r["choices"]])
            cand = vec.transform([c for r in rows for c in r["choices"]])
            return _hstack(cand, _product(ctx, cand))

        y = torch.tensor([int(k == int(r["label"])) for r in train for k in range(len(r["choices"]))])
        w = fit_logistic(pairs(train), y, 2)
        s = _scores(pairs(test), w)
        margin = (s[:, 1] - s[:, 0]).reshape(len(test), -1)
        pred = margin.argmax(1).tolist()
        return sum(p == int(r["label"]) for p, r in zip(pred, test)) / max(1, len(test))
    labels = sorted({str(r["label"]) for r in train})
    index = {k: i for i, k in enumerate(labels)}
    y = torch.tensor([index[str(r["label"])] for r in train])
    w = fit_logistic(_features(kind, vec, train), y, len(labels))
    pred = _scores(_features(kind, vec, test), w).argmax(1).tolist()
    return sum(labels[p] == str(r["label"]) for p, r in zip(pred, test)) / max(1, len(test))
