"""The model itself: config validation, causality, KV cache exactness, padding, overfitting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptkit import GPT, KVCache
from gptkit.model import ConfigError, GPTConfig, preset
from gptkit.model.gpt import count_parameters, training_flops_per_token

BLOCK_ORDERS = ["post_ln", "pre_ln"]


def tiny(block_order: str = "post_ln", **kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=97, n_ctx=64, n_embd=32, n_layer=2, n_head=4, block_order=block_order)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("n_head", 5, "n_embd (64) must be divisible by GPTConfig.n_head (5)"),
        ("n_layer", 0, "GPTConfig.n_layer must be a positive integer"),
        ("vocab_size", -3, "GPTConfig.vocab_size"),
        ("attn_pdrop", 1.0, "GPTConfig.attn_pdrop must be in [0, 1)"),
        ("resid_pdrop", -0.1, "GPTConfig.resid_pdrop"),
        ("activation", "swish", "GPTConfig.activation"),
        ("block_order", "sandwich", "GPTConfig.block_order"),
    ],
)
def test_config_validation_names_the_field(field, value, needle):
    with pytest.raises(ConfigError) as err:
        GPTConfig(**{**dict(vocab_size=10, n_ctx=8, n_embd=64, n_layer=1, n_head=4), field: value})
    assert needle in str(err.value)


def test_unknown_preset_and_unknown_field():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("gpt5")
    with pytest.raises(ConfigError, match="n_embed"):
        GPTConfig.from_dict({"n_embed": 3})


def test_param_count_from_config_matches_model():
    for name in ("tiny", "mini", "small", "gpt1", "gpt2"):
        cfg = preset(name)
        with torch.device("meta"):
            model = GPT(cfg)
        assert count_parameters(cfg) == model.num_parameters(), name
    cfg = preset("gpt1")
    expected = 6 * (116_534_784 - 512 * 768) + 12 * 12 * 768 * 512
    assert training_flops_per_token(cfg) == expected


def test_default_call_returns_lm_logits_and_head_is_tied():
    model = tiny()
    ids = torch.randint(0, 97, (2, 10))
    logits = model(ids)
    assert logits.shape == (2, 10, 97)
    hidden = model.transformer(ids).hidden
    assert torch.allclose(logits, hidden @ model.transformer.tok_emb.weight.T, atol=1e-5)
    assert not any(p is not model.transformer.tok_emb.weight and p.shape == (97, 32) for p in model.parameters())


def test_gpt1_preset_is_the_papers_model():
    """Every field of the `gpt1` preset (and GPTConfig's defaults, which it is) holds SPEC section 1's value:
    the parity tests read eps, dropout and activation from the HF config file, so they cannot see these."""
    c = preset("gpt1")
    assert c == GPTConfig()
    assert (c.n_layer, c.n_embd, c.n_head, c.head_dim, c.inner_dim, c.n_ctx, c.vocab_size) == (
        12, 768, 12, 64, 3072, 512, 40478)
    assert (c.activation, c.block_order) == ("gelu", "post_ln")
    assert (c.embd_pdrop, c.attn_pdrop, c.resid_pdrop) == (0.1, 0.1, 0.1)
    assert (c.layer_norm_epsilon, c.initializer_range) == (1e-5, 0.02)


def test_gelu_is_the_tanh_form():
    """0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), not the erf GELU (they differ by up to ~5e-4)."""
    from gptkit.model.blocks import MLP

    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    tanh_form = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    mlp = MLP(GPTConfig(vocab_size=10, n_ctx=8, n_embd=16, n_layer=1, n_head=2))
    assert (mlp.act(x) - tanh_form).abs().max().item() < 1e-12
    assert (F.gelu(x) - tanh_form).abs().max().item() > 1e-4  # the check can tell the two apart


def test_init_follows_the_paper():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=4000, n_ctx=64, n_embd=128, n_layer=2, n_head=4))
    w = model.transformer.blocks[0].mlp.fc.weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(model.transformer.blocks[0].mlp.fc.bias) == 0
    assert torch.all(model.transformer.blocks[1].ln_mlp.weight == 1)
    assert abs(model.transformer.tok_emb.weight.std().item() - 0.02) < 0.002


@pytest.mark.parametrize("block_order", BLOCK_ORDERS)
def test_residual_projections_are_scaled_only_in_the_pre_ln_order(block_order):
    """GPT-2's order draws each block's two residual projections from N(0, 0.02 / sqrt(2 n_layer));
    GPT-1's post-LN order draws them like every other weight, N(0, 0.02)."""
    torch.manual_seed(0)
    n_layer = 8
    model = GPT(GPTConfig(vocab_size=500, n_ctx=16, n_embd=256, n_layer=n_layer, n_head=4, block_order=block_order))
    expected = 0.02 / math.sqrt(2 * n_layer) if block_order == "pre_ln" else 0.02
    for block in model.transformer.blocks:
        for w in (block.attn.proj.weight, block.mlp.proj.weight):
            assert abs(w.std().item() - expected) < 0.05 * expected
        assert abs(block.attn.qkv.weight.std().item() - 0.02) < 0.001  # the other weights keep 0.02


