"""A step-by-step account of one forward pass: every intermediate tensor's shape and a few statistics.

The trace calls the model's own submodules (embeddings, `attn.qkv`, `attn.split_heads`, `attn.proj`,
the LayerNorms, `mlp.fc`/`act`/`proj`, the tied LM head) in the order the model's `Block` uses for its
`block_order` (post-LN GPT-1 or pre-LN GPT-2 with a final LayerNorm). Only the attention core is spelled
out (scores, mask, softmax, weighted sum) because the model runs it fused inside SDPA; each block's
traced output is checked against the block itself and the final logits against `model(ids)`, and the
differences are reported, so the account cannot silently drift from the real computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gptkit.inspect.labels import display_token
from gptkit.inspect.next_token import NextToken
from gptkit.model.gpt import GPT, build_attention_mask


@dataclass
class TraceStep:
    """One intermediate tensor: what produced it, its shape, and summary statistics."""

    name: str
    shape: tuple[int, ...]
    module: str = ""
    """The model submodule that computed it (its name in `model.named_modules()`), if any."""
    stats: dict[str, float] | None = None
    """mean, std, min, max over the finite entries (masked scores are -inf and are left out)."""
    note: str = ""
    block: int | None = None


@dataclass
class Trace:
    """The whole account; `to_dict()` is what `gptkit inspect trace --json` prints."""

    config: dict[str, Any]
    ids: list[int]
    tokens: list[str]
    steps: list[TraceStep]
    top: list[NextToken]
    checks: dict[str, float] = field(default_factory=dict)
    """Max |traced - real| for each block's output and for the logits."""
    logits: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "ids": self.ids,
            "tokens": self.tokens,
            "steps": [{**asdict(s), "shape": list(s.shape)} for s in self.steps],
            "next_token": [asdict(t) for t in self.top],
            "checks": self.checks,
        }


def tensor_stats(t: torch.Tensor) -> dict[str, float]:
    """mean, std, min, max of the finite entries (an all-masked tensor gives NaNs)."""
    t = t.detach().float()
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return {k: math.nan for k in ("mean", "std", "min", "max")}
    std = float(finite.std()) if finite.numel() > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "min": float(finite.min()), "max": float(finite.max())}


class _Recorder:
    def __init__(self) -> None:
        self.steps: list[TraceStep] = []

    def __call__(
        self, name: str, t: torch.Tensor, module: str = "", note: str = "", block: int | None = None, stats: bool = True
    ) -> torch.Tensor:
        self.steps.append(
            TraceStep(name, tuple(t.shape), module, tensor_stats(t) if stats else None, note, block)
        )
        return t


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@torch.no_grad()
def trace_forward(
    model: GPT,
    ids: torch.Tensor,
    *,
    layers: Iterable[int] | None = None,
    top_k: int = 5,
    id_to_token: Callable[[int], str | None] | None = None,
) -> Trace:
    """Trace one forward pass of `ids` ((T,) or (1, T)) through `model`.

    layers: the blocks to show in detail (default all); the others appear as one summary step each,
        which keeps the account readable for a 12-layer model.
    id_to_token: the tokenizer's lookup, for readable token labels; ids are shown without it.
    The model runs in eval mode (dropout off) for the trace and is put back as it was afterwards.
    """
    was_training = model.training
    model.eval()  # dropout off: the trace is of inference, and comparable with the model's own output
    try:
        return _trace(model, ids, layers, top_k, id_to_token)
    finally:
        model.train(was_training)


def _trace(
    model: GPT,
    ids: torch.Tensor,
    layers: Iterable[int] | None,
    top_k: int,
    id_to_token: Callable[[int], str | None] | None,
) -> Trace:
    if ids.dim() == 1:
        ids = ids[None]
    cfg = model.config
    B, T = ids.shape
    if B != 1:
        raise ValueError(f"trace_forward follows one sequence, got a batch of {B}")
    if T > cfg.n_ctx:
        raise ValueError(f"{T} tokens exceed the model's context window n_ctx={cfg.n_ctx}")
    detailed = set(range(cfg.n_layer)) if layers is None else set(layers)
    label = (lambda i: display_token(id_to_token(i))) if id_to_token is not None else str
    tr = model.transformer
    rec = _Recorder()
    eval_note = "identity in eval mode"

    rec("token ids", ids, note=" ".join(str(j) for j in ids[0].tolist()), stats=False)
    tok = rec("embedding lookup: row id of W_e for each token", tr.tok_emb(ids), "transformer.tok_emb")
    positions = torch.arange(T, device=ids.device)[None]
    pos = rec("position embeddings: row t of W_p for position t", tr.pos_emb(positions), "transformer.pos_emb")
    x = rec("+ positions: token + position embedding", tok + pos)
    x = rec(f"embedding dropout (p={cfg.embd_pdrop})", tr.emb_dropout(x), "transformer.emb_dropout", eval_note)

    checks: dict[str, float] = {}
    mask = build_attention_mask(T, 0, None, ids.device)  # (1, 1, T, T), the model's own builder
    for i, block in enumerate(tr.blocks):
        prefix = f"transformer.blocks.{i}"
        reference = block(x)[0]  # the block as the model runs it (fused SDPA attention)
        if i not in detailed:
            x = rec(f"block {i}: whole block ({cfg.block_order}; not expanded)", reference, prefix, block=i)
            continue
        x = _trace_block(rec, block, x, mask, i, prefix, cfg.block_order, eval_note)
        checks[f"block {i}"] = _max_diff(x, reference)

    if tr.ln_f is not None:
        x = rec("final LayerNorm", tr.ln_f(x), "transformer.ln_f")
    logits = rec("logits = h W_e^T (LM head tied to the token embedding)", model.lm_logits(x), "lm_logits")
    probs = rec("next-token probabilities: softmax(last logits)", logits[0, -1].softmax(-1))
    checks["logits"] = _max_diff(logits, model(ids))

    top = probs.topk(min(top_k, probs.numel()))
    top_tokens = [NextToken(int(j), float(p), label(int(j))) for p, j in zip(top.values, top.indices)]
    return Trace(
        config=cfg.to_dict(),
        ids=ids[0].tolist(),
        tokens=[label(int(j)) for j in ids[0]],
        steps=rec.steps,
        top=top_tokens,
        checks=checks,
        logits=logits,
    )


