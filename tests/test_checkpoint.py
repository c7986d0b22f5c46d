"""Checkpoint files: no pickle, atomic layout, newest complete found, run-dir refusal."""

import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from gptkit.errors import GptkitError
from gptkit.training import CheckpointManager, build_optimizer, prepare_run_dir
from gptkit.training.checkpoint import (
    optimizer_state_from_safetensors,
    optimizer_state_to_safetensors,
    rng_state_from_safetensors,
    rng_state_to_safetensors,
)


def write_model(d):
    (d / "weights.txt").write_text("w")


def save(mgr, step, **kw):
    return mgr.save(step, write_model, {"step": step}, {"x.safetensors": {"t": torch.tensor([step])}}, **kw)


def test_optimizer_state_round_trip_is_exact():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    opt = build_optimizer(m, lr=0.01)
    for _ in range(3):
        m(torch.randn(2, 3)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, meta = optimizer_state_to_safetensors(opt)
    json.dumps(meta)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    opt2 = build_optimizer(m, lr=0.5)
    optimizer_state_from_safetensors(opt2, tensors, json.loads(json.dumps(meta)), "x")
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for k in a["state"][pid]:
            assert torch.equal(a["state"][pid][k], b["state"][pid][k])


def test_rng_state_round_trip():
    tensors, meta = rng_state_to_safetensors()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(7), random.random()
    rng_state_from_safetensors(tensors, json.loads(json.dumps(meta)))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_layout_latest_and_stale_dirs(tmp_path):
    prepare_run_dir(tmp_path)
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        save(mgr, step)
    names = sorted(p.name for p in mgr.dir.iterdir())
    assert names == ["latest", "step_000002", "step_000003"]
    assert (tmp_path / "model" / "weights.txt").read_text() == "w"
    assert not (tmp_path / "model" / "trainer_state.json").exists()  # model/ holds only the model
    # a half-written temp dir and a stale pointer do not fool the search
    (mgr.dir / ".tmp-step_000009-1").mkdir()
    (mgr.dir / "step_000010").mkdir()  # no trainer_state.json: incomplete
    (mgr.dir / "latest").write_text("step_000099\n")
    assert mgr.latest().name == "step_000003"
    (mgr.dir / "latest").write_text("step_000002\n")  # a pointer that lags the newest complete one
    assert mgr.latest().name == "step_000003"
    mgr.clean_stale()
    assert not (mgr.dir / ".tmp-step_000009-1").exists()


def test_run_dir_refused_unless_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    assert prepare_run_dir(run) is None
    save(CheckpointManager(run), 5)
    with pytest.raises(GptkitError, match="--resume .* --overwrite"):
        prepare_run_dir(run)
    assert prepare_run_dir(run, resume=True).name == "step_000005"
    assert prepare_run_dir(run, overwrite=True) is None
    assert not (run / "checkpoints").exists() and (run / "run.json").is_file()
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(GptkitError, match="refusing to delete"):
        prepare_run_dir(other, overwrite=True)
    assert (other / "precious.txt").exists()


@pytest.mark.parametrize("damage, needle", [('{"kind": "train", ', "invalid JSON at line 1"),
                                            ('{"kind": 3}', "field 'kind' must be string"),
                                            ("[]", "expected a JSON object")])
def test_a_damaged_run_json_is_refused_on_resume_and_overwrite_still_works(tmp_path, damage, needle):
    """run.json says which kind of run the directory holds; one that does not parse must not pass
    as 'any kind' (it did: a fine-tuning directory could then be resumed as a pre-training run)."""
    run = tmp_path / "run"
    prepare_run_dir(run)
    save(CheckpointManager(run), 5)
    (run / "run.json").write_text(damage)
    with pytest.raises(GptkitError, match=f"run.json: {needle}.*cannot be resumed.*--overwrite"):
        prepare_run_dir(run, resume=True)
    assert (run / "checkpoints" / "step_000005").is_dir()  # refused before anything changed
    assert prepare_run_dir(run, overwrite=True) is None
    assert json.loads((run / "run.json").read_text())["kind"] == "train"


def test_no_pickle_in_checkpoints(tmp_path):
    prepare_run_dir(tmp_path)
    path = save(CheckpointManager(tmp_path), 1)
    for f in path.iterdir():
        assert f.suffix in (".json", ".safetensors", ".txt"), f
    assert not any(os.fspath(f).endswith((".bin", ".pt", ".pkl")) for f in tmp_path.rglob("*"))
