"""The completions endpoint as evaluation harnesses use it: `echo` + `logprobs` scores the prompt.

Every number is checked against the model's own log-softmax over the whole sequence, and the
lm-eval `local-completions` recipe (payload and parsing as that harness does them) is checked against
transformers on the same exported directory, as lm-eval's `hf` backend would compute it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from gptkit import GPT  # noqa: E402
from gptkit.generation import GenerationConfig, stream_generate  # noqa: E402
from gptkit.generation.bundle import ModelBundle, load_bundle  # noqa: E402
from gptkit.generation.engine import FinishEvent  # noqa: E402
from gptkit.model import preset  # noqa: E402
from gptkit.serve import create_app, load_app  # noqa: E402
from gptkit.tokenizer import train_from_texts  # noqa: E402
from test_generation_cli import CORPUS, make_model_dir  # noqa: E402
from test_serve import Server  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

PROMPT = "the cat sat on the mat. once upon a time"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("echo") / "tiny")


@pytest.fixture(scope="module")
def gpt1_dir(tmp_path_factory) -> Path:
    """A `gpt1`-style (lowercasing, `</w>`) model: its decoded text differs from the prompt's."""
    directory = tmp_path_factory.mktemp("echo") / "gpt1"
    tok = train_from_texts(CORPUS * 20, vocab_size=300, style="gpt1")
    torch.manual_seed(1)
    GPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=64, initializer_range=0.3)).save_pretrained(directory)
    tok.save(directory)
    return directory


@pytest.fixture(scope="module")
def server(model_dir):
    with Server(load_app(str(model_dir), device="cpu")) as s:
        yield s


def reference_logprobs(model_dir: Path, ids: list[int]) -> torch.Tensor:
    """(T, V) log-softmax of the model's logits at every position, one plain forward pass."""
    model = GPT.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)


def post(server: Server, **body) -> dict:
    r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def check_offsets(text: str, lp: dict) -> None:
    """Each token's text is found in the choice text at its text_offset."""
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"])
    for token, at in zip(lp["tokens"], lp["text_offset"]):
        assert text[at : at + len(token)] == token


