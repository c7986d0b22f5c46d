"""Task heads under transformers' names, so a fine-tuned gptkit directory is also a transformers one.

    classification / entailment (and their regression form) -> OpenAIGPTForSequenceClassification
        (GPT2ForSequenceClassification for the GPT-2 block order): `score.weight` = W_y, no bias,
        read at the last non-pad token, which is `<e>` in gptkit's inputs (right padding, pad_token_id set)
    multiple choice -> OpenAIGPTDoubleHeadsModel (GPT2DoubleHeadsModel): `multiple_choice_head.summary`
        = W_y (bias 0) at `mc_token_ids`, the `<e>` position of each candidate
    similarity -> none: transformers has no head that adds the states of both orders (A$B, B$A)

gptkit's own `head.safetensors` stays the source of truth; these are copies written next to it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..model.config import GPTConfig


def _family(config: GPTConfig) -> str:
    return "OpenAIGPT" if config.block_order == "post_ln" else "GPT2"


def sequence_classification(weight: torch.Tensor, config: GPTConfig, *, labels: list[str] | None,
                            pad_id: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """W_y (n_outputs, n_embd) as `score.weight`; labels None means one regression output."""
    n = weight.shape[0]
    names = labels if labels else [f"LABEL_{i}" for i in range(n)]
    head_config = {
        "architectures": [f"{_family(config)}ForSequenceClassification"],
        "num_labels": n,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
        "problem_type": "single_label_classification" if labels else "regression",
        "pad_token_id": pad_id,  # pooling reads the last non-pad token: `<e>`
    }
    return {"score.weight": weight.detach().clone()}, head_config


def double_heads(weight: torch.Tensor, config: GPTConfig, *, pdrop: float,
                 pad_id: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """W_y (1, n_embd) as the multiple-choice summary at `mc_token_ids` (no activation, bias 0)."""
    tensors = {"multiple_choice_head.summary.weight": weight.detach().clone(),
               "multiple_choice_head.summary.bias": torch.zeros(1, dtype=weight.dtype)}
    head_config = {
        "architectures": [f"{_family(config)}DoubleHeadsModel"],
        "num_labels": 1,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_proj_to_labels": True,
        "summary_activation": None,
        "summary_first_dropout": pdrop,
        "summary_last_dropout": 0.0,
        "pad_token_id": pad_id,
    }
    return tensors, head_config
