"""`gptkit reproduce` end to end on fake archives (seconds), its resume, its numbers and its commands;
the interval arithmetic and the baselines."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from collections import Counter

import pytest

from gptkit.builtin_data import fetch_many, local_folder_downloader, read_jsonl
from gptkit.builtin_data.derived import DERIVED_TASKS, example_sentences
from gptkit.cli import main
from gptkit.cli.reproduce import in_process_runner
from gptkit.reproduce import Reproduction, get_profile
from gptkit.reproduce.report import average, cell
from test_builtin_data import make_fake_archives

pytestmark = pytest.mark.usefixtures("one_thread")

TABLE_ROWS = ("full", "no_pretrain", "no_aux", "tfidf", "majority")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    registry = make_fake_archives(root / "archives", n_articles=120, sentences=3)
    cache = root / "cache"
    fetch_many(["all"], cache, downloader=local_folder_downloader(root / "archives"), registry=registry)
    return root, cache


@pytest.fixture(scope="module")
def first_run(fake):
    root, cache = fake
    out = root / "out"
    argv = ["reproduce", "--profile", "test", "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main(argv) == 0
    return out, argv, json.loads((out / "results.json").read_text())


def test_table5_and_figure2_written_from_the_runs(first_run):
    out, _, results = first_run
    s = get_profile("test")
    table = results["table5"]
    assert set(table) == set(TABLE_ROWS)
    for row in TABLE_ROWS:
        for task in s.tasks:
            c = table[row][task]
            assert 0 <= c["mean"] <= 1 and c["ci95"] >= 0 and c["n_test"] > 0
        assert table[row]["average"]["mean"] == pytest.approx(sum(table[row][t]["mean"] for t in s.tasks) / len(s.tasks))
    # each fine-tuned cell is the test accuracy its run wrote, and its command names that run
    for arm, flag in (("full", None), ("no_pretrain", "--no-pretrain"), ("no_aux", "--lm-coef 0 ")):
        for task in s.tasks:
            summary = json.loads((out / "runs" / f"{arm}_{task}_s1" / "summary.json").read_text())
            assert table[arm][task]["seeds"] == [summary["test"]["accuracy"]]
            command = table[arm][task]["commands"][0]
            assert f"--out {out / 'runs' / f'{arm}_{task}_s1'}" in command
            assert flag is None or flag in command
            assert f"--task {results['tasks'][task]['type']}" in command
    assert "--lm-coef 0.5" in table["full"]["sentiment"]["commands"][0]
    # all four input transformations were fine-tuned
    assert {results["tasks"][t]["type"] for t in s.tasks} == {"classification", "entailment", "similarity",
                                                              "multiple_choice"}

    left = results["figure2_left"]
    assert set(left) == set(s.transfer_tasks)
    for task, entry in left.items():
        assert [p["layers"] for p in entry["points"]] == [0, 1]  # the test model has 1 block
        assert "--transfer-layers 0" in entry["points"][0]["command"]
        assert entry["points"][-1]["accuracy"] == table["full"][task]["seeds"][0]
        assert entry["scratch"]["accuracy"] == table["no_pretrain"][task]["seeds"][0]

    right = results["figure2_right"]
    assert set(right) == {"sentiment", "acceptability", "multiple_choice"}
    for entry in right.values():
        steps = [p["step"] for p in entry["points"]]
        assert steps == [0, 2, 4, 6]  # random init + the 3 kept checkpoints of the 6-step pre-training
        assert all(0 <= p["accuracy"] <= 1 for p in entry["points"])
    assert right["multiple_choice"]["chance"] == 0.25
    assert "checkpoints/step_000004" in right["sentiment"]["points"][2]["command"]

    for name in ("figure2_left.png", "figure2_right.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert "| full model (aux LM lambda 0.5) |" in md and "| TF-IDF + logistic regression |" in md
    assert "Figure 2 left" in md and "Figure 2 right" in md
    commands = (out / "commands.sh").read_text()
    assert commands.count("\ngptkit finetune ") == 3 * len(s.tasks) + len(s.transfer_tasks)
    assert commands.count("\ngptkit zeroshot ") == 3 * 4


def test_a_recorded_command_reproduces_its_number(first_run, tmp_path):
    out, _, results = first_run
    command = results["table5"]["full"]["derived_same_article"]["commands"][0]
    argv = shlex.split(command)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["test"]["accuracy"] == results["table5"]["full"]["derived_same_article"]["seeds"][0]


def test_task_files_hold_no_pretraining_text(first_run):
    out, _, results = first_run
    pretraining = [r["text"] for p in sorted((out / "data" / "pretrain").glob("*.jsonl")) for r in read_jsonl(p)]
    for task, info in results["tasks"].items():
        rows = read_jsonl(out / "tasks" / task / "test.jsonl")
        assert len(rows) == info["sizes"]["test"] > 0
        if task == "derived_word_order":
            continue  # scrambled text is new; test_derived checks the originals
        texts = [s for r in rows for s in (example_sentences(r, DERIVED_TASKS[task]) if info["derived"] else [r["text"]])]
        assert not [t for t in texts if any(t in doc for doc in pretraining)], task
        assert info["derived"] == task.startswith("derived_")


def _logged_run(argv: list[str], caplog) -> str:
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    return caplog.text


def test_resume_skips_finished_stages(first_run, caplog):
    out, argv, results = first_run
    for stage in ("finetune_no_aux_topics_s1", "zeroshot_step000004"):  # as if interrupted in those two
        (out / "stages" / f"{stage}.json").unlink()
    log = _logged_run(argv, caplog)
    assert "pre-train the LM, keeping 3 checkpoints: done in an earlier run, skipped" in log
    assert "Table 5: Wikipedia topic, without aux LM (lambda 0), seed 1 ..." in log
    assert "zero-shot heuristics after 4 updates ..." in log
    assert "Table 5: movie-review sentiment, without pre-training, seed 1: done in an earlier run, skipped" in log
    again = json.loads((out / "results.json").read_text())
    assert again["table5"] == results["table5"] and again["figure2_right"] == results["figure2_right"]


def test_sigterm_stops_with_143_and_the_same_command_resumes(first_run, fake, monkeypatch, caplog, capsys):
    """SIGTERM in the middle of a fine-tuning run: the loop saves a checkpoint, `gptkit reproduce` exits
    143 with the finished stages kept, and the same command resumes the run (`--resume`) to the number
    an uninterrupted run gives."""
    from gptkit.training import signals

    out, _, results = first_run
    root, cache = fake
    enter = signals.StopRequest.__enter__

    def sigterm_once(self):  # what the handler does when SIGTERM arrives during the first update
        monkeypatch.setattr(signals.StopRequest, "__enter__", enter)
        enter(self).request("SIGTERM")
        return self

    monkeypatch.setattr(signals.StopRequest, "__enter__", sigterm_once)
    argv = ["reproduce", "--profile", "test", "--init", str(out), "--out", str(root / "sigterm"), "--cache-dir",
            str(cache), "--quiet"]
    assert main(argv) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    stages = root / "sigterm" / "stages"
    assert (stages / "baselines.json").is_file() and not (stages / "finetune_full_sentiment_s1.json").exists()
    assert (root / "sigterm" / "runs" / "full_sentiment_s1" / "checkpoints").is_dir()
    log = _logged_run(argv, caplog)
    assert "baselines: done in an earlier run, skipped" in log
    again = json.loads((root / "sigterm" / "results.json").read_text())
    assert again["table5"]["full"]["sentiment"]["seeds"] == results["table5"]["full"]["sentiment"]["seeds"]
    assert "--resume" in (root / "sigterm" / "logs" / "full_sentiment_s1.txt").read_text().splitlines()[0]


def test_refuses_a_folder_with_other_settings(first_run, fake, capsys):
    root, cache = fake
    other = root / "other"
    other.mkdir()
    (other / "settings.json").write_text(json.dumps({"reproduce": {"profile": "default"}}))
    assert main(["reproduce", "--profile", "test", "--out", str(other), "--cache-dir", str(cache), "--quiet"]) == 2
    assert "holds a reproduction with other settings" in capsys.readouterr().err


def test_init_reuses_a_pretrained_run_and_its_checkpoints(first_run, fake, caplog):
    out, _, _ = first_run
    root, cache = fake
    settings = dataclasses.replace(get_profile("test"), tasks=("sentiment",), transfer_tasks=("sentiment",))
    repro = Reproduction(settings, root / "reuse", init=out, cache_dir=cache, progress=False, runner=in_process_runner)
    with caplog.at_level("INFO"):
        results = repro.run()
    assert "pre-train the LM" not in caplog.text and "BPE" not in caplog.text  # the --init run is reused
    assert results["lm"]["model_dir"] == str(out / "runs" / "pretrain" / "model")
    assert f"--init {out / 'runs' / 'pretrain' / 'model'}" in results["table5"]["full"]["sentiment"]["commands"][0]
    assert [p["step"] for p in results["figure2_right"]["sentiment"]["points"]] == [0, 2, 4, 6]


def test_bad_init_is_one_line(tmp_path, capsys):
    assert main(["reproduce", "--profile", "test", "--init", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gptkit reproduce: error: --init") and "\n" not in err


def test_cells_and_average_intervals():
    c = cell([0.8, 0.7], 100)
    p = 0.75
    assert c["mean"] == pytest.approx(p)
    # test-set sampling plus the seeds' variance (sample variance 0.005, over 2 seeds)
    assert c["ci95"] == pytest.approx(1.96 * math.sqrt(p * (1 - p) / 100 + 0.005 / 2))
    one = cell([0.5], 400)
    assert one["ci95"] == pytest.approx(1.96 * math.sqrt(0.25 / 400))
    avg = average([c, one])
    assert avg["mean"] == pytest.approx(0.625)
    assert avg["ci95"] == pytest.approx(1.96 * math.sqrt(c["var"] + one["var"]) / 2)


def test_baseline_rows_are_gptkit_baseline_on_the_task_files(first_run, capsys):
    """Both baseline rows come from the recorded `gptkit baseline` command, for every task type, with
    values a broken baseline would miss: the fake built-in tasks give their labels away by their words
    (TF-IDF perfect), and the majority class scores exactly the test share of the commonest training
    label (multiple choice: answer position)."""
    out, _, results = first_run
    table = results["table5"]
    for task in get_profile("test").tasks:
        command = table["tfidf"][task]["commands"][0]
        assert command == table["majority"][task]["commands"][0]
        argv = shlex.split(command)[1:]
        assert argv[:3] == ["baseline", "--task", results["tasks"][task]["type"]]
        assert f"--train {out / 'tasks' / task / 'train.jsonl'}" in command
        assert main(argv) == 0
        alone = json.loads(capsys.readouterr().out)
        assert table["tfidf"][task]["mean"] == alone["tfidf"]["test"]["accuracy"]
        assert table["majority"][task]["mean"] == alone["majority"]["test"]["accuracy"]
        assert alone["tfidf"]["chosen_on"] == "validation"
        train = Counter(str(r["label"]) for r in read_jsonl(out / "tasks" / task / "train.jsonl"))
        test = [str(r["label"]) for r in read_jsonl(out / "tasks" / task / "test.jsonl")]
        commonest = max(sorted(train), key=train.__getitem__)
        assert table["majority"][task]["mean"] == pytest.approx(test.count(commonest) / len(test)), task
    for task in ("sentiment", "topics"):
        assert table["tfidf"][task]["mean"] == 1.0, task
    commands = (out / "commands.sh").read_text()
    assert commands.count("\ngptkit baseline ") == len(get_profile("test").tasks)


def test_library_runner_runs_gptkit_in_a_fresh_process(tmp_path):
    from gptkit.errors import GptkitError
    from gptkit.reproduce.commands import run_gptkit, subprocess_runner

    code, printed = subprocess_runner(["data", "list", "--cache-dir", str(tmp_path)])
    assert code == 0 and "shakespeare" in printed
    with pytest.raises(GptkitError, match=r"`gptkit finetune --task nope` failed with exit status 2"):
        run_gptkit(subprocess_runner, ["finetune", "--task", "nope"], tmp_path / "log.txt")
    assert (tmp_path / "log.txt").read_text().startswith("$ gptkit finetune --task nope")


def test_default_pretrains_its_own_smaller_lm_on_the_demos_data(tmp_path):
    """The default reproduction's ~30 fine-tuning runs were budgeted on the 4 x 192 LM: the demo's
    larger default model must not silently make it dearer."""
    from gptkit.demo import get_profile as get_demo_profile

    r = Reproduction(get_profile("default"), tmp_path / "out")
    demo = get_demo_profile("default")
    assert (r.demo.settings.model["n_layer"], r.demo.settings.model["n_embd"], r.demo.settings.pretrain_steps) == (4, 192, 600)
    assert r.demo.settings.vocab_size == demo.vocab_size
    # ... nor its new corpus silently change the text Table 5 and Figure 2 were measured on
    assert r.demo.settings.pretrain_sources == ("shakespeare", "wikipedia", "reviews", "opinion")
    assert r.demo.settings.opinion_repeat == 3
