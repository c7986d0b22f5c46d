"""gptkit.inspect: attention probabilities, masks, the forward-pass trace, next-token odds, page/plots."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gptkit.inspect import (
    attention_maps,
    causal_mask,
    display_token,
    display_tokens,
    next_token_distribution,
    padded_mask,
    trace_forward,
)
from gptkit.inspect.page import attention_page
from gptkit.inspect.trace import format_trace
from gptkit.model import GPT, preset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CONFIGS = {
    "tiny_post_ln": dict(name="tiny"),
    # A different shape and the GPT-2 order: 3 blocks, 3 heads of 16, MLP 96 wide, ReLU, final LN.
    "pre_ln_3x48": dict(
        name="tiny", vocab_size=97, n_embd=48, n_head=3, n_layer=3, n_inner=96, activation="relu", block_order="pre_ln"
    ),
}


def make_model(key: str) -> GPT:
    cfg = dict(CONFIGS[key])
    torch.manual_seed(0)
    model = GPT(preset(cfg.pop("name"), **cfg)).eval()
    # Larger weights than the init so attention is far from uniform and a wrong mask would show.
    with torch.no_grad():
        for block in model.transformer.blocks:
            block.attn.qkv.weight.mul_(4.0)
    return model


def random_ids(model: GPT, T: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, model.config.vocab_size, (1, T), generator=g)


def manual_attention(model: GPT, ids: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's probabilities recomputed by hand from the module weights (not the module code)."""
    inputs: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for b in model.transformer.blocks]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    cfg = model.config
    out = []
    for block, x in zip(model.transformer.blocks, inputs):
        if cfg.block_order == "pre_ln":
            x = F.layer_norm(x, (cfg.n_embd,), block.ln_attn.weight, block.ln_attn.bias, cfg.layer_norm_epsilon)
        B, T, C = x.shape
        qkv = x @ block.attn.qkv.weight.T + block.attn.qkv.bias  # (B, T, 3C)
        q, k, v = qkv.split(C, dim=-1)
        q = q.view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k = k.view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(cfg.head_dim)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        out.append(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)[0])
    return out


@pytest.mark.parametrize("key", list(CONFIGS))
def test_attention_probabilities_equal_manual_computation(key):
    model = make_model(key)
    ids = random_ids(model)
    maps = attention_maps(model, ids)
    cfg = model.config
    T = ids.size(1)
    assert maps.shape == (cfg.n_layer, cfg.n_head, T, T)
    for layer, expected in enumerate(manual_attention(model, ids)):
        torch.testing.assert_close(maps[layer], expected, rtol=0, atol=1e-6)
    # Not uniform: the check above would be weak if every row were 1/(i+1).
    uniform = torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]
    assert float((maps - uniform).abs().max()) > 0.2
    torch.testing.assert_close(maps.sum(-1), torch.ones(cfg.n_layer, cfg.n_head, T), rtol=0, atol=1e-6)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    assert bool((maps[..., future] == 0).all())  # exactly zero, not merely small
    assert bool((maps[..., ~future] > 0).all())


@pytest.mark.parametrize("key", list(CONFIGS))
def test_asking_for_attentions_does_not_change_the_output(key):
    model = make_model(key)
    ids = random_ids(model)
    with torch.no_grad():
        plain = model.transformer(ids)
        traced = model.transformer(ids, output_attentions=True)
    assert plain.attentions is None  # the normal path (SDPA) keeps none
    assert len(traced.attentions) == model.config.n_layer
    assert float((plain.hidden - traced.hidden).abs().max()) < 1e-6


def test_masks_are_the_models_own():
    assert causal_mask(4).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]
    m = padded_mask(5, 2)
    assert m[0].tolist() == [True, False, False, False, False]  # a padding query sees itself only
    assert m[1].tolist() == [False, True, False, False, False]
    assert m[4].tolist() == [False, False, True, True, True]  # real queries skip the padding
    with pytest.raises(ValueError):
        padded_mask(3, 3)
    # The model applies exactly this mask to a left-padded row: probabilities are 0 where it is False.
    model = make_model("tiny_post_ln")
    ids = random_ids(model, 5)
    valid = torch.tensor([[False, False, True, True, True]])
    with torch.no_grad():
        probs = model.transformer(ids, padding_mask=valid, output_attentions=True).attentions
    for p in probs:
        assert bool((p[0][:, ~m] == 0).all()) and bool((p[0][:, m] > 0).all())