def _trace_block(
    rec: _Recorder, block, x: torch.Tensor, mask: torch.Tensor, i: int, prefix: str, order: str, eval_note: str
) -> torch.Tensor:
    """One block, step by step, in the order `Block.forward` uses for `order`."""
    attn, mlp = block.attn, block.mlp
    pre_ln = order == "pre_ln"

    def r(name: str, t: torch.Tensor, module: str = "", note: str = "") -> torch.Tensor:
        return rec(f"block {i}: {name}", t, f"{prefix}.{module}" if module else "", note, block=i)

    h = r("LayerNorm before attention", block.ln_attn(x), "ln_attn") if pre_ln else x
    r("q, k, v projection C -> 3C", attn.qkv(h), "attn.qkv")
    q, k, v = attn.split_heads(h)  # (B, nh, T, hs) each
    r("q split into heads", q, "attn.split_heads")
    r("k split into heads", k, "attn.split_heads")
    r("v split into heads", v, "attn.split_heads")
    scores = r("scores q k^T / sqrt(hs)", (q @ k.transpose(-2, -1)) / math.sqrt(attn.head_dim))
    n_masked = int((~mask).sum())
    scores = r(
        "causal mask: future keys set to -inf",
        scores.masked_fill(~mask, float("-inf")),
        note=f"{n_masked} of {mask.numel()} entries per head masked; stats over the rest",
    )
    probs = r("softmax over keys: attention probabilities", scores.softmax(dim=-1), note="each row sums to 1")
    probs = r(f"attention dropout (p={attn.attn_pdrop})", probs, note=eval_note)
    y = r("weighted sum of values: probs @ v", probs @ v)
    B, nh, T, hs = y.shape
    y = r("heads concatenated", y.transpose(1, 2).reshape(B, T, nh * hs))
    a = r("output projection C -> C", attn.proj(y), "attn.proj")
    a = r("residual dropout", attn.resid_dropout(a), "attn.resid_dropout", eval_note)
    n = r("residual: x + attention", x + a)
    if not pre_ln:
        n = r("LayerNorm after attention", block.ln_attn(n), "ln_attn")
    m = r("LayerNorm before MLP", block.ln_mlp(n), "ln_mlp") if pre_ln else n
    m = r("MLP expand C -> inner", mlp.fc(m), "mlp.fc")
    m = r("MLP activation", mlp.act(m), "mlp.act")
    m = r("MLP project inner -> C", mlp.proj(m), "mlp.proj")
    m = r("residual dropout", mlp.dropout(m), "mlp.dropout", eval_note)
    out = r("residual: n + MLP", n + m)
    if not pre_ln:
        out = r("LayerNorm after MLP (block output)", block.ln_mlp(out), "ln_mlp")
    return out


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def format_trace(trace: Trace) -> str:
    """The trace as an aligned plain-text table, one step per line, grouped by block."""
    c = trace.config
    order = (
        "post-LN (GPT-1): n = LN(x + Attn(x)); h = LN(n + MLP(n))"
        if c["block_order"] == "post_ln"
        else "pre-LN (GPT-2): n = x + Attn(LN(x)); h = n + MLP(LN(n)); final LayerNorm"
    )
    lines = [
        f"one forward pass: {c['n_layer']} blocks, C={c['n_embd']}, {c['n_head']} heads of "
        f"{c['n_embd'] // c['n_head']}, inner={c['n_inner'] or 4 * c['n_embd']}, V={c['vocab_size']}",
        f"block order: {order}",
        f"tokens ({len(trace.tokens)}): " + " | ".join(trace.tokens),
        "",
        f"{'#':>3}  {'step':<58} {'shape':<18} {'mean':>10} {'std':>10} {'min':>10} {'max':>10}",
    ]
    current_block: int | None = None
    for n, s in enumerate(trace.steps, 1):
        if s.block is not None and s.block != current_block:
            lines.append(f"---- block {s.block} " + "-" * 40)
        current_block = s.block
        name = s.name.split(": ", 1)[1] if s.block is not None and ": " in s.name else s.name
        row = f"{n:>3}  {name:<58} {_shape(s.shape):<18}"
        if s.stats is not None:
            row += "".join(f" {s.stats[k]:>10.4g}" for k in ("mean", "std", "min", "max"))
        if s.note:
            row += f"   [{s.note}]"
        lines.append(row.rstrip())
    lines.append("")
    lines.append(f"next-token probabilities (top {len(trace.top)}):")
    for rank, t in enumerate(trace.top, 1):
        lines.append(f"  {rank}. {t.token!r:<20} id {t.id:<7} p={t.prob:.4f}")
    worst = max(trace.checks.values()) if trace.checks else float("nan")
    lines.append(f"check: traced vs real model, max |difference| = {worst:.3g} (blocks and logits)")
    return "\n".join(lines)
