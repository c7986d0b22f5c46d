"""Exact resume: N steps + SIGTERM + resume N more == 2N uninterrupted steps (losses and weights)."""

import os
import signal

import numpy as np
import pytest
import torch

from gptkit.data.sampler import WindowSampler
from gptkit.interop import load_pretrained, save_pretrained
from gptkit.model import GPT, preset
from gptkit.training import TrainConfig, build_optimizer, lm_objective, prepare_run_dir, train, warmup_cosine


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-reproducible CPU kernels
    yield
    torch.set_num_threads(before)


def run(run_dir, *, total, stop_at=None, resume=False, init_seed=0):
    torch.manual_seed(init_seed)
    model = GPT(preset("tiny", vocab_size=64, n_ctx=32))  # dropout 0.1 on: RNG state must be restored
    data = [np.random.default_rng(0).integers(0, 64, 3000).astype(np.uint16)]
    sampler = WindowSampler(data, batch_size=4, seq_len=16, seed=7)
    opt = build_optimizer(model, lr=2e-3)
    losses = {}

    def on_step(step, metrics):
        losses[step] = metrics["loss"]
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal path: finish the step, save, stop

    resume_from = prepare_run_dir(run_dir, resume=resume)

    def load_model(d):
        model.load_state_dict(load_pretrained(d).state_dict())

    result = train(model, lm_objective, sampler, opt, warmup_cosine(2e-3, 3, total),
                   TrainConfig(max_steps=total, grad_accum_steps=2, checkpoint_every=4, keep_last=2,
                               progress=False, seed=11),
                   run_dir=run_dir, resume_from=resume_from, save_model=lambda d: save_pretrained(model, d),
                   load_model=load_model, on_step=on_step)
    return model, losses, result


def test_resume_is_exact(tmp_path, one_thread):
    N = 6
    full_model, full_losses, _ = run(tmp_path / "full", total=2 * N)
    _, first, stopped = run(tmp_path / "split", total=2 * N, stop_at=N)
    assert stopped.stopped_by == "SIGTERM" and stopped.step == N
    assert stopped.last_checkpoint.name == f"step_{N:06d}"  # saved on the signal, off the save grid
    resumed_model, second, done = run(tmp_path / "split", total=2 * N, resume=True, init_seed=123)
    assert done.step == 2 * N and done.stopped_by is None
    assert sorted(first) == list(range(1, N + 1)) and sorted(second) == list(range(N + 1, 2 * N + 1))
    assert [full_losses[s] for s in range(1, 2 * N + 1)] == [{**first, **second}[s] for s in range(1, 2 * N + 1)]
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
