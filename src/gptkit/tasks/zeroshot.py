"""Zero-shot task performance of the pre-trained LM alone (paper section 5, SPEC section 6).

No parameters are trained: each heuristic turns a task into comparisons of LM log-probabilities.
    sentiment        append "very" and compare P(label word) (e.g. "positive" vs "negative")
    acceptability    the sentence's mean token log-probability, thresholded (threshold from --train)
    multiple_choice  the answer with the highest mean token log-probability given context + question
    winograd         (DPRD) fill the blank with each referent; the rest of the sentence's mean log-prob decides
Every text is scored after an end-of-text token, the boundary the LM saw before each document.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GptkitError
from ..interop.loading import require_embedded
from ..model import GPT
from .metrics import matthews
from .progress import progress_bar
from .spec import TaskSpec
from .taskfile import load_examples, load_training_examples

log = logging.getLogger(__name__)

ZEROSHOT_TASKS = ("sentiment", "acceptability", "multiple_choice", "winograd")


def document_start(gpt: GPT, tok: Any) -> list[int]:
    """What every scored text is conditioned on first: the end-of-text token, as at the start of a
    pre-training document; nothing for a model trained without one (the paper's own vocabulary has
    none), whose first token of a text then goes unscored."""
    return [tok.eot_id] if tok.eot_id < gpt.config.vocab_size else []


def scored(gpt: GPT, tok: Any, prefix: list[int], continuation: list[int], where: str) -> tuple[list[int], list[int]]:
    """A (prefix, continuation) item, refused if it holds a token the model has no row for."""
    require_embedded(tok, prefix + continuation, gpt.config.vocab_size, where)
    return prefix, continuation


@torch.no_grad()
def continuation_logprobs(
    gpt: GPT, items: Sequence[tuple[list[int], list[int]]], *, batch_size: int = 32, device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[tuple[float, int]]:
    """For each (prefix, continuation): (sum of log P(continuation tokens | everything before), count).

    A prefix too long for the context window loses its beginning; the continuation is kept whole."""
    gpt.eval()
    n_ctx = gpt.config.n_ctx
    seqs, starts = [], []
    for prefix, cont in items:
        if not prefix or not cont:
            raise ValueError("prefix and continuation must be non-empty")
        if len(cont) >= n_ctx:
            cont = cont[: n_ctx - 1]
        prefix = prefix[max(0, len(prefix) + len(cont) - n_ctx):]
        seqs.append(prefix + cont)
        starts.append(len(prefix))
    out: list[tuple[float, int]] = []
    bar = progress_bar(len(seqs), "scoring", progress)
    for b in range(0, len(seqs), batch_size):
        chunk, chunk_starts = seqs[b : b + batch_size], starts[b : b + batch_size]
        T = max(len(s) for s in chunk)
        ids = torch.zeros(len(chunk), T, dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
        # Right padding is invisible to real tokens under the causal mask; pad id 0 is never scored.
        logp = gpt(ids.to(device)).float().log_softmax(-1).cpu()  # (B, T, V)
        for i, (s, start) in enumerate(zip(chunk, chunk_starts)):
            pos = torch.arange(start, len(s))
            token_lp = logp[i, pos - 1, torch.tensor(s[start:])]
            out.append((float(token_lp.sum()), len(pos)))
        bar.update(len(chunk))
    bar.close()
    return out


def continuation_ids(tok: Any, prompt: str, word: str) -> list[int]:
    """The ids `word` adds after `prompt` (encoding them together, so a byte-level BPE gets the
    leading-space form and a `</w>` BPE its word-final form)."""
    base = tok.encode(prompt)
    full = tok.encode(f"{prompt} {word}")
    if full[: len(base)] == base and len(full) > len(base):
        return full[len(base):]
    return tok.encode(f" {word}") or tok.encode(word)


@dataclass
class ZeroShotResult:
    metrics: dict[str, float]
    predictions: list[int]
    scores: np.ndarray
    details: dict[str, Any]


def parse_label_words(spec: str | None, labels: list[str]) -> list[str]:
    """`"negative,positive"` (one word per label, in the label set's sorted order) or
    `"0=negative,1=positive"` -> one word per label."""
    if spec is None:
        if len(labels) != 2:
            raise GptkitError(f"the data has {len(labels)} labels {labels}; name a word for each with --label-words")
        return ["negative", "positive"]
    items = [x.strip() for x in spec.split(",") if x.strip()]
    if all("=" in x for x in items):
        mapping = dict(x.split("=", 1) for x in items)
        missing = [label for label in labels if label not in mapping]
        if missing:
            raise GptkitError(f"--label-words names no word for label(s) {missing} (labels: {labels})")
        return [mapping[label].strip() for label in labels]
    if len(items) != len(labels):
        raise GptkitError(f"--label-words has {len(items)} words for {len(labels)} labels {labels}")
    return items


def sentiment(gpt: GPT, tok: Any, data: str | Path, *, label_words: str | None = None, cue: str = "very",
              columns: dict[str, str] | None = None, batch_size: int = 32, device: str = "cpu",
              progress: bool = False) -> ZeroShotResult:
    """Append the cue word and pick the label whose word the LM finds most probable next."""
    spec, examples = load_training_examples(TaskSpec("classification", columns=dict(columns or {})), data)
    words = parse_label_words(label_words, spec.labels or [])
    items = []
    for x in examples:
        prompt = f"{x.texts[0]} {cue}" if cue else x.texts[0]
        prefix = [*document_start(gpt, tok), *tok.encode(prompt)]
        items.extend(scored(gpt, tok, prefix, continuation_ids(tok, prompt, w), x.where) for w in words)
    lp = continuation_logprobs(gpt, items, batch_size=batch_size, device=device, progress=progress)
    # Total log P of each label word (its full probability, not a per-token mean).
    scores = np.array([s for s, _ in lp]).reshape(len(examples), len(words))
    preds = scores.argmax(1)
    gold = np.array([x.label for x in examples])
    metrics = spec.type.metrics(spec, preds, gold)
    return ZeroShotResult(metrics, preds.tolist(), scores, {"labels": spec.labels, "label_words": words, "cue": cue,
                                                             "examples": len(examples)})


def mean_logprob(gpt: GPT, tok: Any, texts: Sequence[str], *, batch_size: int = 32, device: str = "cpu",
                 progress: bool = False) -> np.ndarray:
    """Mean token log-probability of each text after an end-of-text token (from its second token when
    the model has none: see `document_start`)."""
    start = document_start(gpt, tok)
    items = []
    for t in texts:
        ids = tok.encode(t)
        if len(ids) < 2 - len(start):
            raise GptkitError(f"text {t!r} encodes to {len(ids)} tokens: too few to score"
                              + ("" if start else " without an end-of-text token, which this model has no row for"))
        items.append(scored(gpt, tok, start, ids, f"text {t!r}") if start else scored(gpt, tok, ids[:1], ids[1:], f"text {t!r}"))
    return np.array([s / n for s, n in continuation_logprobs(gpt, items, batch_size=batch_size, device=device, progress=progress)])


def choose_threshold(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """The threshold (score >= t -> positive) with the best Matthews correlation (CoLA's metric)."""
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    best_t, best_m = float(candidates[0]), -2.0
    for t in candidates:
        m = matthews((scores >= t).astype(int), positive.astype(int))
        if m > best_m:
            best_t, best_m = float(t), m
    return best_t, best_m


def acceptability(gpt: GPT, tok: Any, data: str | Path, *, train: str | Path | None, acceptable_label: str | None = None,
                  columns: dict[str, str] | None = None, batch_size: int = 32, device: str = "cpu",
              progress: bool = False) -> ZeroShotResult:
    """Threshold the mean token log-probability; threshold (and, unless named, which label means
    acceptable: the one with the higher mean score) chosen on the training file."""
    if train is None:
        raise GptkitError("acceptability needs --train: the threshold is chosen on labelled training data")
    spec, train_x = load_training_examples(TaskSpec("classification", columns=dict(columns or {})), train)
    if len(spec.labels or []) != 2:
        raise GptkitError(f"{train}: acceptability needs exactly two labels, found {spec.labels}")
    test_x = load_examples(spec, data)
    train_scores = mean_logprob(gpt, tok, [x.texts[0] for x in train_x], batch_size=batch_size, device=device, progress=progress)
    train_gold = np.array([x.label for x in train_x])
    if acceptable_label is not None:
        if acceptable_label not in spec.labels:
            raise GptkitError(f"--acceptable-label {acceptable_label!r} is not one of the labels {spec.labels}")
        pos = spec.labels.index(acceptable_label)
    else:
        means = [train_scores[train_gold == k].mean() if (train_gold == k).any() else -np.inf for k in (0, 1)]
        pos = int(np.argmax(means))
    threshold, train_mcc = choose_threshold(train_scores, train_gold == pos)
    scores = mean_logprob(gpt, tok, [x.texts[0] for x in test_x], batch_size=batch_size, device=device, progress=progress)
    preds = np.where(scores >= threshold, pos, 1 - pos)
    gold = np.array([x.label for x in test_x])
    metrics = spec.type.metrics(spec, preds, gold)
    return ZeroShotResult(metrics, preds.tolist(), scores, {
        "labels": spec.labels, "acceptable_label": spec.labels[pos], "threshold": threshold,
        "train_matthews": train_mcc, "examples": len(test_x)})


def multiple_choice(gpt: GPT, tok: Any, data: str | Path, *, columns: dict[str, str] | None = None, label_base: int = 0,
                    batch_size: int = 32, device: str = "cpu", progress: bool = False) -> ZeroShotResult:
    """The answer with the highest mean token log-probability given the context and question."""
    spec = TaskSpec("multiple_choice", columns=dict(columns or {}), label_base=label_base)
    examples = load_examples(spec, data)
    items = []
    for x in examples:
        prompt = " ".join(t for t in x.texts if t)
        prefix = [*document_start(gpt, tok), *tok.encode(prompt)]
        items.extend(scored(gpt, tok, prefix, continuation_ids(tok, prompt, a), x.where) for a in x.choices)
    return _best_mean(gpt, spec, examples, items, batch_size=batch_size, device=device, progress=progress)


def winograd(gpt: GPT, tok: Any, data: str | Path, *, columns: dict[str, str] | None = None, label_base: int = 0,
             batch_size: int = 32, device: str = "cpu", progress: bool = False) -> ZeroShotResult:
    """DPRD / Winograd schemas (the paper's section 5 heuristic, after Trinh & Le): the sentence's blank
    `_` is filled with each candidate referent in turn, and the candidate after which the REST of the
    sentence has the highest mean token log-probability wins (the words before the blank are the
    same for every candidate, so they are not scored; the candidate itself is the condition)."""
    overrides = dict(columns or {})
    overrides.setdefault("context", "sentence")  # the documented layout: sentence, options, label
    spec = TaskSpec("multiple_choice", columns=overrides, label_base=label_base)
    examples = load_examples(spec, data)
    items = []
    for x in examples:
        sentence = x.texts[0]
        if sentence.count("_") != 1:
            raise GptkitError(f"{x.where}: the sentence must hold exactly one blank '_' (where a candidate goes), "
                              f"found {sentence.count('_')}")
        before, after = sentence.split("_")
        if not after.strip():
            raise GptkitError(f"{x.where}: nothing follows the blank '_': there is no rest of the sentence to score")
        for option in x.choices:
            filled = f"{before}{option}"
            items.append(scored(gpt, tok, [*document_start(gpt, tok), *tok.encode(filled)], _rest_ids(tok, filled, after),
                                x.where))
    return _best_mean(gpt, spec, examples, items, batch_size=batch_size, device=device, progress=progress)


def _best_mean(gpt: GPT, spec: TaskSpec, examples: list, items: list, **kwargs: Any) -> ZeroShotResult:
    """Score every (prefix, candidate continuation) and pick, per example, the candidate with the
    highest mean token log-probability."""
    lp = continuation_logprobs(gpt, items, **kwargs)
    scores = np.array([s / n for s, n in lp]).reshape(len(examples), -1)
    preds = scores.argmax(1)
    metrics = spec.type.metrics(spec, preds, np.array([x.label for x in examples]))
    return ZeroShotResult(metrics, preds.tolist(), scores, {"examples": len(examples), "choices": len(examples[0].choices)})


def _rest_ids(tok: Any, filled: str, after: str) -> list[int]:
    """The ids of `after` as they follow `filled` in the whole sentence (one encoding, so a word split
    by the blank's boundary is tokenized as in running text)."""
    head, whole = tok.encode(filled), tok.encode(filled + after)
    if whole[: len(head)] == head and len(whole) > len(head):
        return whole[len(head):]
    return tok.encode(after)
