"""Exact resume: N steps + SIGTERM + resume N more == 2N uninterrupted steps (losses and weights)."""

import os
import random
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


def run(run_dir, *, total, stop_at=None, resume=False, init_seed=0, evaluate=None, **config_extra):
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
                               progress=False, seed=11, **config_extra),
                   run_dir=run_dir, resume_from=resume_from, save_model=lambda d: save_pretrained(model, d),
                   load_model=load_model, on_step=on_step, evaluate=evaluate)
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


def test_resume_restores_best_tokens_seen_and_the_global_rngs(tmp_path, one_thread):
    """What the weights and losses do not show: the best-so-far (a worse evaluation after the resume
    must not become the best), the tokens_seen count in the log, and Python's and numpy's global
    generators, which a user's evaluation or augmentation code may draw from."""
    N, draws, done_before = 6, {}, [0]  # evaluations every 2 steps; done_before: those of the earlier run

    def evaluate(model):
        n = done_before[0] + len(draws) + 1
        draws[n] = (random.random(), float(np.random.rand()))
        return {"score": -abs(n - 2)}  # best at the 2nd evaluation (step 4), worse ever after

    def both(run_dir, **kw):
        draws.clear()
        done_before[0] = N // 2 if kw.get("resume") else 0
        random.seed(99)  # a new process's generators, as after a real restart
        np.random.seed(99)
        _, _, result = run(run_dir, total=2 * N, evaluate=evaluate, eval_every=2, best_metric="score",
                           best_mode="max", log_every=1, **kw)
        return result, dict(draws)

    def log_of(result):  # every logged record but the timings
        return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu")} for r in result.history]

    full, full_draws = both(tmp_path / "full")
    assert full.best_checkpoint.name == "step_000004" and full.best_value == 0
    first, first_draws = both(tmp_path / "split", stop_at=N)
    resumed, resumed_draws = both(tmp_path / "split", resume=True, init_seed=123)
    assert resumed.best_checkpoint.name == "step_000004" and resumed.best_value == 0
    assert log_of(first) + log_of(resumed) == log_of(full)  # tokens_seen included
    assert [r["tokens_seen"] for r in log_of(resumed) if "loss" in r][0] == (N + 1) * 2 * 4 * 16
    assert list(first_draws.values()) + list(resumed_draws.values()) == list(full_draws.values())