@pytest.mark.parametrize("block_order", BLOCK_ORDERS)
def test_causality_future_tokens_never_change_past_logits(block_order):
    model = tiny(block_order)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (1, 24), generator=g)
    base = model(ids)
    for t in (0, 5, 23):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 1) % 97
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t]), f"position < {t} changed"
        assert not torch.allclose(out[:, t], base[:, t])


def greedy(model: GPT, prompt: torch.Tensor, steps: int, use_cache: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    ids = prompt
    logits_seen = []
    cache = KVCache.for_model(model.config, prompt.size(0)) if use_cache else None
    step_input = prompt
    with torch.no_grad():
        for _ in range(steps):
            if use_cache:
                logits = model(step_input, cache=cache)[:, -1]
            else:
                logits = model(ids)[:, -1]
            logits_seen.append(logits)
            nxt = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            step_input = nxt
    return ids, logits_seen


@pytest.mark.parametrize("block_order", BLOCK_ORDERS)
def test_kv_cache_greedy_equals_uncached(block_order):
    model = tiny(block_order)
    prompt = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(3))
    cached, cached_logits = greedy(model, prompt, 50, use_cache=True)
    plain, plain_logits = greedy(model, prompt, 50, use_cache=False)
    assert torch.equal(cached, plain)
    worst = max((a - b).abs().max().item() for a, b in zip(cached_logits, plain_logits))
    assert worst <= 1e-5


@pytest.mark.parametrize("block_order", BLOCK_ORDERS)
def test_chunked_prefill_into_cache_equals_one_pass(block_order):
    model = tiny(block_order)
    ids = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(4))
    cache = KVCache.for_model(model.config, 2)
    with torch.no_grad():
        parts = [model(ids[:, a:b], cache=cache) for a, b in ((0, 11), (11, 12), (12, 30))]
        full = model(ids)
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("block_order", BLOCK_ORDERS)
def test_left_padding_with_positions_equals_unpadded(block_order):
    """Left-padded rows with per-row positions and a padding mask give each row's unpadded logits."""
    model = tiny(block_order)
    g = torch.Generator().manual_seed(5)
    short, long = torch.randint(0, 97, (1, 5), generator=g), torch.randint(0, 97, (1, 9), generator=g)
    pad = torch.zeros(1, 4, dtype=torch.long)
    batch = torch.cat([torch.cat([pad, short], 1), long], 0)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :4] = False
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(batch, positions=positions, padding_mask=mask)
        assert (out[0, 4:] - model(short)[0]).abs().max().item() <= 1e-5
        assert (out[1] - model(long)[0]).abs().max().item() <= 1e-5
        assert torch.isfinite(out).all()  # padding rows must not produce NaN
        # and the same through the cache, one decode step after the padded prefill
        cache = KVCache.for_model(model.config, 2)
        model(batch, positions=positions, padding_mask=mask, cache=cache)
        nxt = torch.tensor([[3], [4]])
        step = model(nxt, positions=positions[:, -1:] + 1, padding_mask=torch.ones(2, 1, dtype=torch.bool), cache=cache)
        assert (step[0, 0] - model(torch.cat([short, nxt[:1]], 1))[0, -1]).abs().max().item() <= 1e-5
        assert (step[1, 0] - model(torch.cat([long, nxt[1:]], 1))[0, -1]).abs().max().item() <= 1e-5


def test_attention_probabilities_path_matches_fused_path():
    model = tiny()
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        fused = model.transformer(ids).hidden
        out = model.transformer(ids, output_attentions=True)
    assert (out.hidden - fused).abs().max().item() <= 1e-5
    probs = out.attentions[0]
    assert probs.shape == (2, 4, 12, 12)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 12), atol=1e-6)
    assert torch.all(probs.triu(1) == 0)


def test_too_long_input_is_a_clear_error():
    model = tiny(n_ctx=16)
    with pytest.raises(ValueError, match="exceeds the model's context window n_ctx=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_resize_token_embeddings_keeps_old_rows_and_adds_fresh_ones():
    model = tiny()
    old = model.transformer.tok_emb.weight.detach().clone()
    model.resize_token_embeddings(100)
    new = model.transformer.tok_emb.weight
    assert new.shape == (100, 32) and model.config.vocab_size == 100
    assert torch.equal(new[:97], old)
    assert new[97:].abs().max() > 0 and new[97:].std() < 0.1
    assert model(torch.tensor([[99]])).shape == (1, 1, 100)


def test_tiny_model_overfits_one_batch():
    """A 2-layer model memorises 4 random sequences of 16 tokens. Chance level is ln(97) = 4.57 nats;
    after 150 Adam steps the loss must be below 0.1 (i.e. >90% probability on each memorised token)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, n_ctx=32, n_embd=64, n_layer=2, n_head=4,
                          embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))
    ids = torch.randint(0, 97, (4, 17), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(first - math.log(97)) < 0.5
    assert loss.item() < 0.1
