"""A checkpoint edited without changing its files' sizes (a header that lies about a dtype or a shape,
a hand-edited trainer_state.json) is refused in one line naming the file, never trained on silently
and never a traceback: `--resume` checks what the size check of `verify_checkpoint` cannot see."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch

from gptkit.cli import main
from test_pretrain import args, make_corpus  # tests/ is on sys.path under pytest

NEWEST = "checkpoints/step_000004"


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("data"), 60)


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4, copied by each test before it damages it."""
    run = tmp_path_factory.mktemp("base") / "run"
    assert main(args(corpus, run, "--steps", "4", "--save-every", "2", "--eval-every", "0")) == 0
    return run


@pytest.fixture
def run(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def resume(corpus, run):
    return main(args(corpus, run, "--steps", "6", "--save-every", "2", "--eval-every", "0", "--resume"))


def rewrite_header(path, change):
    """Edit a safetensors header in place, keeping its length (and so the file's size)."""
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    change(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    path.write_bytes(blob[:8] + text + b" " * (n - len(text)) + blob[8 + n :])


def as_int32(header):
    for key, entry in header.items():
        if key != "__metadata__" and entry["dtype"] == "F32":
            entry["dtype"] = "I32"


def flatten_first_matrix(header):
    entry = next(e for k, e in header.items() if k != "__metadata__" and len(e["shape"]) == 2)
    entry["shape"] = [entry["shape"][0] * entry["shape"][1]]


def one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("gptkit pretrain: error: "), err
    for needle in needles:
        assert needle in last, last
    return last


@pytest.mark.parametrize(("filename", "change", "needle"), [
    ("model.safetensors", as_int32, "has dtype int32; model weights are floating point"),
    ("optimizer.safetensors", as_int32, "is int32 of shape"),
    ("optimizer.safetensors", flatten_first_matrix, "needs a floating-point tensor of shape"),
])
def test_a_tensor_header_lying_about_dtype_or_shape_is_refused(corpus, run, capsys, filename, change, needle):
    # was: the model's int32 weights were copied in as values (NaN at the next step, blamed on the
    # training), and a flattened or int32 AdamW moment was loaded and trained on, exit 0
    path = run / NEWEST / filename
    size = path.stat().st_size
    rewrite_header(path, change)
    assert path.stat().st_size == size  # the size check of verify_checkpoint cannot see it
    assert resume(corpus, run) == 2
    one_error_line(capsys, str(path), needle)
    assert not (run / "checkpoints" / "step_000006").exists()


def test_finetune_init_from_int32_weights_is_one_line(run, tmp_path, capsys):
    # was: a traceback from load_state_dict ("Only Tensors of floating point ... can require gradients")
    import random

    from test_finetune import classification_rows, write_jsonl

    rewrite_header(run / NEWEST / "model.safetensors", as_int32)
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(random.Random(0), 8))
    code = main(["finetune", "--task", "classification", "--train", str(train), "--init", str(run / NEWEST),
                 "--out", str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "4", "--quiet", "--threads", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "has dtype int32" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("garbage", [b"{oops", b'{"model_type": "openai-gpt", "n_layer": 1000000}'])
def test_a_damaged_config_json_in_the_newest_checkpoint_is_passed_over(corpus, run, caplog, garbage):
    # was: pretrain read the newest checkpoint's config.json before the resume chose the newest
    # intact checkpoint, so `--resume` failed on the very file the resume would have passed over
    import logging

    (run / NEWEST / "config.json").write_bytes(garbage)
    with caplog.at_level(logging.WARNING):
        assert resume(corpus, run) == 0
    assert "skipping damaged checkpoint" in caplog.text and "step_000004" in caplog.text
    assert json.loads((run / "checkpoints" / "step_000006" / "trainer_state.json").read_text())["step"] == 6


def edit_state(run, **changes):
    path = run / NEWEST / "trainer_state.json"
    state = json.loads(path.read_text())
    for key, value in changes.items():
        if callable(value):
            value(state)
        else:
            state[key] = value
    path.write_text(json.dumps(state))


@pytest.mark.parametrize(("changes", "needle"), [
    ({"step": "six"}, "field 'step' must be an integer, got 'six'"),
    ({"step": -5}, "field 'step' is -5, but the checkpoint is step_000004"),  # was: "resumed ... at step -5"
    ({"world_size": 0}, "field 'world_size' must be at least 1"),  # was: blamed on --grad-accum
    ({"optimizer": {}}, "missing field 'param_groups'"),
    ({"rng": {}}, "missing field 'numpy'"),
    ({"best": {"value": "x"}}, "field 'best' must be null"),
    ({"config": lambda s: s["config"].update(grad_accum_steps="2")}, "field config.grad_accum_steps is '2'"),
])
def test_an_edited_trainer_state_is_passed_over_naming_the_field(corpus, run, caplog, changes, needle):
    # was: KeyError / ValueError tracebacks, or a resume at a step the file made up
    import logging

    edit_state(run, **changes)
    with caplog.at_level(logging.INFO):
        assert resume(corpus, run) == 0
    assert "skipping damaged checkpoint" in caplog.text and needle in caplog.text
    assert "resumed from" in caplog.text and "step_000002 at step 2" in caplog.text


def test_a_malformed_sampler_state_is_one_line_naming_the_file(corpus, run, capsys):
    edit_state(run, batches=lambda s: s["batches"].update(draws="x"))  # was: a ValueError traceback
    assert resume(corpus, run) == 2
    one_error_line(capsys, str(run / NEWEST / "trainer_state.json"), "field batches is malformed")


def test_an_rng_file_of_the_wrong_dtype_is_one_line_naming_it(corpus, run, capsys):
    def torch_state_as_float(header):
        header["torch"].update(dtype="F32", shape=[header["torch"]["shape"][0] // 4])

    rewrite_header(run / NEWEST / "rng_state.safetensors", torch_state_as_float)  # was: a TypeError traceback
    assert resume(corpus, run) == 2
    one_error_line(capsys, str(run / NEWEST / "rng_state.safetensors"), "not the RNG states")


def test_a_pointer_that_is_not_utf8_is_only_a_hint(run):
    from gptkit.training import CheckpointManager

    for pointer in ("latest", "best"):
        (run / "checkpoints" / pointer).write_bytes(b"\xff\xfe step_000004")  # was: UnicodeDecodeError
    manager = CheckpointManager(run)
    assert manager.latest() == run / NEWEST and manager.best() is None
