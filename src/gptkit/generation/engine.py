"""Autoregressive generation on token ids: prefill once, then one token per step with the KV cache.

The engine knows nothing of text. Stop *strings* are the text layer's business: it passes a
`should_stop(row, generated_ids)` callback, called after every new token.

Rows. `prompts` is a list of id lists; with `num_samples = n` each prompt is prefilled once and its
cache fanned out to n rows (`KVCache.reorder`), so row `r` is prompt `r // n`, sample `r % n`.

Batches of different lengths are left-padded, and each row gets its own position ids (0 at its first
real token) plus a padding mask, so a row computes what it would compute alone: GPT's positions are
learned absolute embeddings, so shifting a row by its padding would change its output.

Sliding window. The model has n_ctx position embeddings. Each row conditions on a window of its
tokens, always starting at position 0. When a new token would make a row's window longer than n_ctx,
the window jumps forward to keep only the last `n_ctx - stride` tokens and the cache is rebuilt by
re-prefilling the windows (positions again from 0); `stride` defaults to n_ctx // 4, so a rebuild
happens at most once every `stride` tokens. A prompt longer than n_ctx keeps its last n_ctx tokens.
The uncached path (`use_cache=False`, re-running each window in full every step) uses exactly the same
windows, so both paths produce the same ids.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ..model.cache import KVCache
from ..model.gpt import GPT
from .sampling import apply_repetition_penalty, choose_tokens

log = logging.getLogger(__name__)

StopCallback = Callable[[int, list[int]], bool]


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens and when to stop. Frozen and hashable, so a server can batch equal ones."""

    max_new_tokens: int = 64
    """Upper bound on generated tokens per row (finish reason "length")."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_k: int | None = None
    """Sample only among the k most likely tokens (None: no limit)."""
    top_p: float | None = None
    """Nucleus sampling: only the smallest set of tokens holding this probability mass (None: 1.0)."""
    repetition_penalty: float = 1.0
    """> 1 discourages tokens already in the row (prompt included); 1 disables it."""
    seed: int | None = None
    """Seed of the sampling generator; the same seed, prompts and config give the same ids."""
    stop_ids: tuple[int, ...] = ()
    """Token ids that end a row (finish reason "stop"); the stop token is not part of the output."""
    num_samples: int = 1
    """Completions per prompt (the prompt is prefilled once and the cache fanned out)."""
    use_cache: bool = True
    """False re-runs the whole window every step: slow, for tests and benchmarks."""
    window_stride: int | None = None
    """Tokens dropped when a row's window slides past n_ctx; None means n_ctx // 4."""
    top_logprobs: int = 0
    """How many most likely alternatives to report with each chosen token's log-probability."""

    def validate(self, n_ctx: int) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"GenerationConfig.{name} {why}, got {getattr(self, name)!r}")

        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise bad(name, "must be a finite number")
        if self.max_new_tokens < 1:
            raise bad("max_new_tokens", "must be >= 1")
        if self.temperature < 0:
            raise bad("temperature", "must be >= 0")
        if self.top_k is not None and self.top_k < 1:
            raise bad("top_k", "must be >= 1 or None")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "must be in (0, 1] or None")
        if self.repetition_penalty <= 0:
            raise bad("repetition_penalty", "must be > 0")
        if self.num_samples < 1:
            raise bad("num_samples", "must be >= 1")
        if self.window_stride is not None and not 1 <= self.window_stride < n_ctx:
            raise bad("window_stride", f"must be in [1, n_ctx={n_ctx})")
        if self.top_logprobs < 0:
            raise bad("top_logprobs", "must be >= 0")


@dataclass(frozen=True)
class TokenEvent:
    """Row `row` produced `token`; `logprob` is its log-probability under the model (before
    temperature, penalty and filtering); `top` holds the most likely (token, logprob) alternatives."""

    row: int
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class FinishEvent:
    """Row `row` is done: reason "stop" (stop token or callback) or "length" (max_new_tokens). When a
    stop token ended the row, `token`, `logprob` and `top` describe it (it is not part of the output,
    but a client scoring text with log-probabilities counts it as a generated position)."""

    row: int
    reason: str
    token: int | None = None
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


