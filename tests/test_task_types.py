"""A task type is one object: a fifth type, defined here and registered, fine-tunes, evaluates and
predicts through the unchanged library and CLI (issue 11)."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from gptkit.cli import main
from gptkit.errors import GptkitError
from gptkit.tasks import TaskSpec, TaskType, register, task_type, task_type_names
from gptkit.tasks.config import FinetuneConfig
from gptkit.tasks.finetune import finetune
from gptkit.tasks.predict import evaluate, predict
from gptkit.tasks.tasktype import unregister
from gptkit.tokenizer import train_from_texts

FILL = "apple river stone cloud music table window garden silver paper orange bread candle forest mirror".split()


class OrderedPairScore(TaskType):
    """A toy two-text regression whose score depends on the ORDER of the texts: 3 points if the
    query is "good", 1 if the passage is. Input `<s> query $ passage <e>` (one order only: a
    symmetric head such as similarity's could not learn it), one output, MSE, Pearson first."""

    name = "ordered_pair_score"
    text_fields = ("query", "passage")

    def text_columns(self, pick):
        return {"query": pick.require("query", ("query", "q")), "passage": pick.require("passage", ("passage", "p"))}

    def learn(self, spec, rows, columns):
        return super().learn(dataclasses.replace(spec, regression=True), rows, columns)

    def encode(self, transform, example):
        enc = transform.tok.encode
        seq, cut = transform.pair(enc(example.texts[0]), enc(example.texts[1]))
        return [seq], cut


@pytest.fixture
def fifth_type():
    kind = register(OrderedPairScore())
    yield kind
    unregister(kind.name)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    train_from_texts([" ".join(FILL + ["good", "bad"])] * 5, vocab_size=200, min_frequency=1).save(d)
    return d


def _part(rng, good: bool) -> str:
    words = rng.sample(FILL, 2) + ["good" if good else "bad"]
    rng.shuffle(words)
    return " ".join(words)


def pair_rows(rng, n):
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 1), rng.randint(0, 1)
        rows.append({"query": _part(rng, a), "passage": _part(rng, b), "label": 3 * a + b + 0.25})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_fifth_task_type_fine_tunes_evaluates_and_predicts(fifth_type, tmp_path, tok_dir):
    torch.set_num_threads(1)
    rng = random.Random(0)
    train = write_jsonl(tmp_path / "train.jsonl", pair_rows(rng, 320))
    val = write_jsonl(tmp_path / "val.jsonl", pair_rows(rng, 60))
    summary = finetune(FinetuneConfig(
        task="ordered_pair_score", train=train, val=val, out=tmp_path / "run", no_pretrain=True, preset="tiny",
        tokenizer=tok_dir, lr=3e-3, epochs=8, batch_size=16, warmup=0.1, progress=False,
    ))
    assert summary["task"] == "ordered_pair_score" and summary["regression"] and summary["metric"] == "pearson"
    # The order matters (3 points vs 1): a model blind to it could reach at most pearson 0.894 (mse 0.5).
    assert summary["val"]["pearson"] >= 0.97, summary["val"]
    assert summary["val"]["mse"] < 0.2, summary["val"]

    again = evaluate(tmp_path / "run", val)
    assert again["pearson"] == pytest.approx(summary["val"]["pearson"], abs=1e-6)
    out = predict(tmp_path / "run", val, tmp_path / "pred.jsonl")
    records = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert out["rows"] == 60 and set(records[0]) == {"where", "prediction", "gold", "truncated"}
    errors = [abs(r["prediction"] - r["gold"]) for r in records]
    assert sum(errors) / len(errors) < 0.3


def test_the_cli_offers_a_registered_type(fifth_type, tmp_path, tok_dir, capsys):
    assert "ordered_pair_score" in task_type_names()
    rng = random.Random(1)
    train = write_jsonl(tmp_path / "train.jsonl", pair_rows(rng, 32))
    code = main(["finetune", "--task", "ordered_pair_score", "--train", str(train), "--out", str(tmp_path / "run"),
                 "--no-pretrain", "--preset", "tiny", "--tokenizer", str(tok_dir), "--max-steps", "2", "--quiet"])
    assert code == 0
    assert "task ordered_pair_score: 2 updates on 32 examples" in capsys.readouterr().out


def test_unknown_type_and_fields_are_one_line_errors(fifth_type):
    with pytest.raises(GptkitError, match="unknown task type 'summarization'; choose one of .*ordered_pair_score"):
        TaskSpec("summarization")
    with pytest.raises(GptkitError, match=r"a ordered_pair_score task has \['query', 'passage', 'label'\]"):
        TaskSpec("ordered_pair_score", columns={"text": "x"})
    with pytest.raises(GptkitError, match="already registered"):
        register(OrderedPairScore())


def test_learning_returns_a_new_spec(tmp_path):
    """Parsing a training file teaches a NEW spec; the one given is never changed behind the caller's back."""
    from gptkit.tasks import load_training_examples

    spec = TaskSpec("classification")
    f = write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    learned, xs = load_training_examples(spec, f)
    assert spec.labels is None and learned.labels == ["neg", "pos"] and [x.label for x in xs] == [1, 0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.labels = ["x"]  # type: ignore[misc]
    assert task_type("classification").metric_names(learned) == ("accuracy", "f1", "matthews")
