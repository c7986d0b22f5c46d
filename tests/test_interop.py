"""Parity with the Hugging Face reference, both directions, both block orders (SPEC section 7)."""

from __future__ import annotations

import pytest
import torch

from gptkit import GPT
from gptkit.interop import load_pretrained, save_pretrained
from gptkit.interop.hf import from_hf_state_dict, key_map, to_hf_state_dict
from gptkit.model import GPTConfig

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

# Random tiny shapes: layers, heads, width, positions, vocabulary and activation all vary.
OPENAI_CONFIGS = [
    dict(n_layer=1, n_head=1, n_embd=16, n_positions=8, vocab_size=37, afn="gelu"),
    dict(n_layer=2, n_head=4, n_embd=32, n_positions=24, vocab_size=101, afn="relu"),
    dict(n_layer=3, n_head=2, n_embd=24, n_positions=40, vocab_size=257, afn="gelu"),
    dict(n_layer=4, n_head=8, n_embd=64, n_positions=16, vocab_size=64, afn="relu"),
]
GPT2_CONFIGS = [
    dict(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=99, activation_function="gelu_new"),
    dict(n_layer=3, n_head=4, n_embd=48, n_positions=20, vocab_size=130, activation_function="relu", n_inner=80),
]
TOL = 1e-5


def random_ids(vocab: int, n_pos: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (3, n_pos), generator=g)


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Random biases and LayerNorm parameters too, so a swapped or missing tensor cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("kwargs", OPENAI_CONFIGS, ids=lambda k: f"L{k['n_layer']}H{k['n_head']}C{k['n_embd']}-{k['afn']}")
def test_openai_gpt_hf_to_gptkit_and_back(kwargs, tmp_path):
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(**kwargs)).eval()
    perturb(hf, 1)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf")
    ids = random_ids(kwargs["vocab_size"], kwargs["n_positions"], 2)
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= TOL

    # Reverse direction: gptkit writes, transformers reads, same logits.
    save_pretrained(ours, tmp_path / "ours")
    back = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert (back(ids).logits - got).abs().max().item() <= TOL


@pytest.mark.parametrize("kwargs", GPT2_CONFIGS, ids=lambda k: f"L{k['n_layer']}H{k['n_head']}-{k['activation_function']}")
def test_gpt2_hf_to_gptkit_and_back(kwargs, tmp_path):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs)).eval()
    perturb(hf, 3)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf")
    assert ours.config.block_order == "pre_ln"
    ids = random_ids(kwargs["vocab_size"], kwargs["n_positions"], 4)
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert (got - expected).abs().max().item() <= TOL
    save_pretrained(ours, tmp_path / "ours")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert (back(ids).logits - got).abs().max().item() <= TOL


def test_gptkit_written_model_loads_in_hf_with_same_logits(tmp_path):
    """Start from gptkit (not HF): a fresh GPT saved and loaded by OpenAIGPTLMHeadModel."""
    torch.manual_seed(5)
    ours = GPT(GPTConfig(vocab_size=77, n_ctx=20, n_embd=32, n_layer=2, n_head=4)).eval()
    perturb(ours, 6)
    save_pretrained(ours, tmp_path)
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path).eval()
    ids = random_ids(77, 20, 7)
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() <= TOL


def test_missing_square_c_proj_transpose_is_caught(tmp_path):
    """c_proj is square, so forgetting its transpose passes every shape check; logits must differ."""
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(**OPENAI_CONFIGS[1])).eval()
    hf_state = hf.state_dict()
    config = GPTConfig(vocab_size=101, n_ctx=24, n_embd=32, n_layer=2, n_head=4, activation="relu")
    good = from_hf_state_dict(hf_state, config, "openai-gpt")
    broken = dict(good)
    for key in broken:
        if key.endswith("attn.proj.weight"):
            broken[key] = broken[key].t()  # as if the transpose were missing
    assert all(broken[k].shape == good[k].shape for k in good)  # shapes cannot tell
    ids = random_ids(101, 24, 8)
    outputs = []
    for state in (good, broken):
        model = GPT(config).eval()
        model.load_state_dict(state)
        with torch.no_grad():
            outputs.append(model(ids))
    with torch.no_grad():
        reference = hf(ids).logits
    assert (outputs[0] - reference).abs().max().item() <= TOL
    assert (outputs[1] - reference).abs().max().item() > 1e-3


def test_key_map_round_trip_is_identity():
    config = GPTConfig(vocab_size=50, n_ctx=8, n_embd=16, n_layer=2, n_head=2, block_order="pre_ln")
    model = GPT(config)
    state = model.state_dict()
    back = from_hf_state_dict(to_hf_state_dict(state, config), config, "gpt2")
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert len(key_map(config, "gpt2")) == len(state)


def test_old_mask_buffers_and_tied_head_are_dropped():
    config = GPTConfig(vocab_size=50, n_ctx=8, n_embd=16, n_layer=2, n_head=2)
    hf_state = to_hf_state_dict(GPT(config).state_dict(), config)
    hf_state["lm_head.weight"] = hf_state["transformer.tokens_embed.weight"]
    for i in range(2):
        hf_state[f"transformer.h.{i}.attn.bias"] = torch.ones(1, 1, 8, 8).tril()
    state = from_hf_state_dict(hf_state, config, "openai-gpt")
    GPT(config).load_state_dict(state, strict=True)


def test_gpt1_preset_has_the_papers_shapes_and_hf_parameter_count():
    model = GPT.from_preset("gpt1")
    c = model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.inner_dim, c.n_ctx, c.vocab_size) == (12, 768, 12, 3072, 512, 40478)
    assert model.transformer.tok_emb.weight.shape == (40478, 768)
    assert model.transformer.blocks[0].attn.qkv.weight.shape == (2304, 768)
    assert model.transformer.ln_f is None  # GPT-1: no final LayerNorm
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig())
    hf_count = sum(p.numel() for p in hf.parameters())  # tied head counted once
    assert model.num_parameters() == hf_count == 116_534_784
