"""lm-evaluation-harness itself, through `gptkit serve` (its `local-completions` model) and through
its own `hf` backend on the same exported directory: the same accuracy, the same per-choice
loglikelihoods, the same greedy generations. lm-eval is a large optional dependency (the `lm-eval`
extra), so this test skips without it and is marked slow (lm-eval's start-up alone takes seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
lm_eval = pytest.importorskip("lm_eval")

from gptkit import GPT  # noqa: E402
from gptkit.model import preset  # noqa: E402
from gptkit.serve import load_app  # noqa: E402
from gptkit.tokenizer import train_from_texts  # noqa: E402
from test_serve import Server  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TEXT = ("the cat sat on the mat. the dog sat on the log. a bird sang in the tree. "
        "once upon a time there was a small model that liked to write stories about cats. ")
ITEMS = [  # context, choices, gold
    ("the cat sat on the", [" mat", " log", " tree"], 0),
    ("the dog sat on the", [" mat", " log", " bird"], 1),
    ("a bird sang in the", [" tree", " cat", " mat"], 0),
    ("once upon a", [" time", " cat", " model"], 0),
    ("a small model that liked to", [" write", " sing", " sit"], 0),
    ("stories about", [" cats", " dogs", " trees"], 0),
    ("the cat", [" sat", " sang", " liked"], 0),
    ("there was a small", [" model", " cat", " tree"], 0),
]
# Move the gold answer around: a server that scores every choice alike (so the first one wins) must
# not look good by accident.
ITEMS = [(c, ch[i % 3:] + ch[: i % 3], (g - i % 3) % 3) for i, (c, ch, g) in enumerate(ITEMS)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model trained for a few steps, so that choices get distinct, non-random scores."""
    directory = tmp_path_factory.mktemp("lmeval") / "tiny"
    tok = train_from_texts([TEXT] * 20, vocab_size=300, style="bytelevel")
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=64))
    stream = tok.encode(TEXT * 4)
    ids = torch.tensor([stream[i : i + 64] for i in range(0, len(stream) - 64, 8)])  # windows over the text
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(directory)
    tok.save(directory)
    return directory


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("lmeval_tasks")
    data = directory / "items.jsonl"
    data.write_text("".join(json.dumps({"context": c, "choices": ch, "label": g}) + "\n" for c, ch, g in ITEMS))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (directory / "mc.yaml").write_text(
        "task: gptkit_tiny_mc\n" + common + "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n")
    (directory / "gen.yaml").write_text(
        "task: gptkit_tiny_gen\n" + common + "output_type: generate_until\n"
        'doc_to_text: "{{context}}"\ndoc_to_target: "{{choices[label]}}"\n'
        "generation_kwargs:\n  until: [\".\"]\n  max_gen_toks: 8\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")
    return directory


def evaluate(model: str, model_args: dict, tasks_dir: Path) -> dict:
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["gptkit_tiny_mc", "gptkit_tiny_gen"],
                                   task_manager=TaskManager(include_path=str(tasks_dir)), batch_size=1,
                                   log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0)


def per_choice(result: dict) -> list[list[float]]:
    samples = sorted(result["samples"]["gptkit_tiny_mc"], key=lambda s: (s["doc_id"]))
    by_doc: dict[int, list[float]] = {}
    for s in samples:
        by_doc[s["doc_id"]] = [float(r[0]) for r in s["filtered_resps"]]
    return [by_doc[i] for i in sorted(by_doc)]


def generations(result: dict) -> list[str]:
    samples = sorted(result["samples"]["gptkit_tiny_gen"], key=lambda s: s["doc_id"])
    return [s["filtered_resps"][0] for s in samples]


def test_lm_eval_through_gptkit_serve_equals_its_hf_backend(model_dir, tasks_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = evaluate("hf", {"pretrained": str(model_dir), "dtype": "float32", "device": "cpu"}, tasks_dir)
    with Server(load_app(str(model_dir), device="cpu")) as s:
        served = evaluate("local-completions", {
            "base_url": f"{s.url}/v1/completions", "model": model_dir.name, "tokenizer": str(model_dir),
            "tokenizer_backend": "huggingface", "max_length": 64, "num_concurrent": 1, "max_retries": 1,
        }, tasks_dir)
    acc_hf = hf["results"]["gptkit_tiny_mc"]["acc,none"]
    acc_served = served["results"]["gptkit_tiny_mc"]["acc,none"]
    ours, theirs = per_choice(served), per_choice(hf)
    worst = max(abs(a - b) for row_a, row_b in zip(ours, theirs) for a, b in zip(row_a, row_b))
    print(f"lm-eval acc: hf {acc_hf:.4f}, gptkit serve {acc_served:.4f}; "
          f"{sum(map(len, ours))} choice loglikelihoods, max |difference| {worst:.2e}")
    assert acc_served == acc_hf
    assert len(ours) == len(ITEMS) and worst < 1e-4
    assert len({round(x, 3) for row in ours for x in row}) > len(ITEMS)  # choices really differ
    gen_hf, gen_served = generations(hf), generations(served)
    print(f"generate_until: {sum(a == b for a, b in zip(gen_hf, gen_served))} of {len(ITEMS)} identical")
    assert gen_served == gen_hf and any(gen_hf)
