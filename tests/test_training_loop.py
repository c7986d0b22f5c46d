"""The generic loop: optimizer groups, accumulation, non-finite guard, best checkpoint, sampler."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from gptkit.data.sampler import WindowSampler, eval_windows
from gptkit.errors import GptkitError
from gptkit.model import GPT, preset
from gptkit.training import (
    NonFiniteError,
    TrainConfig,
    build_optimizer,
    constant,
    lm_objective,
    prepare_run_dir,
    read_metrics,
    train,
)


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(preset("tiny", vocab_size=64, n_ctx=32, **kw))


def tokens(n=4000, seed=0):
    # a learnable stream: a repeated pattern plus noise
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(16, dtype=np.uint16), n // 16 + 1)[:n]
    noise = rng.random(n) < 0.1
    base[noise] = rng.integers(16, 64, noise.sum())
    return base


def test_optimizer_and_pretrain_defaults_are_the_papers(tmp_path):
    """SPEC section 3: Adam betas (0.9, 0.999), eps 1e-8, decay 0.01, max lr 2.5e-4, 64 windows per
    update, clip 1.0; section 4: fine-tuning's decay and clip as in pre-training."""
    from gptkit.tasks.config import FinetuneConfig
    from gptkit.training.pretrain import PretrainOptions

    opt = build_optimizer(tiny_gpt(), lr=1e-3)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    opts = PretrainOptions(data=tmp_path, out=tmp_path / "run")
    assert (opts.lr, opts.batch_size, opts.weight_decay, opts.train.grad_clip) == (2.5e-4, 64, 0.01, 1.0)
    ft = FinetuneConfig(task="classification", train="t.jsonl", init="m")
    assert (ft.weight_decay, ft.grad_clip) == (0.01, 1.0)


def test_optimizer_decays_matrices_only():
    model = tiny_gpt()
    opt = build_optimizer(model, lr=1e-3)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert any(p is model.transformer.tok_emb.weight for p in decay["params"])  # the released code's choice
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_parameters()  # tied LM head counted once
    opt2 = build_optimizer(model, lr=1e-3, decay_embeddings=False)
    assert any(p is model.transformer.tok_emb.weight for p in opt2.param_groups[1]["params"])
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    assert opt.defaults["fused"] is True  # the fused kernel exists on CPU too (torch >= 2.4)


class ListSource:
    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, s):
        self.i = s["i"]


def test_grad_accumulation_matches_one_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randn(8, 1)

    def objective(m, b):
        return nn.functional.mse_loss(m(b[0]), b[1]), {}

    weights = []
    for accum, batches in ((1, [(x, y)]), (2, [(x[:4], y[:4]), (x[4:], y[4:])])):
        torch.manual_seed(1)
        m = nn.Linear(5, 1)
        opt = build_optimizer(m, lr=0.1, weight_decay=0.0)
        train(m, objective, ListSource(batches), opt, constant(0.1),
              TrainConfig(max_steps=3, grad_accum_steps=accum, progress=False))
        weights.append(m.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("grad_clip", [1.0, 0.25, None])
def test_the_update_is_clipped_to_the_global_norm(grad_clip):
    """Plain SGD makes the clipping visible in the step itself (Adam's first step hides the gradient's
    scale): the weights move by lr x min(norm, clip); the logged grad_norm is the norm before it."""
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    m = nn.Linear(5, 3)
    before = [p.detach().clone() for p in m.parameters()]

    def objective(model, batch):
        return 100.0 * model(batch).square().mean(), {}

    result = train(m, objective, ListSource([x]), torch.optim.SGD(m.parameters(), lr=0.1), constant(0.1),
                   TrainConfig(max_steps=1, grad_clip=grad_clip, progress=False))
    norm = result.history[-1]["grad_norm"]
    moved = math.sqrt(sum(float((p.detach() - b).square().sum()) for p, b in zip(m.parameters(), before)))
    assert norm > 1.0  # so a clip of 1.0 or 0.25 does act
    assert moved == pytest.approx(0.1 * (min(norm, grad_clip) if grad_clip else norm), rel=1e-4)


def test_a_finite_loss_with_a_non_finite_gradient_stops_before_the_update():
    """sqrt at 0 is finite, its gradient is not: the guard checks the gradient norm too."""
    m = nn.Linear(5, 1)
    before = [p.detach().clone() for p in m.parameters()]

    def objective(model, batch):
        return (model(batch) - model(batch).detach()).abs().sqrt().sum(), {}  # 0, with an infinite slope

    with pytest.raises(NonFiniteError, match=r"step 1: non-finite gradient norm \(loss 0.0, grad norm (inf|nan)\)"):
        train(m, objective, ListSource([torch.randn(4, 5)]), build_optimizer(m, lr=0.1), constant(0.1),
              TrainConfig(max_steps=3, progress=False))
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))


