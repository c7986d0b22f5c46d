"""`gptkit demo` end to end on tiny built-in slices (fake archives the test builds), offline."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from gptkit.baseline import BaselineConfig, run_baselines
from gptkit.builtin_data import fetch_many, local_folder_downloader, read_jsonl
from gptkit.cli import build_parser, main
from gptkit.demo.pipeline import _opinion_documents
from gptkit.demo.settings import PROFILES, get_profile
from gptkit.model import GPT, GPTConfig
from gptkit.training.precision import cpu_emulates_bf16
from test_builtin_data import make_fake_archives


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    registry = make_fake_archives(root / "archives")
    cache = root / "cache"
    # The demo finds the (fake) datasets already in the cache, exactly as after `gptkit data fetch`.
    fetch_many(["all"], cache, downloader=local_folder_downloader(root / "archives"), registry=registry)
    out = root / "out"
    return root, cache, out


def test_demo_end_to_end_then_resume(demo_run, capsys, caplog):
    root, cache, out = demo_run
    argv = ["demo", "--profile", "test", "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| movie-review sentiment (2 classes) | accuracy (test) |" in printed
    assert "| Wikipedia topic (3 classes) | accuracy (test) |" in printed
    assert "verdict: pre-training" in printed
    header = next(line for line in printed.splitlines() if line.startswith("| task |"))
    assert "| pre-trained | from scratch | TF-IDF + LR | majority class |" in header
    assert "pre-trained - TF-IDF (95% CI)" in header
    assert "95% intervals paired over the test examples" in printed
    assert "precision fp32" in printed or "precision bf16" in printed
    # The bf16 ceiling is measured where the CPU has bf16 units; one that emulates bf16 says so instead.
    bf16 = "bf16 emulated (" if cpu_emulates_bf16() else "GFLOP/s bf16"
    assert "GFLOP/s fp32" in printed and bf16 in printed
    verdict_line = next(line for line in printed.splitlines() if line.startswith("verdict:"))
    for title in ("movie-review sentiment", "Wikipedia topic"):  # every task, in both judgements
        assert verdict_line.count(title) == 2

    results = json.loads((out / "results.json").read_text())
    for task in ("sentiment", "topics"):
        entry = results["tasks"][task]
        assert entry["examples"]["test"] > 0
        assert entry["vs_tfidf"] == pytest.approx(entry["test_accuracy"]["pretrained"] - entry["test_accuracy"]["tfidf"])
        # the baselines saw exactly the labelled examples the GPT arms were fine-tuned on
        files = out / "data" / "tasks" / task
        assert entry["baseline_examples"] == entry["examples"]
        alone = run_baselines(BaselineConfig(task="classification", train=files / "train.jsonl",
                                             val=files / "validation.jsonl", test=files / "test.jsonl"))
        assert alone["tfidf"]["test"]["accuracy"] == entry["test_accuracy"]["tfidf"]
        assert alone["majority"]["test"]["accuracy"] == entry["test_accuracy"]["majority"]
        assert entry["tfidf"]["C"] == alone["tfidf"]["C"]
        # Thresholds a broken baseline would miss: the fake labels are given away by their words
        # (great/dull, painting/number/river), so TF-IDF must be perfect; the majority class scores
        # exactly the test share of the commonest training label.
        assert entry["test_accuracy"]["tfidf"] == 1.0
        train_labels = Counter(r["label"] for r in read_jsonl(files / "train.jsonl"))
        test_labels = [r["label"] for r in read_jsonl(files / "test.jsonl")]
        commonest = max(sorted(train_labels), key=train_labels.__getitem__)
        assert entry["test_accuracy"]["majority"] == pytest.approx(test_labels.count(commonest) / len(test_labels))
        # the numbers in the table are the ones the fine-tuning runs wrote
        # (the GPT arms' 7 updates leave them at chance, so equality with their runs is the check here)
        predictions = {}
        for arm in ("pretrained", "scratch"):
            summary = json.loads((out / "runs" / f"{task}_{arm}" / "summary.json").read_text())
            assert summary["test"]["accuracy"] == entry["test_accuracy"][arm]
            predictions[arm] = json.loads(Path(summary["test_predictions"]).read_text())
            right = [p == y for p, y in zip(predictions[arm]["predictions"], predictions[arm]["labels"], strict=True)]
            assert sum(right) / len(right) == pytest.approx(entry["test_accuracy"][arm])
        # both differences carry the paired interval, recomputed here from the per-example predictions
        gold = predictions["pretrained"]["labels"]
        assert alone["tfidf"]["test_predictions"]["labels"] == gold == predictions["scratch"]["labels"]
        for key, theirs in (("difference", predictions["scratch"]["predictions"]),
                            ("vs_tfidf", alone["tfidf"]["test_predictions"]["predictions"])):
            d = np.array([float(a == y) - float(b == y) for a, b, y in zip(predictions["pretrained"]["predictions"],
                                                                            theirs, gold)])
            assert entry[f"{key}_interval"] == "paired"
            assert entry[f"{key}_95"] == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(len(d)))
    assert results["pretrain"]["val_ppl"] > 1 and results["pretrain"]["steps"] == 6
    host = results["host"]
    assert host["precision"] in ("fp32", "bf16") and host["requested_precision"] == "auto"
    assert host["fp32_gflops"] > 0 and host["bf16_matmul_speed"] > 0
    # both precisions timed (and both ceilings measured), except on a CPU that emulates bf16 (AVX2
    # only), where only fp32 is and the header says why
    emulated = host["bf16_matmul_speed"] < 0.5
    assert host["bf16_gflops"] is None if emulated else host["bf16_gflops"] > 0
    assert set(host["step_cpu_seconds"]) == ({"fp32"} if emulated else {"fp32", "bf16"})
    assert host["pretrain_estimate_seconds"] > 0
    assert results["pretrain"]["precision"] == host["precision"]  # the probe's choice is what trained
    assert len(results["samples"]) == 2
    for name in ("pretrain_loss.png", "finetune_curves.png", "accuracy_comparison.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    # model directories are HF directories with the tokenizer
    assert (out / "runs" / "pretrain" / "model" / "config.json").is_file()
    assert (out / "runs" / "pretrain" / "model" / "tokenizer.json").is_file()
    assert (out / "runs" / "topics_pretrained" / "best" / "task.json").is_file()

    # the topic task's validation and test articles are held out of the pre-training text
    pretrain_text = {r["text"] for r in read_jsonl(out / "data" / "pretrain" / "wikipedia.jsonl")}
    for split in ("validation", "test"):
        unseen = {r["text"] for r in read_jsonl(out / "data" / "tasks" / "topics" / f"{split}.jsonl")}
        assert unseen and not (unseen & pretrain_text), split
    # in-domain unlabelled text: the review TRAIN sentences and the opinion snippets are pre-training text,
    # the validation and test review sentences never are (nor are any labels)
    pretrain_files = sorted(p.name for p in (out / "data" / "pretrain").glob("*.jsonl"))
    assert pretrain_files == ["imdb.jsonl", "opinion.jsonl", "reviews.jsonl", "wikipedia.jsonl"]
    data_stage = json.loads((out / "stages" / "data.json").read_text())
    fetched = data_stage["sources"]
    assert sorted(fetched) == ["imdb_reviews", "movie_reviews", "opinion_snippets", "wikipedia"]  # not Shakespeare
    # the fake review quoting a held-out topic article is left out, the other 30 are read
    assert data_stage["pretrain_documents"]["imdb"] == 30 and data_stage["imdb_reviews_overlapping_held_out"] == 1
    assert "30 IMDB user reviews without labels (the 1 sharing 8 words" in printed
    assert not any("encyclopedia" in r["text"] for r in read_jsonl(out / "data" / "pretrain" / "imdb.jsonl"))
    pretrain_all = [r for name in pretrain_files for r in read_jsonl(out / "data" / "pretrain" / name)]
    assert all(set(r) == {"text"} for r in pretrain_all)
    pretrain_all_text = {line for r in pretrain_all for line in r["text"].split("\n")}
    reviews = {s: {r["text"] for r in read_jsonl(cache / "datasets" / "movie_reviews" / f"{s}.jsonl")}
               for s in ("train", "validation", "test")}
    assert reviews["validation"] and reviews["test"]
    assert not ((reviews["validation"] | reviews["test"]) & pretrain_all_text)
    train_only = reviews["train"] - reviews["validation"] - reviews["test"]
    assert train_only and train_only <= pretrain_all_text
    assert any("snippet" in t for t in pretrain_all_text)

    # Re-run after "interruption": finished stages are skipped, the rest run again.
    (out / "stages" / "finetune_topics_scratch.json").unlink()
    (out / "stages" / "samples.json").unlink()
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    log = caplog.text
    assert "pre-train the language model: done in an earlier run, skipped" in log
    assert "fine-tune Wikipedia topic from scratch (no pre-training) ..." in log
    again = json.loads((out / "results.json").read_text())
    assert again["tasks"]["sentiment"] == results["tasks"]["sentiment"]
    assert again["pretrain"] == results["pretrain"]


def test_demo_refuses_a_folder_with_other_settings(demo_run, capsys):
    root, cache, out = demo_run
    other = root / "other"
    other.mkdir()
    (other / "settings.json").write_text(json.dumps({"profile": "default"}))
    assert main(["demo", "--profile", "test", "--out", str(other), "--cache-dir", str(cache), "--quiet"]) == 2
    assert "holds a demo run with other settings" in capsys.readouterr().err


def test_demo_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPTKIT_FETCH_FROM", str(tmp_path / "empty"))
    code = main(["demo", "--profile", "test", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gptkit demo: error:") and "not found" in err and "\n" not in err
    assert not (tmp_path / "c" / "datasets").exists()


def test_opinion_documents_keep_every_copy_of_a_sentence_in_one_document():
    sentences = [f"sentence {i} ." for i in range(150)]
    docs = _opinion_documents(sentences, 3, random.Random(0))
    assert len(docs) == 3  # groups of 64, 64, 22
    for doc in docs:
        lines = doc.split("\n")
        assert len(lines) == 3 * len(set(lines)) and Counter(lines).most_common(1)[0][1] == 3
    assert sorted({line for d in docs for line in d.split("\n")}) == sorted(sentences)
    assert _opinion_documents(sentences, 1, random.Random(0))[0].split("\n") == sentences[:64]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_builds_its_model_and_fits_its_inputs(name):
    """Construction only (the large profile is for a GPU or many cores): the model builds, fine-tuning
    inputs fit its context, and the CLI selects the profile."""
    s = get_profile(name)
    config = GPTConfig(vocab_size=s.vocab_size, **s.model)
    with torch.device("meta"):  # shapes only: no memory, no init time
        n = GPT(config).num_parameters()
    assert max(s.sentiment_max_len, s.topic_max_len) <= config.n_ctx
    assert s.precision in ("auto", "fp32", "bf16") and s.pretrain_warmup < s.pretrain_steps
    assert build_parser().parse_args(["demo", "--profile", name]).profile == name
    if name == "large":
        assert config.n_embd == 512 and config.n_ctx == 512 and n > 20e6 and s.train_limit is None


def test_each_task_fine_tunes_for_its_own_epochs(tmp_path, monkeypatch):
    """The default profile gives the topic task 5 epochs (chosen on validation), sentiment 3."""
    import dataclasses

    import gptkit.tasks.finetune as finetune_module
    from gptkit.demo.pipeline import Demo

    seen: dict[str, float] = {}

    def fake_finetune(cfg):
        seen[cfg.train.parent.name] = cfg.epochs
        return {"stopped_by": None, "examples": {}, "labels": [], "steps": 0, "truncated": {}, "best_step": 0}

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    settings = dataclasses.replace(get_profile("default"), precision="fp32")
    demo = Demo(settings, tmp_path / "out", progress=False)
    demo.marker("host").parent.mkdir(parents=True)
    demo.marker("host").write_text(json.dumps({"device": "cpu", "precision": "fp32"}))
    for task in ("sentiment", "topics"):
        demo.stage_finetune(task, "pretrained")
    assert seen == {"sentiment": settings.finetune_epochs, "topics": settings.topic_epochs} == {"sentiment": 3.0, "topics": 5.0}


def test_differences_are_paired_over_test_examples_and_fall_back_without_predictions():
    from gptkit.demo.report import _task_entry

    gold = [0, 1] * 50
    pre = [y if i % 10 else 1 - y for i, y in enumerate(gold)]  # 90%: wrong on every tenth
    scratch = [y if i % 5 else 1 - y for i, y in enumerate(gold)]  # 80%: wrong on every fifth (pre's 10 too)

    def run(preds):
        right = sum(p == y for p, y in zip(preds, gold)) / len(gold)
        return {"test": {"accuracy": right}, "val": {"accuracy": right}, "examples": {"train": 10, "val": 100,
                "test": 100}, "labels": ["a", "b"], "steps": 1, "test_predictions": {"predictions": preds,
                                                                                   "labels": gold}}

    runs = {"pretrained": run(pre), "scratch": run(scratch)}
    entry = _task_entry("sentiment", runs, None)
    # d is 1 on 10 examples and 0 on 90: mean 0.1, variance 0.1 * 0.9 * 100 / 99
    assert entry["difference"] == pytest.approx(0.1) and entry["difference_interval"] == "paired"
    assert entry["difference_95"] == pytest.approx(1.96 * np.sqrt(0.09 * 100 / 99 / 100))
    # the independent form is wider: it counts the noise of the examples both get right or both wrong
    runs["scratch"]["test_predictions"] = None
    wide = _task_entry("sentiment", runs, None)
    assert wide["difference_interval"] == "independent"
    assert wide["difference_95"] == pytest.approx(1.96 * np.sqrt((0.09 + 0.16) / 100))
    assert wide["difference_95"] > 1.5 * entry["difference_95"]
