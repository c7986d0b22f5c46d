"""The cheaper dropout (model/dropout.py): the right drop rate and expectation, the same mask in
backward, reproducible from the global seed, and what the model's dropout layers use."""

from __future__ import annotations

import torch

from gptkit.model import GPT, preset
from gptkit.model.dropout import Dropout, dropout, dropout_mask


def test_mask_drops_p_and_keeps_the_expectation():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        m = dropout_mask(torch.Size([400, 1000]), 0.1, dtype)
        assert m.dtype == dtype
        assert m.unique().tolist() == [0.0, float(torch.tensor(65536 / (65536 - 6554), dtype=dtype))]
        dropped = (m == 0).float().mean().item()
        assert abs(dropped - 6554 / 65536) < 0.003  # 400,000 draws: ~5 standard deviations
        assert abs(m.float().mean().item() - 1.0) < 0.01
    odd = dropout_mask(torch.Size([3, 5, 7]), 0.5, torch.float32)  # not a multiple of 4 elements
    assert odd.shape == (3, 5, 7) and 0 < (odd == 0).sum() < odd.numel()


def test_backward_uses_the_forward_mask_and_the_seed_reproduces_it():
    x = torch.randn(64, 128, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.3)
    y.sum().backward()
    kept = y != 0
    torch.testing.assert_close(x.grad, kept.float() / (1 - 19661 / 65536))
    torch.testing.assert_close(y[kept], x[kept] * (65536 / (65536 - 19661)))
    torch.manual_seed(3)
    torch.testing.assert_close(dropout(x, 0.3), y)  # the global generator: seeds and checkpoints hold
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0) is x


def test_the_model_uses_it():
    model = GPT(preset("tiny"))
    kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert kinds == {Dropout}
    model.train()
    ids = torch.randint(0, 512, (2, 16))
    torch.manual_seed(0)
    a = model(ids)
    torch.manual_seed(0)
    torch.testing.assert_close(model(ids), a)
    assert not torch.allclose(model(ids), a)  # another draw, other masks
    model.eval()
    torch.testing.assert_close(model(ids), model(ids))


def test_each_of_the_papers_three_dropouts_acts():
    """SPEC section 1: dropout on the embeddings, the attention probabilities and each sublayer's output.
    Each rate alone (the other two 0) must change a training-mode forward; all three 0 must not."""
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(1))
    fields = ("embd_pdrop", "attn_pdrop", "resid_pdrop")
    for name in (*fields, None):
        torch.manual_seed(0)
        model = GPT(preset("tiny", **{f: (0.5 if f == name else 0.0) for f in fields}))
        with torch.no_grad():
            evaluated = model.eval()(ids)
            trained = model.train()(ids)
        assert torch.equal(trained, evaluated) == (name is None), name
    # and the sublayer dropout runs after BOTH sublayers of every block (one rate for the two)
    called = []
    for m in model.modules():
        if isinstance(m, Dropout):
            m.register_forward_hook(lambda mod, args, out: called.append(mod))
    model(ids)
    blocks = model.transformer.blocks
    want = [model.transformer.emb_dropout, *[d for b in blocks for d in (b.attn.resid_dropout, b.mlp.dropout)]]
    assert called == want
