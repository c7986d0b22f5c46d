"""Zero-shot heuristics on the LM alone (SPEC section 6), with hand-built LMs whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from gptkit.cli import main
from gptkit.errors import GptkitError
from gptkit.interop import save_pretrained
from gptkit.model import GPT, preset
from gptkit.tasks import zeroshot
from gptkit.tokenizer import train_from_texts

WORDS = "the film was good bad fine dull great awful plot story very positive negative yes no cat dog sat ran on mat"


@pytest.fixture(scope="module")
def tok():
    return train_from_texts([WORDS] * 10, vocab_size=300, min_frequency=1)


def wid(tok, word):
    return tok.token_to_id(word + "</w>")


class UnigramLM(nn.Module):
    """Every position predicts the same fixed distribution: log P(token) = table[token]."""

    def __init__(self, log_probs: torch.Tensor, n_ctx: int = 64) -> None:
        super().__init__()
        self.table = log_probs
        self.config = preset("tiny", vocab_size=len(log_probs), n_ctx=n_ctx)

    def forward(self, ids):
        return self.table.expand(*ids.shape, -1).clone()


class CueLM(UnigramLM):
    """Prefers `positive` after any `good` has been seen, `negative` after any `bad`."""

    def __init__(self, tok) -> None:
        super().__init__(torch.zeros(tok.vocab_size))
        self.good, self.bad = wid(tok, "good"), wid(tok, "bad")
        self.pos, self.neg = wid(tok, "positive"), wid(tok, "negative")

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, self.config.vocab_size)
        seen_good = (ids == self.good).cumsum(1) > 0
        seen_bad = (ids == self.bad).cumsum(1) > 0
        logits[..., self.pos] += 3.0 * seen_good
        logits[..., self.neg] += 3.0 * seen_bad
        return logits


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_continuation_logprobs_matches_single_sequences(tok):
    torch.manual_seed(0)
    gpt = GPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=16)).eval()
    items = [([tok.eot_id, 5, 6], [7]), ([tok.eot_id], [8, 9, 10, 11]), ([tok.eot_id] + [12] * 20, [13, 14])]
    got = zeroshot.continuation_logprobs(gpt, items, batch_size=2)
    for (prefix, cont), (total, n) in zip(items, got):
        prefix = prefix[max(0, len(prefix) + len(cont) - 16):]  # a long prefix loses its beginning
        ids = torch.tensor([prefix + cont])
        with torch.no_grad():
            lp = gpt(ids)[0].log_softmax(-1)
        want = sum(float(lp[len(prefix) + i - 1, t]) for i, t in enumerate(cont))
        assert n == len(cont) and total == pytest.approx(want, abs=1e-4)


def test_sentiment_appends_very_and_compares_label_words(tok, tmp_path):
    rows = [{"text": "the film was good", "label": "pos"}, {"text": "the plot was bad", "label": "neg"},
            {"text": "good story", "label": "pos"}, {"text": "bad bad film", "label": "neg"}]
    f = write_jsonl(tmp_path / "s.jsonl", rows)
    r = zeroshot.sentiment(CueLM(tok), tok, f)  # labels sorted: neg -> "negative", pos -> "positive"
    assert r.metrics["accuracy"] == 1.0 and r.details["label_words"] == ["negative", "positive"]
    assert r.scores.shape == (4, 2)
    # Swapping the words flips every prediction.
    r2 = zeroshot.sentiment(CueLM(tok), tok, f, label_words="neg=positive,pos=negative")
    assert r2.metrics["accuracy"] == 0.0
    with pytest.raises(GptkitError, match="3 words for 2 labels"):
        zeroshot.sentiment(CueLM(tok), tok, f, label_words="a,b,c")


def test_acceptability_threshold_chosen_on_train(tok, tmp_path):
    table = torch.full((tok.vocab_size,), -8.0)
    for word in ("the", "cat", "sat", "on", "mat", "dog", "ran"):
        table[wid(tok, word)] = -1.0  # "grammatical" words are likely
    lm = UnigramLM(table)
    good = ["the cat sat", "the dog ran on the mat", "cat sat on mat"]
    bad = ["mat yes awful no", "no plot dull", "the awful no yes"]
    train = write_jsonl(tmp_path / "train.jsonl", [{"sentence": s, "label": 1} for s in good] + [{"sentence": s, "label": 0} for s in bad])
    test = write_jsonl(tmp_path / "test.jsonl", [{"sentence": "the dog sat", "label": 1}, {"sentence": "dull awful", "label": 0}])
    r = zeroshot.acceptability(lm, tok, test, train=train)
    assert r.metrics["accuracy"] == 1.0 and r.metrics["matthews"] == 1.0
    assert r.details["acceptable_label"] == "1" and r.details["train_matthews"] == 1.0
    assert -8.0 < r.details["threshold"] < -1.0
    with pytest.raises(GptkitError, match="needs --train"):
        zeroshot.acceptability(lm, tok, test, train=None)


def test_multiple_choice_highest_mean_logprob(tok, tmp_path):
    table = torch.full((tok.vocab_size,), -6.0)
    table[wid(tok, "great")] = -0.5
    table[wid(tok, "story")] = -0.5
    lm = UnigramLM(table)
    rows = [{"context": "the film", "question": "was it", "choices": ["awful dull", "great story", "bad"], "label": 1},
            {"context": "the plot", "choices": ["great", "dull awful"], "label": 0}]
    with pytest.raises(GptkitError, match="line 2: 2 candidates, but this task has 3"):
        zeroshot.multiple_choice(lm, tok, write_jsonl(tmp_path / "bad.jsonl", rows))
    f1 = write_jsonl(tmp_path / "a.jsonl", rows[:1])
    r = zeroshot.multiple_choice(lm, tok, f1)
    assert r.predictions == [1] and r.metrics["accuracy"] == 1.0
    # Mean, not sum: a long likely answer is not penalised for its length.
    # (The table holds logits: log-softmax shifts every score by the same constant.)
    np.testing.assert_allclose(r.scores[0] - r.scores[0, 1], [-5.5, 0.0, -5.5], atol=1e-5)


def cue_gpt(tok) -> GPT:
    """A real GPT whose next-token choice is known: every block's linear layers are zero and the
    positions carry nothing, so the state at a token is LayerNorm(its embedding); `positive` (and
    `negative`) embed as a large multiple of `good` (and `bad`), so after "good" the tied head
    puts `positive` far ahead, after "bad" `negative`, and after any other token neither."""
    torch.manual_seed(0)
    gpt = GPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=32))
    with torch.no_grad():
        for module in gpt.transformer.blocks.modules():
            if isinstance(module, nn.Linear):
                module.weight.zero_()
                module.bias.zero_()
        gpt.transformer.pos_emb.weight.zero_()
        emb = gpt.transformer.tok_emb.weight
        emb[wid(tok, "positive")] = 50 * emb[wid(tok, "good")]
        emb[wid(tok, "negative")] = 50 * emb[wid(tok, "bad")]
    return gpt


def test_cli_zeroshot_on_a_model_directory(tok, tmp_path, capsys):
    d = tmp_path / "run" / "model"
    save_pretrained(cue_gpt(tok), d)
    tok.save(d)
    data = write_jsonl(tmp_path / "s.jsonl", [{"sentence": "the film was good", "label": 1},
                                              {"sentence": "the film was bad", "label": 0},
                                              {"sentence": "the plot was bad", "label": 0},
                                              {"sentence": "the story was good", "label": 1}])
    # No cue: the label word follows the sentence's last word, which decides it (a model that is
    # not this one, or a label-word order mixed up, scores 0.5 or 0 here).
    assert main(["zeroshot", str(tmp_path / "run"), "--task", "sentiment", "--data", str(data), "--cue", "", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 4 and report["accuracy"] == 1.0 and report["matthews"] == 1.0
    # With the cue "very" appended, the word before the label word is always "very": one answer for all.
    assert main(["zeroshot", str(tmp_path / "run"), "--task", "sentiment", "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cue"] == "very" and report["accuracy"] == 0.5
    rc = main(["zeroshot", str(d), "--task", "acceptability", "--data", str(data)])
    assert rc == 2 and "needs --train" in capsys.readouterr().err


class BigramLM(UnigramLM):
    """The next token depends on the current one only: after `cat` comes `sat`, after `dog` comes `ran`."""

    def __init__(self, tok) -> None:
        super().__init__(torch.zeros(tok.vocab_size))
        self.follow = {wid(tok, "cat"): wid(tok, "sat"), wid(tok, "dog"): wid(tok, "ran")}

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, self.config.vocab_size)
        for a, b in self.follow.items():
            logits[..., b] += 4.0 * (ids == a)
        return logits


def test_winograd_fills_the_blank_and_scores_the_rest(tok, tmp_path):
    rows = [{"sentence": "the _ sat on the mat", "options": ["dog", "cat"], "label": 1},
            {"sentence": "a _ ran far", "options": ["cat", "dog"], "label": 1},
            {"sentence": "the _ sat on a mat", "option1": "cat", "option2": "dog", "answer": "1"}]
    f = write_jsonl(tmp_path / "w.jsonl", rows[:2])
    r = zeroshot.winograd(BigramLM(tok), tok, f)
    assert r.predictions == [1, 1] and r.metrics["accuracy"] == 1.0
    # only the rest after the blank is scored: "sat on the mat" (4 tokens), its first token decides
    assert r.scores[0, 1] - r.scores[0, 0] > 0.5
    g = write_jsonl(tmp_path / "wg.jsonl", rows[2:])  # WinoGrande's layout: option1/option2, answer 1-based
    assert zeroshot.winograd(BigramLM(tok), tok, g, label_base=1).predictions == [0]
    h = write_jsonl(tmp_path / "bad.jsonl", [{"sentence": "no blank here", "options": ["cat", "dog"], "label": 0}])
    with pytest.raises(GptkitError, match=r"bad.jsonl, line 1: the sentence must hold exactly one blank"):
        zeroshot.winograd(BigramLM(tok), tok, h)


def test_cli_winograd_on_the_documented_example_file(tok, tmp_path, capsys):
    """docs/winograd-example.jsonl is in the documented format and reads through `--task winograd`."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "docs" / "winograd-example.jsonl"
    d = tmp_path / "model"
    save_pretrained(cue_gpt(tok), d)
    tok.save(d)
    assert main(["zeroshot", str(d), "--task", "winograd", "--data", str(example), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the file's format is what is checked here (the heuristic itself is checked above, on a known LM)
    assert report["task"] == "winograd" and report["examples"] == 6 and report["choices"] == 2