@pytest.mark.parametrize("key", list(CONFIGS))
def test_trace_follows_the_model(key):
    model = make_model(key)
    cfg = model.config
    ids = random_ids(model, 7)
    T, nh, hs, C = 7, cfg.n_head, cfg.head_dim, cfg.n_embd
    trace = trace_forward(model, ids, top_k=4)
    with torch.no_grad():
        expected = model(ids)
    torch.testing.assert_close(trace.logits, expected, rtol=0, atol=1e-5)
    assert set(trace.checks) == {f"block {i}" for i in range(cfg.n_layer)} | {"logits"}
    assert max(trace.checks.values()) < 1e-5

    shapes = {s.name: s.shape for s in trace.steps}
    assert shapes["token ids"] == (1, T)
    assert shapes["embedding lookup: row id of W_e for each token"] == (1, T, C)
    for i in range(cfg.n_layer):
        assert shapes[f"block {i}: q, k, v projection C -> 3C"] == (1, T, 3 * C)
        assert shapes[f"block {i}: q split into heads"] == (1, nh, T, hs)
        assert shapes[f"block {i}: scores q k^T / sqrt(hs)"] == (1, nh, T, T)
        assert shapes[f"block {i}: softmax over keys: attention probabilities"] == (1, nh, T, T)
        assert shapes[f"block {i}: heads concatenated"] == (1, T, C)
        assert shapes[f"block {i}: MLP expand C -> inner"] == (1, T, cfg.inner_dim)
    assert shapes["logits = h W_e^T (LM head tied to the token embedding)"] == (1, T, cfg.vocab_size)
    assert shapes["next-token probabilities: softmax(last logits)"] == (cfg.vocab_size,)

    block0 = [s.name.split(": ", 1)[1] for s in trace.steps if s.block == 0]
    if cfg.block_order == "pre_ln":
        assert block0[0] == "LayerNorm before attention" and "LayerNorm before MLP" in block0
        assert "final LayerNorm" in shapes and block0[-1] == "residual: n + MLP"
    else:
        assert block0[0] == "q, k, v projection C -> 3C" and block0[-1] == "LayerNorm after MLP (block output)"
        assert "final LayerNorm" not in shapes
    probs = expected[0, -1].softmax(-1)
    assert [t.id for t in trace.top] == probs.topk(4).indices.tolist()
    text = format_trace(trace)
    assert "---- block 0" in text and f"({1}, {nh}, {T}, {hs})" in text and "max |difference|" in text
    json.dumps(trace.to_dict())  # serialisable for --json


def test_trace_can_expand_only_some_blocks():
    model = make_model("pre_ln_3x48")
    ids = random_ids(model, 5)
    trace = trace_forward(model, ids, layers={1})
    assert [s.name for s in trace.steps if s.block == 0] == ["block 0: whole block (pre_ln; not expanded)"]
    assert len([s for s in trace.steps if s.block == 1]) > 10
    assert set(trace.checks) == {"block 1", "logits"} and max(trace.checks.values()) < 1e-5


def test_trace_stats_ignore_masked_scores():
    model = make_model("tiny_post_ln")
    trace = trace_forward(model, random_ids(model, 6))
    masked = next(s for s in trace.steps if s.name == "block 0: causal mask: future keys set to -inf")
    assert all(math.isfinite(v) for v in masked.stats.values())
    assert "15 of 36" in masked.note


def test_next_token_distribution_is_sorted_softmax():
    model = make_model("tiny_post_ln")
    ids = random_ids(model, 4)
    top = next_token_distribution(model, ids, 5)
    with torch.no_grad():
        probs = model(ids)[0, -1].softmax(-1)
    assert [t.id for t in top] == probs.topk(5).indices.tolist()
    assert [t.prob for t in top] == sorted((t.prob for t in top), reverse=True)
    assert top[0].prob == pytest.approx(float(probs.max()))


def test_inspection_runs_in_eval_mode_and_restores_the_mode():
    model = make_model("tiny_post_ln")
    ids = random_ids(model, 6)
    expected_maps = attention_maps(model, ids)
    expected_top = next_token_distribution(model, ids, 3)
    model.train()  # dropout 0.1 everywhere: would change every number if it were active
    assert torch.equal(attention_maps(model, ids), expected_maps)
    assert next_token_distribution(model, ids, 3) == expected_top
    assert max(trace_forward(model, ids).checks.values()) < 1e-5
    assert model.training and all(m.training for m in model.modules())


def test_token_labels_are_readable():
    assert display_token("hello</w>") == "hello"
    assert display_token("hel") == "hel"
    assert display_token("Ġworld") == "\u2423world"
    assert display_token("Ċ") == "\u21b5"
    assert display_token("</w>") == "</w>"  # a token that is only the marker stays visible
    assert display_token(None) == "?"
    assert display_tokens([0, 1], {0: "a</w>", 1: "Ġb"}.get) == ["a", "\u2423b"]


def test_attention_page_is_self_contained_and_escapes_tokens():
    tokens = ["</script>", "<b>", "ok"]
    maps = torch.rand(2, 3, 3, 3).softmax(-1).tril().numpy()
    page = attention_page(maps, tokens, title="<t>")
    assert page.startswith("<!DOCTYPE html>")
    assert '<canvas id="heatmap"' in page and "&lt;t&gt;" in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched
    payload = page.split('<script type="application/json" id="gptkit-data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(payload)
    assert data["tokens"] == tokens
    assert [len(r) for r in data["attn"][1][2]] == [1, 2, 3]  # lower triangle only
    with pytest.raises(ValueError):
        attention_page(maps, tokens[:2])


def test_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    from gptkit.inspect.plots import plot_attention, plot_masks, plot_next_tokens

    maps = attention_maps(make_model("tiny_post_ln"), torch.arange(6)).numpy()
    for path in (
        plot_attention(maps[0], list("abcdef"), tmp_path / "grid.png", titles=[f"h{h}" for h in range(4)]),
        plot_masks([("causal", causal_mask(5).numpy(), list("01234"))], tmp_path / "mask.png"),
        plot_next_tokens(["x", "y"], [0.6, 0.3], tmp_path / "next.png"),
    ):
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "mask.png", "next.png"]  # no temp files left
