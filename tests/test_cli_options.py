"""Options declared once (issue 11 item 2) and checked before anything is written (issue 17 item 12);
the smaller fine-tuning defects of issue 17 (help text, run kind, --log-every, final_train_loss, plot)."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from gptkit.cli import build_parser, main
from gptkit.options import OptionError
from gptkit.tasks.config import FinetuneConfig
from gptkit.training import TrainConfig
from gptkit.training.pretrain import PRETRAIN_LOOP_DEFAULTS, PretrainOptions
from test_finetune import FILL, classification_rows, write_jsonl
from test_pretrain import args, make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("data"), 40)


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


BAD_PRETRAIN = [
    (("--seq-len", "0"), "--seq-len must be a positive integer or None, got 0"),
    (("--weight-decay", "-1"), "--weight-decay must be a finite number >= 0"),
    (("--lr", "inf"), "--lr must be a positive finite number, got inf"),
    (("--lr", "nan"), "--lr must be a positive finite number, got nan"),
    (("--threads", "-1"), "--threads must be a positive integer or None, got -1"),
    (("--device", "bogus"), "--device must be 'cpu', or 'cuda' / 'cuda:N'"),
    (("--device", "cuda:7"), "--device must be 'cpu', or 'cuda' / 'cuda:N'"),
    (("--eval-every", "-1"), "--eval-every must be a non-negative integer"),
    (("--save-every", "-2"), "--save-every must be a non-negative integer"),
    (("--keep-last", "0"), "--keep-last must be a positive integer"),
    (("--log-every", "0"), "--log-every must be a positive integer"),
    (("--grad-clip", "-1"), "--grad-clip must be a finite number >= 0 or None"),
    (("--warmup", "-5"), "--warmup must be a non-negative integer or None"),
    (("--steps", "0"), "--steps must be a positive integer"),
    (("--batch-size", "0"), "--batch-size must be a positive integer"),
]


@pytest.mark.parametrize("flags, message", BAD_PRETRAIN, ids=[" ".join(f) for f, _ in BAD_PRETRAIN])
def test_bad_pretrain_values_are_refused_before_anything_is_written(corpus, tmp_path, capsys, flags, message):
    if flags == ("--device", "cuda:7") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    out = tmp_path / "run"
    assert main(args(corpus, out, "--steps", "2", *flags)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gptkit pretrain: error: ") and message in err and "\n" not in err
    assert not out.exists()  # no run.json: the corrected command is not refused as "already holds a run"


def test_cuda_without_a_gpu_is_refused(corpus, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(args(corpus, tmp_path / "run", "--device", "cuda")) == 2
    assert "--device must be" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_corrected_command_runs_after_a_refused_one(corpus, tmp_path):
    out = tmp_path / "run"
    (out).mkdir()
    assert main(args(corpus, out, "--steps", "2", "--keep-last", "0")) == 2
    assert list(out.iterdir()) == []
    assert main(args(corpus, out, "--steps", "2", "--eval-every", "0")) == 0


def test_each_option_is_declared_once_and_the_cli_reads_it():
    # PretrainOptions holds the loop's settings as a TrainConfig, not copies of its fields
    pre = {f.name for f in dataclasses.fields(PretrainOptions)}
    assert not pre & {f.name for f in dataclasses.fields(TrainConfig)}
    parser = build_parser()
    ns = parser.parse_args(["pretrain", "--data", "d", "--out", "o"])
    assert ns.max_steps == PRETRAIN_LOOP_DEFAULTS["max_steps"] and ns.keep_last == TrainConfig.keep_last
    assert ns.lr == PretrainOptions.lr and ns.grad_clip == TrainConfig.grad_clip
    ns = parser.parse_args(["finetune", "--task", "classification", "--train", "t", "--out", "o", "--init", "i"])
    assert ns.lm_coef == FinetuneConfig.lm_coef and ns.seed == FinetuneConfig.seed and ns.warmup == 0.002
    # an option that is on by default can be turned off
    assert ns.group_by_length is True and FinetuneConfig.group_by_length is True
    off = parser.parse_args(["finetune", "--task", "classification", "--train", "t", "--out", "o", "--init", "i",
                             "--no-group-by-length"])
    assert off.group_by_length is False
    sub = next(a for a in parser._subparsers._group_actions[0].choices["pretrain"]._actions if a.dest == "keep_last")
    declared = TrainConfig.__dataclass_fields__["keep_last"].metadata["option"]
    assert sub.help.startswith(declared.help) and "(default: 3)" in sub.help


def test_library_errors_name_fields_not_flags():
    with pytest.raises(OptionError, match=r"^TrainConfig\.max_steps must be a positive integer, got 0$"):
        TrainConfig(max_steps=0)
    with pytest.raises(OptionError, match=r"^FinetuneConfig\.lm_coef must be a finite number >= 0, got -1"):
        FinetuneConfig(task="classification", train="x", init="y", lm_coef=-1)
    with pytest.raises(OptionError, match=r"^TrainConfig\.precision must be one of 'auto', 'fp32', 'bf16'"):
        TrainConfig(max_steps=1, precision="fp16")


def test_finetune_help_shows_a_single_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "warmup 0.2%," in out and "%%" not in out


# --- fine-tuning's smaller defects -------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    from gptkit.tokenizer import train_from_texts

    d = tmp_path_factory.mktemp("task")
    train_from_texts([" ".join(FILL + ["good", "bad"])] * 5, vocab_size=200, min_frequency=1).save(d / "tok")
    rows = classification_rows(random.Random(0), 48)
    return write_jsonl(d / "train.jsonl", rows), write_jsonl(d / "val.jsonl", rows[:16]), d / "tok"


def finetune_args(task_files, out, *extra):
    train, val, tok = task_files
    return ["finetune", "--task", "classification", "--train", str(train), "--val", str(val), "--out", str(out),
            "--no-pretrain", "--preset", "tiny", "--tokenizer", str(tok), "--batch-size", "8", "--epochs", "2",
            "--threads", "1", "--quiet", *extra]


def test_finetune_log_every_final_train_loss_and_plot(task_files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    assert main(finetune_args(task_files, out, "--log-every", "1")) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_lines] == list(range(1, 13))  # every update, not 3 points
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_train_loss"] == pytest.approx(train_lines[-1]["loss"])  # was null
    assert main(["plot", str(out)]) == 0
    from gptkit.training import plot

    labels = _plot_labels(plot, out)
    assert labels == ["train task loss", "validation task loss"]  # like with like, not total vs task


def _plot_labels(plot, run):
    import matplotlib.pyplot as plt

    seen = []
    real = plt.subplots

    def spy(*a, **k):
        fig, axes = real(*a, **k)
        seen.append(axes)
        return fig, axes

    plt.subplots = spy
    try:
        plot.plot_run(run, run / "again.png")
    finally:
        plt.subplots = real
    return [line.get_label() for line in seen[0][0].get_lines()]


def test_finetune_resume_on_a_pretraining_run_is_refused_up_front(corpus, task_files, tmp_path, capsys):
    run = tmp_path / "pre"
    assert main(args(corpus, run, "--steps", "1", "--eval-every", "0")) == 0
    capsys.readouterr()
    before = sorted(p.name for p in run.rglob("*"))
    assert main(finetune_args(task_files, run, "--resume")) == 2
    assert "holds a 'pretrain' run, not 'finetune'" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_unbalanced_csv_quote_is_named_as_such(task_files, tmp_path, capsys):
    bad = tmp_path / "train.csv"
    bad.write_text('text,label\n"good apple river,1\nbad stone,0\ngood cloud,1\n', encoding="utf-8")
    train, val, tok = task_files
    assert main(finetune_args((bad, val, tok), tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert f"{bad}, line 2: unbalanced quote" in err and "ragged" not in err


def _metrics_run(tmp_path, lines):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(lines))
    return run


GOOD_METRICS = [json.dumps({"step": s, "loss": 3.0 - 0.1 * s, "lr": 1e-4}) + "\n" for s in range(1, 6)]


def test_plot_out_refuses_what_it_cannot_or_should_not_write(tmp_path, capsys):
    """`plot --out` into a missing directory or onto a directory was a traceback; onto text.txt it
    silently replaced the file with PNG bytes."""
    pytest.importorskip("matplotlib")
    run = _metrics_run(tmp_path, GOOD_METRICS)
    (tmp_path / "text.txt").write_text("precious")
    cases = {str(tmp_path / "nonexist" / "x.png"): f"directory {tmp_path / 'nonexist'} does not exist",
             str(run): "is a directory; give a file name",
             str(tmp_path / "text.txt"): "not an image file name; end it in .png, .svg, .pdf",
             str(tmp_path / "noext"): "not an image file name"}
    for out, message in cases.items():
        assert main(["plot", str(run), "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gptkit plot: error: {out}: {message}") and err.count("\n") == 1, err
    assert (tmp_path / "text.txt").read_text() == "precious"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]
    # The format follows the suffix (a .svg used to hold PNG bytes).
    assert main(["plot", str(run), "--out", str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "c.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert main(["plot", str(run), "--out", str(tmp_path / "c.PNG")]) == 0
    assert (tmp_path / "c.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_skips_bad_metrics_lines_and_says_so(tmp_path, capsys, caplog):
    """A metrics.jsonl line `[1]` was an AttributeError traceback, and malformed lines anywhere were
    skipped without a word; only a killed run's unterminated last line is skipped quietly."""
    pytest.importorskip("matplotlib")
    from gptkit.training import read_metrics

    lines = ["[1]\n", *GOOD_METRICS[:2], "garbage\n", '{"loss": 1.0}\n', '"text"\n', *GOOD_METRICS[2:],
             '{"step": 9, "lo']
    run = _metrics_run(tmp_path, lines)
    with caplog.at_level("WARNING"):
        assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").is_file()
    warned = [r.getMessage() for r in caplog.records if "metrics.jsonl" in r.getMessage()]
    assert warned == [f"{run / 'metrics.jsonl'}: skipped 3 line(s) that are not a JSON object (line 1, 4, 6)"]
    caplog.clear()
    run2 = tmp_path / "r2"
    run2.mkdir()
    (run2 / "metrics.jsonl").write_bytes("".join(GOOD_METRICS).encode() + b'{"step": 6, "lo')
    with caplog.at_level("WARNING"):
        assert len(read_metrics(run2)) == 5
    assert not caplog.records  # a kill's cut-short last line: nothing to say


def test_resume_truncation_of_metrics_survives_bad_lines(tmp_path):
    from gptkit.training.metrics import MetricsLog

    run = _metrics_run(tmp_path, ["[1]\n", *GOOD_METRICS, "garbage\n", '{"note": "no step"}\n'])
    MetricsLog(run, tensorboard=False).truncate_after(3)  # was AttributeError: 'list' has no 'get'
    kept = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in kept] == [1, 2, 3, None]