def test_echo_max_tokens_0_scores_every_prompt_token(server, model_dir):
    ids = load_bundle(model_dir, device="cpu").encode_prompt(PROMPT)
    ref = reference_logprobs(model_dir, ids)
    out = post(server, prompt=PROMPT, max_tokens=0, echo=True, logprobs=2, temperature=0)
    choice = out["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == PROMPT and choice["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # nothing precedes token 0
    expected = [ref[t - 1, ids[t]].item() for t in range(1, len(ids))]
    assert lp["token_logprobs"][1:] == pytest.approx(expected, abs=1e-5)
    assert "".join(lp["tokens"]) == PROMPT
    check_offsets(choice["text"], lp)
    for t in range(1, len(ids)):  # the alternatives are the model's two most likely next tokens
        top = sorted(lp["top_logprobs"][t].values(), reverse=True)  # (one, where both decode alike)
        best = ref[t - 1].topk(2).values.tolist()
        assert 1 <= len(top) <= 2 and top == pytest.approx(best[: len(top)], abs=1e-5)


def test_echo_then_generated_tokens_and_token_id_prompts(server, model_dir):
    bundle = load_bundle(model_dir, device="cpu")
    ids = bundle.encode_prompt(PROMPT)
    ref = reference_logprobs(model_dir, ids)
    scored = post(server, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)["choices"][0]["logprobs"]
    out = post(server, prompt=PROMPT, max_tokens=3, echo=True, logprobs=1, temperature=0)["choices"][0]
    lp = out["logprobs"]
    assert out["text"].startswith(PROMPT) and len(lp["tokens"]) == len(ids) + 3
    assert lp["token_logprobs"][: len(ids)] == scored["token_logprobs"]
    assert lp["token_logprobs"][len(ids)] == pytest.approx(ref[-1].max().item(), abs=1e-5)  # greedy
    check_offsets(out["text"], lp)
    # The same prompt as token ids: the same numbers; the text is the ids' decoded text.
    by_ids = post(server, prompt=ids, max_tokens=0, echo=True, logprobs=1)["choices"][0]
    assert by_ids["logprobs"]["token_logprobs"] == scored["token_logprobs"]
    assert by_ids["text"] == bundle.decode(ids) and "".join(by_ids["logprobs"]["tokens"]) == by_ids["text"]
    check_offsets(by_ids["text"], by_ids["logprobs"])
    # Several prompts (the ids form for a batch), n > 1, and streaming carry the same prompt scores.
    many = post(server, prompt=[ids, ids[:5]], max_tokens=1, echo=True, logprobs=0, n=2, temperature=0)
    for c, length in zip(many["choices"], [len(ids)] * 2 + [5] * 2):  # (float noise: other shapes)
        got = c["logprobs"]["token_logprobs"]
        assert len(got) == length + 1 and got[0] is None
        assert got[1:-1] == pytest.approx(scored["token_logprobs"][1:length], abs=1e-5)
    assert all(c["logprobs"]["top_logprobs"] is None for c in many["choices"])  # logprobs 0: no alternatives
    body = {"prompt": PROMPT, "max_tokens": 0, "echo": True, "logprobs": 1, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as r:
        first = next(line for line in r.iter_lines() if line)
    import json

    assert json.loads(first[6:])["choices"][0]["logprobs"]["token_logprobs"] == scored["token_logprobs"]


def test_echo_keeps_the_users_text_where_the_tokenizer_normalises(gpt1_dir):
    prompt = "The CAT sat,  on the Mat."  # gpt1 lowercases and drops the double space on decoding
    with Server(load_app(str(gpt1_dir), device="cpu")) as s:
        choice = post(s, prompt=prompt, max_tokens=0, echo=True, logprobs=1)["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == prompt and "".join(lp["tokens"]) == prompt
    check_offsets(prompt, lp)
    assert lp["tokens"][:2] == ["The ", "CAT "] and lp["text_offset"][:3] == [0, 4, 8]


def test_a_row_ended_by_the_stop_token_reports_that_token(model_dir):
    """lm-eval drops the last logprob (the generated token): a row that ends on end-of-text at once
    must still list it, or the continuation's last token would be dropped instead."""
    bundle = load_bundle(model_dir, device="cpu")
    ids = bundle.encode_prompt(PROMPT)
    greedy = int(reference_logprobs(model_dir, ids)[-1].argmax())
    events = list(stream_generate(bundle.model, [ids], GenerationConfig(max_new_tokens=4, temperature=0,
                                                                        stop_ids=(greedy,))))
    assert events == [FinishEvent(0, "stop", greedy, pytest.approx(events[0].logprob), ())]

    @dataclasses.dataclass
    class StopsAtGreedy(ModelBundle):
        stop_ids: tuple[int, ...] = (greedy,)

    fake = StopsAtGreedy(bundle.model, bundle.tokenizer, "m", model_dir)
    with Server(create_app(fake)) as s:
        out = post(s, prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["text"] == bundle.decode(ids)
    lp = choice["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + 1 and lp["tokens"][-1] == ""
    assert lp["token_logprobs"][-1] == pytest.approx(events[0].logprob, abs=1e-6)
    assert out["usage"]["completion_tokens"] == 1


def lm_eval_loglikelihood(server: Server, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """What lm-eval's local-completions does for one (context, continuation) pair: this payload, and
    the sum of token_logprobs[ctxlen:-1] (the last entry is the one generated token)."""
    payload = {"model": "m", "prompt": [context + continuation], "temperature": 0, "max_tokens": 1,
               "logprobs": 1, "seed": 1234, "echo": True}
    choice = post(server, **payload)["choices"][0]["logprobs"]
    ctxlen = len(context)
    logprobs = choice["token_logprobs"][ctxlen:-1]
    tops = choice["top_logprobs"][ctxlen:-1]
    return sum(logprobs), all(lp == max(top.values()) for lp, top in zip(logprobs, tops))


def test_lm_eval_recipe_matches_transformers_on_the_exported_directory(server, model_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = load_bundle(model_dir, device="cpu").tokenizer
    items = [("the cat sat on the", [" mat", " log", " tree"]), ("once upon a", [" time", " cat"])]
    for context, choices in items:
        ctx = tok.encode(context)
        for cont_text in choices:
            cont = tok.encode(cont_text)
            mine, greedy = lm_eval_loglikelihood(server, ctx, cont)
            with torch.no_grad():  # lm-eval's hf backend: log-softmax of the whole sequence's logits
                logp = torch.log_softmax(hf(torch.tensor([ctx + cont])).logits[0].float(), dim=-1)
            positions = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
            theirs = sum(logp[p, t].item() for p, t in zip(positions, cont))
            assert mine == pytest.approx(theirs, abs=1e-4)
            assert greedy == all(logp[p].argmax().item() == t for p, t in zip(positions, cont))
