"""Scoring a given token sequence: the log-probability the model assigns to each token after the ones
before it. This is what evaluation harnesses ask a completions server for with `echo` (lm-eval's
loglikelihood requests sum these over a continuation's tokens), so it is one plain forward pass over
the whole sequence in the model's own precision, with no sampling transform applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.gpt import GPT


@dataclass(frozen=True)
class SequenceScores:
    """Per-token results for one sequence. The first token has no logprob (nothing precedes it), as
    in OpenAI's echo responses: `logprobs[0]` and `top[0]` are None."""

    ids: tuple[int, ...]
    logprobs: tuple[float | None, ...]
    top: tuple[tuple[tuple[int, float], ...] | None, ...]


def score_sequences(model: GPT, sequences: list[list[int]], top_logprobs: int = 0) -> list[SequenceScores]:
    """Log-probabilities of every token of every sequence (each at most n_ctx long, run one at a time:
    no padding, so each row is exactly the model's full-context forward pass)."""
    n_ctx, vocab = model.config.n_ctx, model.config.vocab_size
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        with torch.inference_mode():
            for i, ids in enumerate(sequences):
                if not ids or len(ids) > n_ctx:
                    raise ValueError(f"sequence {i} has {len(ids)} tokens; scoring needs 1..{n_ctx}")
                if any(not 0 <= t < vocab for t in ids):
                    raise ValueError(f"sequence {i} has a token id outside [0, {vocab})")
                out.append(_score_one(model, ids, top_logprobs, device))
    finally:
        model.train(was_training)
    return out


def _score_one(model: GPT, ids: list[int], k: int, device: torch.device) -> SequenceScores:
    x = torch.tensor([ids], dtype=torch.long, device=device)
    hidden = model.transformer(x).hidden[0, :-1]  # position t predicts token t + 1
    if hidden.size(0) == 0:
        return SequenceScores(tuple(ids), (None,), (None,))
    logprobs = torch.log_softmax(model.lm_logits(hidden).float(), dim=-1)  # (T - 1, V)
    chosen = logprobs.gather(1, torch.tensor(ids[1:], device=device)[:, None])[:, 0].tolist()
    tops: list[tuple[tuple[int, float], ...] | None] = [None]
    if k > 0:
        best = torch.topk(logprobs, min(k, logprobs.size(-1)), dim=-1)
        tops += [tuple(zip(i, v)) for i, v in zip(best.indices.tolist(), best.values.tolist())]
    else:
        tops += [()] * len(chosen)
    return SequenceScores(tuple(ids), (None, *chosen), tuple(tops))