def test_tiny_model_loss_falls(tmp_path):
    model = tiny_gpt(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    sampler = WindowSampler([tokens()], batch_size=8, seq_len=32, seed=0)
    opt = build_optimizer(model, lr=3e-3)
    prepare_run_dir(tmp_path / "run")
    result = train(model, lm_objective, sampler, opt, constant(3e-3),
                   TrainConfig(max_steps=60, log_every=5, progress=False), run_dir=tmp_path / "run",
                   flops_per_token=1e6, peak_flops=1e11)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert losses[0] > math.log(64) - 0.5  # starts near uniform over 64 tokens
    assert losses[-1] < 0.5 * losses[0]  # the pattern is learnt
    last = result.history[-1]
    assert last["tokens_per_s"] > 0 and 0 < last["mfu"] and last["tokens_seen"] == 60 * 8 * 32


def test_nonfinite_stops_before_the_update(tmp_path):
    model = tiny_gpt()
    sampler = WindowSampler([tokens()], batch_size=2, seq_len=16, seed=0)
    opt = build_optimizer(model, lr=1e30)
    prepare_run_dir(tmp_path / "run")
    seen = []
    with pytest.raises(NonFiniteError, match=r"step \d+: non-finite .* stopped before the optimizer update"):
        train(model, lm_objective, sampler, opt, constant(1e30),
              TrainConfig(max_steps=10, progress=False, log_every=1), run_dir=tmp_path / "run",
              on_step=lambda s, m: seen.append(s))
    assert seen and len(seen) < 10
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing written for a broken run


def test_best_checkpoint_kept_and_pruning(tmp_path):
    m = nn.Linear(2, 1)
    opt = build_optimizer(m, lr=0.0)
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.8, 0.1])

    def objective(mod, b):
        return mod(b).sum() * 0, {}

    prepare_run_dir(tmp_path / "run")
    res = train(m, objective, ListSource([torch.ones(1, 2)]), opt, constant(0.0),
                TrainConfig(max_steps=6, eval_every=1, checkpoint_every=1, keep_last=2, best_metric="acc",
                            best_mode="max", progress=False),
                run_dir=tmp_path / "run", evaluate=lambda mod: {"acc": next(scores)})
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert ckpts == ["step_000002", "step_000005", "step_000006"]  # best (0.9 at step 2) + last two
    assert res.best_value == 0.9 and res.best_checkpoint.name == "step_000002"
    assert (tmp_path / "run" / "checkpoints" / "best").read_text().strip() == "step_000002"
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_000006" / "trainer_state.json").read_text())
    assert state["best"] == {"metric": "acc", "value": 0.9, "step": 2} and state["step"] == 6


def test_train_config_validation():
    with pytest.raises(GptkitError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(GptkitError, match="precision"):
        TrainConfig(max_steps=1, precision="fp16")


# --- the window sampler ------------------------------------------------------------------------------


def test_sampler_windows_are_contiguous_and_shifted():
    data = np.arange(1000, dtype=np.uint16)
    s = WindowSampler([data[:300], data[300:]], batch_size=16, seq_len=20, seed=3)
    b = s.next_batch()
    x, y = b["input_ids"], b["targets"]
    assert x.shape == (16, 20) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.all(y - x == 1)  # contiguous, and never straddling the two shards (a jump of 1 only)


def test_sampler_resume_and_ranks():
    data = [np.arange(5000, dtype=np.uint16)]
    a = WindowSampler(data, 4, 8, seed=1)
    first = [a.next_batch()["input_ids"] for _ in range(5)]
    state = a.state_dict()
    json.dumps(state)  # JSON-serialisable
    rest = [a.next_batch()["input_ids"] for _ in range(3)]
    b = WindowSampler(data, 4, 8, seed=1)
    b.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(rest, [b.next_batch()["input_ids"] for _ in range(3)]))
    # 2 ranks read disjoint draws whose interleaving is exactly the 1-rank stream
    r0 = WindowSampler(data, 4, 8, seed=1, rank=0, world_size=2)
    r1 = WindowSampler(data, 4, 8, seed=1, rank=1, world_size=2)
    merged = []
    for _ in range(2):
        merged += [r0.next_batch()["input_ids"], r1.next_batch()["input_ids"]]
    assert all(torch.equal(p, q) for p, q in zip(first[:4], merged))
    with pytest.raises(GptkitError, match="seed"):
        WindowSampler(data, 4, 8, seed=2).load_state_dict(state)


