"""Task heads read the extract-token state; similarity is symmetric; multiple choice softmaxes."""

from __future__ import annotations

import torch

from gptkit import GPT
from gptkit.model import ClassifierHead, GPTConfig, MultipleChoiceHead, SimilarityHead, gather_positions


def test_similarity_head_is_symmetric_by_construction():
    torch.manual_seed(0)
    head = SimilarityHead(16, 3).eval()
    h_ab, h_ba = torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    pos_ab, pos_ba = torch.tensor([6, 3]), torch.tensor([4, 6])
    out = head(h_ab, pos_ab, h_ba, pos_ba)
    swapped = head(h_ba, pos_ba, h_ab, pos_ab)
    assert out.shape == (2, 3)
    assert torch.equal(out, swapped)


def test_similarity_head_adds_the_two_states_before_the_linear_layer():
    """SPEC section 4: the two orders' h_l^m are ADDED element-wise, then W_y (a mean or a max would
    also be symmetric, so the symmetry test alone cannot tell)."""
    torch.manual_seed(0)
    head = SimilarityHead(16, 3).eval()
    h_ab, h_ba = torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    pos_ab, pos_ba = torch.tensor([6, 3]), torch.tensor([4, 6])
    summed = gather_positions(h_ab, pos_ab) + gather_positions(h_ba, pos_ba)
    torch.testing.assert_close(head(h_ab, pos_ab, h_ba, pos_ba), summed @ head.linear.weight.T, rtol=0, atol=1e-6)


def test_multiple_choice_head_scores_each_candidate_and_softmaxes():
    torch.manual_seed(0)
    head = MultipleChoiceHead(16).eval()
    B, K, T = 3, 4, 9
    hidden = torch.randn(B * K, T, 16)
    positions = torch.randint(0, T, (B * K,))
    scores = head(hidden, positions, K)
    assert scores.shape == (B, K)
    # each candidate is scored independently: changing candidate (1, 2) changes only that score
    hidden2 = hidden.clone()
    hidden2[1 * K + 2] += 1.0
    diff = (head(hidden2, positions, K) - scores).abs() > 0
    assert diff[1, 2] and diff.sum() == 1
    probs = head.probabilities(scores)
    assert torch.allclose(probs.sum(-1), torch.ones(B))


def test_classifier_reads_extract_position_not_last_padded_position():
    """Right padding: the extract token sits before the pads, and only its state may matter."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_ctx=16, n_embd=32, n_layer=2, n_head=2)).eval()
    head = ClassifierHead(32, 2).eval()
    pad, extract = 0, 49
    seq = torch.tensor([[5, 6, 7, extract, pad, pad, pad], [8, 9, 10, 11, 12, 13, extract]])
    positions = torch.tensor([3, 6])
    logits = head(model.transformer(seq).hidden, positions)
    # Changing the padding after the extract token cannot change the prediction...
    seq2 = seq.clone()
    seq2[0, 4:] = torch.tensor([30, 31, 32])
    assert torch.equal(head(model.transformer(seq2).hidden, positions), logits)
    # ...while the prediction equals the unpadded sequence's state at its last (extract) token.
    alone = model.transformer(seq[:1, :4]).hidden
    assert torch.allclose(logits[0], head.linear(alone[0, -1]), atol=1e-6)
    # Reading the last column instead would give something else.
    assert not torch.allclose(head(model.transformer(seq).hidden, torch.tensor([6, 6]))[0], logits[0])


def test_gather_positions_picks_rows():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float).view(2, 3, 2)
    assert gather_positions(hidden, torch.tensor([2, 0])).tolist() == [[4.0, 5.0], [6.0, 7.0]]