Event = TokenEvent | FinishEvent


@dataclass
class Completion:
    """The result for one row: generated ids (stop token excluded) with their log-probabilities."""

    prompt_index: int
    sample_index: int
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[tuple[tuple[int, float], ...]] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class _Row:
    tokens: list[int]  # prompt + generated so far
    start: int  # first token of the window the model conditions on
    generated: list[int] = field(default_factory=list)

    @property
    def window(self) -> list[int]:
        return self.tokens[self.start :]


def _left_pad(windows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, padding mask (True = real) and per-row positions (0 at the first real token), all (B, T)."""
    T = max(len(w) for w in windows)
    ids = torch.zeros(len(windows), T, dtype=torch.long)
    mask = torch.zeros(len(windows), T, dtype=torch.bool)
    for b, w in enumerate(windows):
        ids[b, T - len(w) :] = torch.tensor(w, dtype=torch.long)
        mask[b, T - len(w) :] = True
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _forward_windows(model: GPT, windows: list[list[int]], cache: KVCache | None) -> torch.Tensor:
    """Run the windows (left-padded) from scratch; return each row's last logits (B, V)."""
    ids, mask, positions = _left_pad(windows, next(model.parameters()).device)
    padding_mask = None if bool(mask.all()) else mask
    return _last_logits(model, ids, positions, padding_mask, cache)


def _last_logits(model: GPT, ids: torch.Tensor, positions: torch.Tensor, padding_mask: torch.Tensor | None,
                 cache: KVCache | None) -> torch.Tensor:
    """Logits (B, V) of the last position only: the LM head is a V x C matmul per position, so
    projecting the whole prompt would cost T times more than the one row generation needs."""
    hidden = model.transformer(ids, positions=positions, padding_mask=padding_mask, cache=cache).hidden
    return model.lm_logits(hidden[:, -1])


def _new_cache(model: GPT, batch_size: int) -> KVCache:
    p = next(model.parameters())
    return KVCache.for_model(model.config, batch_size, model.config.n_ctx, device=p.device, dtype=p.dtype)


def check_prompts(prompts: list[list[int]], vocab_size: int) -> None:
    """Prompts must be non-empty lists of ids the model has embeddings for."""
    if not prompts:
        raise ValueError("no prompts given")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: generation needs at least one token to condition on")
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has token id {bad[0]} outside the model's vocabulary [0, {vocab_size})")


def stream_generate(
    model: GPT,
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    should_stop: StopCallback | None = None,
) -> Iterator[Event]:
    """Yield TokenEvent / FinishEvent as tokens are produced; every row ends with one FinishEvent."""
    n_ctx = model.config.n_ctx
    config.validate(n_ctx)
    check_prompts(prompts, model.config.vocab_size)
    stride = config.window_stride or max(1, n_ctx // 4)
    keep = n_ctx - stride
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if config.seed is not None:
        generator.manual_seed(config.seed)
    else:
        generator.seed()
    stop_ids = set(config.stop_ids)
    was_training = model.training
    model.eval()  # no dropout; restored afterwards, so sampling from a training loop is harmless
    try:
        yield from _decode(model, prompts, config, should_stop, generator, stop_ids, keep, device)
    finally:
        model.train(was_training)


def _decode(
    model: GPT,
    prompts: list[list[int]],
    config: GenerationConfig,
    should_stop: StopCallback | None,
    generator: torch.Generator,
    stop_ids: set[int],
    keep: int,
    device: torch.device,
) -> Iterator[Event]:
    n_ctx, n = model.config.n_ctx, config.num_samples
    starts = [max(0, len(p) - n_ctx) for p in prompts]
    rows = [_Row(tokens=list(prompts[r // n]), start=starts[r // n]) for r in range(len(prompts) * n)]
    active = list(range(len(rows)))
    # Tensor work runs under inference_mode, but never across a `yield`: the mode is thread-local
    # state and must not leak into the caller's code between tokens.
    with torch.inference_mode():
        cache = _new_cache(model, len(prompts)) if config.use_cache else None
        logits = _forward_windows(model, [p[s:] for p, s in zip(prompts, starts)], cache)  # (P, V)
        if n > 1:
            fan_out = torch.arange(len(prompts), device=device).repeat_interleave(n)
            logits = logits.index_select(0, fan_out)
            if cache is not None:
                cache.reorder(fan_out)

    while active:
        with torch.inference_mode():
            chosen, chosen_lp, top_pairs = _pick(logits, [rows[r].tokens for r in active], config, generator)

        still: list[int] = []
        for i, (r, token) in enumerate(zip(active, chosen)):
            row = rows[r]
            if token in stop_ids:
                yield FinishEvent(r, "stop", token, chosen_lp[i], top_pairs[i])
                continue
            row.tokens.append(token)
            row.generated.append(token)
            yield TokenEvent(r, token, chosen_lp[i], top_pairs[i])
            if should_stop is not None and should_stop(r, row.generated):
                yield FinishEvent(r, "stop")
            elif len(row.generated) >= config.max_new_tokens:
                yield FinishEvent(r, "length")
            else:
                still.append(i)
        if not still:
            return
        active = [active[i] for i in still]
        live = [rows[r] for r in active]

        slid = False
        for row in live:
            if len(row.tokens) - row.start > n_ctx:
                row.start = len(row.tokens) - keep
                slid = True
        with torch.inference_mode():
            if cache is None:
                logits = _forward_windows(model, [row.window for row in live], None)
            elif slid or cache.remaining() < 1:
                log.debug("rebuilding the KV cache for %d rows (sliding window)", len(live))
                cache = _new_cache(model, len(live))
                logits = _forward_windows(model, [row.window for row in live], cache)
            else:
                if len(still) < cache.keys.size(1):  # finished rows leave the batch
                    cache.reorder(torch.tensor(still, device=device))
                ids = torch.tensor([[row.tokens[-1]] for row in live], device=device)
                positions = torch.tensor([[len(row.window) - 1] for row in live], device=device)
                logits = _last_logits(model, ids, positions, None, cache)


def _pick(
    logits: torch.Tensor, histories: list[list[int]], config: GenerationConfig, generator: torch.Generator
) -> tuple[list[int], list[float], list[tuple[tuple[int, float], ...]]]:
    """One step's choice per row, its log-probability under the model, and the top alternatives."""
    scores = apply_repetition_penalty(logits.float(), histories, config.repetition_penalty)
    chosen = choose_tokens(scores, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                           generator=generator)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen_lp = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
    if config.top_logprobs:
        top = torch.topk(logprobs, min(config.top_logprobs, logprobs.size(-1)), dim=-1)
        top_pairs = [tuple(zip(i, v)) for i, v in zip(top.indices.tolist(), top.values.tolist())]
    else:
        top_pairs = [()] * len(histories)
    return chosen.tolist(), chosen_lp, top_pairs


def generate(
    model: GPT,
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    should_stop: StopCallback | None = None,
) -> list[Completion]:
    """Run `stream_generate` to the end; one Completion per row (prompt-major, then sample)."""
    n = config.num_samples
    out = [Completion(prompt_index=r // n, sample_index=r % n) for r in range(len(prompts) * n)]
    for event in stream_generate(model, prompts, config, should_stop=should_stop):
        c = out[event.row]
        if isinstance(event, TokenEvent):
            c.ids.append(event.token)
            c.logprobs.append(event.logprob)
            c.top_logprobs.append(event.top)
        else:
            c.finish_reason = event.reason
    return out