def test_sampler_refuses_short_corpus():
    with pytest.raises(GptkitError, match="too short for one window"):
        WindowSampler([np.arange(10, dtype=np.uint16)], 2, 10, name="corpus-x")


def test_eval_windows_fixed():
    w = eval_windows([np.arange(100)], 10, max_windows=5)
    assert len(w) == 5 and w[1][0] == 10 and len(w[0]) == 11


def test_mfu_probe_leaves_the_training_rng_alone():
    """Issue 17 item 1: measuring the peak (no peak_flops given) must not change the run."""
    weights = []
    for peak in (None, 1e11):
        model = tiny_gpt()
        sampler = WindowSampler([tokens()], batch_size=2, seq_len=16, seed=0)
        train(model, lm_objective, sampler, build_optimizer(model, lr=1e-3), constant(1e-3),
              TrainConfig(max_steps=3, progress=False, seed=5), flops_per_token=1e6, peak_flops=peak)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_loop_functions_are_short():
    """Issue 11 item 5: the loop is split into parts; none over ~80 lines, no nonlocal state."""
    import ast
    import inspect

    from gptkit.training import loop

    tree = ast.parse(inspect.getsource(loop))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno - node.lineno + 1 <= 80, node.name
        assert not isinstance(node, ast.Nonlocal)


def test_a_signal_during_the_last_save_is_reported_not_swallowed(tmp_path):
    """SIGTERM while the final checkpoint is written (after the loop's last look at the flag) was
    acknowledged ("... saving a checkpoint, then stopping") and then ignored: the run returned as
    finished and a fine-tune went on to score and export for as long as that takes, exit 0."""
    import os
    import signal

    from gptkit.training.resume import state_dict_io

    m = nn.Linear(2, 1)
    save, load = state_dict_io(m)

    def save_and_get_terminated(directory):
        save(directory)
        if directory.name.startswith(".tmp-step_000002"):  # the last step's checkpoint
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler sets its flag

    prepare_run_dir(tmp_path / "run")
    res = train(m, lambda mod, b: (mod(b).sum(), {}), ListSource([torch.ones(1, 2)]), build_optimizer(m, lr=0.1),
                constant(0.1), TrainConfig(max_steps=2, checkpoint_every=1, progress=False),
                run_dir=tmp_path / "run", save_model=save_and_get_terminated, load_model=load)
    assert res.step == 2 and res.stopped_by == "SIGTERM"
    assert res.last_checkpoint.name == "step_000002"  # saved all the same


def test_a_non_finite_validation_loss_stops_before_its_weights_are_saved(tmp_path):
    """An update can leave finite but huge weights (its own loss was finite) that evaluate to NaN:
    the checkpoint of that step used to be saved and then named "the last good checkpoint" by the
    non-finite error of the next step, and a resume from it failed again at once."""
    m = nn.Linear(2, 1)
    losses = iter([0.5, float("nan")])

    def evaluate(mod):
        return {"val_pearson": float("nan"), "val_loss": next(losses)}  # a NaN pearson is a result, not a break

    prepare_run_dir(tmp_path / "run")
    with pytest.raises(NonFiniteError) as e:
        train(m, lambda mod, b: (mod(b).sum(), {}), ListSource([torch.ones(1, 2)]), build_optimizer(m, lr=0.1),
              constant(0.1), TrainConfig(max_steps=4, eval_every=1, checkpoint_every=1, progress=False),
              run_dir=tmp_path / "run", evaluate=evaluate)
    first = tmp_path / "run" / "checkpoints" / "step_000001"
    assert str(e.value) == (f"step 2: non-finite val_loss (nan) at evaluation; the weights of this step are not "
                            f"saved; the last good checkpoint, {first}, is untouched")
    assert sorted(p.name for p in first.parent.iterdir() if p.name.startswith("step_")) == ["step_000001"]
