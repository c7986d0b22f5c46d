"""Task heads on top of the trunk's hidden states (SPEC section 4).

Each head reads h_l^m, the final block's state at the extract token `<e>`, and adds only a linear
layer W_y (with the paper's classifier dropout in front of it).
"""

from __future__ import annotations

import torch
from torch import nn

from .dropout import Dropout


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, C), positions (B,) -> the state at each row's position (B, C).

    With right padding the extract token is not the last column, so the position must be explicit."""
    index = positions.long().view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
    return hidden.gather(1, index).squeeze(1)


class ClassifierHead(nn.Module):
    """P(y|x) = softmax(h_l^m W_y): one linear layer over the extract-token state.

    With n_outputs = 1 and an MSE loss it is the regression head (e.g. STS-B scores)."""

    def __init__(self, n_embd: int, n_outputs: int, pdrop: float = 0.1, init_std: float = 0.02) -> None:
        super().__init__()
        self.dropout = Dropout(pdrop)
        self.linear = nn.Linear(n_embd, n_outputs)
        nn.init.normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor, extract_positions: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, C), extract_positions (B,) -> logits (B, n_outputs)."""
        return self.linear(self.dropout(gather_positions(hidden, extract_positions)))


class SimilarityHead(nn.Module):
    """Similarity has no inherent order: the states of `<s> A $ B <e>` and `<s> B $ A <e>` are added
    element-wise before the linear layer, so the output is symmetric in A and B by construction."""

    def __init__(self, n_embd: int, n_outputs: int, pdrop: float = 0.1, init_std: float = 0.02) -> None:
        super().__init__()
        self.dropout = Dropout(pdrop)
        self.linear = nn.Linear(n_embd, n_outputs)
        nn.init.normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)

    def forward(
        self,
        hidden_ab: torch.Tensor,
        extract_ab: torch.Tensor,
        hidden_ba: torch.Tensor,
        extract_ba: torch.Tensor,
    ) -> torch.Tensor:
        """Two orderings' hidden states (B, T, C) and extract positions (B,) -> logits (B, n_outputs)."""
        summed = gather_positions(hidden_ab, extract_ab) + gather_positions(hidden_ba, extract_ba)
        return self.linear(self.dropout(summed))


class MultipleChoiceHead(nn.Module):
    """Each candidate `<s> z q $ a_k <e>` is scored independently to one number; a softmax over the
    k scores is the answer distribution (the loss applies it via cross-entropy)."""

    def __init__(self, n_embd: int, pdrop: float = 0.1, init_std: float = 0.02) -> None:
        super().__init__()
        self.dropout = Dropout(pdrop)
        self.linear = nn.Linear(n_embd, 1)
        nn.init.normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor, extract_positions: torch.Tensor, n_choices: int) -> torch.Tensor:
        """hidden (B * K, T, C) with the K candidates of an example adjacent -> scores (B, K)."""
        scores = self.linear(self.dropout(gather_positions(hidden, extract_positions)))  # (B*K, 1)
        return scores.view(-1, n_choices)

    @staticmethod
    def probabilities(scores: torch.Tensor) -> torch.Tensor:
        """Softmax over the candidates of each example: (B, K) -> (B, K), rows sum to 1."""
        return scores.softmax(dim=-1)
