"""Fine-tuned directories that transformers loads with their task head (issue 14): a classification
run's best/ is an OpenAIGPTForSequenceClassification (GPT2ForSequenceClassification for the GPT-2
block order) directory, a multiple-choice one an OpenAIGPTDoubleHeadsModel directory, and both predict
what gptkit predicts (probabilities within 1e-5)."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch

from gptkit.model import GPT, preset
from gptkit.tasks import InputTransform, collate, load_examples, load_task_model
from gptkit.tasks.config import FinetuneConfig
from gptkit.tasks.finetune import finetune
from gptkit.tasks.inference import infer
from gptkit.tokenizer import train_from_texts

transformers = pytest.importorskip("transformers")

FILL = "apple river stone cloud music table window garden silver paper orange bread candle forest mirror".split()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    train_from_texts([" ".join(FILL + ["good", "bad", "which"])] * 5, vocab_size=200, min_frequency=1).save(d)
    return d


def _part(rng, good: bool) -> str:
    words = rng.sample(FILL, rng.randint(1, 4)) + ["good" if good else "bad"]  # lengths vary: padding is exercised
    rng.shuffle(words)
    return " ".join(words)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _init_dir(tmp_path, tok_dir, block_order: str):
    """A random 'pre-trained' model with the tokenizer, so the run grows the embedding for task tokens."""
    from gptkit.interop import save_pretrained
    from gptkit.tokenizer import GPTTokenizer

    tok = GPTTokenizer.load(tok_dir)
    torch.manual_seed(0)
    d = tmp_path / f"init_{block_order}"
    save_pretrained(GPT(preset("tiny", vocab_size=tok.vocab_size - 3, n_ctx=32, block_order=block_order)), d)
    tok.save(d)
    return d


def _finetune(tmp_path, tok_dir, task, rows, block_order="post_ln"):
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    finetune(FinetuneConfig(task=task, train=train, val=train, out=tmp_path / "run",
                            init=_init_dir(tmp_path, tok_dir, block_order), lr=3e-3, max_steps=6, batch_size=8,
                            progress=False))
    return tmp_path / "run" / "best", train


def _gptkit_probs(best, data):
    model, tok = load_task_model(best)
    spec = model.spec
    encoded = InputTransform(spec, tok, spec.max_len).encode_all(load_examples(spec, data))
    _, probs, _ = infer(model, encoded, tok.pad_id, batch_size=64)
    return model, tok, encoded, probs


@pytest.mark.parametrize("block_order", ["post_ln", "pre_ln"])
def test_classification_dir_is_a_transformers_sequence_classifier(tmp_path, tok_dir, block_order):
    rng = random.Random(0)
    rows = [{"text": _part(rng, y), "label": ["neg", "neu", "pos"][y]} for y in (rng.randint(0, 2) for _ in range(24))]
    best, data = _finetune(tmp_path, tok_dir, "classification", rows, block_order)
    model, tok, encoded, want = _gptkit_probs(best, data)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(best).eval()
    assert type(hf).__name__ == ("OpenAIGPT" if block_order == "post_ln" else "GPT2") + "ForSequenceClassification"
    assert hf.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    batch = collate(encoded, tok.pad_id, model.spec)  # right-padded, <e> the last real token of each row
    with torch.no_grad():
        got = hf(input_ids=batch.ids).logits.softmax(-1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert np.abs(want - want.mean(0)).max() > 1e-3  # the inputs really get different answers


def test_multiple_choice_dir_is_a_transformers_double_heads_model(tmp_path, tok_dir):
    rng = random.Random(1)
    rows = []
    for _ in range(16):
        y = rng.randint(0, 2)
        rows.append({"context": " ".join(rng.sample(FILL, 3)), "question": "which",
                     "choices": [_part(rng, i == y) for i in range(3)], "label": y})
    best, data = _finetune(tmp_path, tok_dir, "multiple_choice", rows)
    model, tok, encoded, want = _gptkit_probs(best, data)
    hf = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(best).eval()
    batch = collate(encoded, tok.pad_id, model.spec)
    B, K = len(encoded), batch.n_choices
    with torch.no_grad():
        out = hf(input_ids=batch.ids.view(B, K, -1), mc_token_ids=batch.extract.view(B, K))
    got = out.mc_logits.softmax(-1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_similarity_says_transformers_has_no_such_head(tmp_path, tok_dir, caplog):
    from gptkit.tasks import model as task_model

    task_model._WARNED.discard("similarity")
    rng = random.Random(2)
    rows = [{"sentence1": _part(rng, a), "sentence2": _part(rng, b), "label": int(a and b)}
            for a, b in ((rng.randint(0, 1), rng.randint(0, 1)) for _ in range(16))]
    with caplog.at_level(logging.WARNING, logger="gptkit.tasks.model"):
        best, _ = _finetune(tmp_path, tok_dir, "similarity", rows)
    assert sum("transformers has no head that adds" in r.message for r in caplog.records) == 1  # once, not per save
    from safetensors import safe_open

    with safe_open(str(best / "model.safetensors"), framework="pt") as f:
        assert not any(k.startswith(("score", "multiple_choice_head")) for k in f.keys())  # noqa: SIM118
    assert (best / "head.safetensors").is_file()


def test_the_classifier_has_no_bias_as_in_the_paper(tmp_path):
    """P(y|x) = softmax(h W_y): no bias term in W_y (and an old head file with one still loads)."""
    from gptkit.model import ClassifierHead

    assert ClassifierHead(8, 3).linear.bias is None
