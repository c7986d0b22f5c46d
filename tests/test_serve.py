"""`gptkit serve`: the official `openai` client and raw HTTP against uvicorn on 127.0.0.1, offline."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from gptkit.generation import GenerationConfig, TextStream, generate, token_pieces  # noqa: E402
from gptkit.generation.bundle import load_bundle  # noqa: E402
from gptkit.interop import load_pretrained  # noqa: E402
from gptkit.serve import create_app, load_app  # noqa: E402
from test_generation_cli import make_model_dir  # noqa: E402  (the tiny model directory builder)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a background thread, on a free port of 127.0.0.1."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", **kw)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def server(model_dir):
    with Server(load_app(str(model_dir), max_queue=64, max_batch=8, device="cpu")) as s:
        yield s


@pytest.fixture(scope="module")
def reference(model_dir):
    """Single-request greedy text, computed without the server."""
    bundle = load_bundle(model_dir, device="cpu")

    def greedy(prompt: str, n_tokens: int) -> str:
        config = GenerationConfig(max_new_tokens=n_tokens, temperature=0.0, stop_ids=bundle.stop_ids)
        prompt_ids = bundle.encode_prompt(prompt)
        return TextStream(bundle.decode, context=prompt_ids).decode(generate(bundle.model, [prompt_ids], config)[0].ids)

    return greedy


def test_openai_client_completion_text(server, reference, model_dir):
    r = server.client().completions.create(model=model_dir.name, prompt="the cat", max_tokens=10, temperature=0)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.choices[0].text == reference("the cat", 10) and r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length") and r.choices[0].index == 0
    assert r.usage.prompt_tokens == len(load_bundle(model_dir, device="cpu").tokenizer.encode("the cat")) and 1 <= r.usage.completion_tokens <= 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_openai_client_streaming(server, reference):
    stream = server.client().completions.create(model="m", prompt="once upon", max_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == reference("once upon", 12)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_raw_sse_ends_with_done(server):
    body = {"prompt": "the", "max_tokens": 5, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    usage = json.loads(lines[-2][6:])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1


def test_n_samples_prompt_list_seed_logprobs_echo(server):
    client = server.client()
    kw = dict(model="m", prompt=["the cat", "a bird"], max_tokens=6, temperature=1.0, n=3, seed=4, logprobs=2)
    r = client.completions.create(**kw)
    assert [c.index for c in r.choices] == list(range(6))
    assert client.completions.create(**kw).choices == r.choices  # seeded: reproducible
    for c in r.choices:
        lp = c.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) >= 1
        assert all(x <= 0 for x in lp.token_logprobs) and all(len(t) <= 2 for t in lp.top_logprobs)
    assert r.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in r.choices)
    for c in r.choices:  # the tokens join to the text, and the offsets point into it
        assert "".join(c.logprobs.tokens) == c.text
        assert c.logprobs.text_offset == [sum(len(t) for t in c.logprobs.tokens[:i]) for i in range(len(c.logprobs.tokens))]
    echo = client.completions.create(model="m", prompt="the dog", max_tokens=3, temperature=0, echo=True)
    assert echo.choices[0].text.startswith("the dog")


def test_stop_string(server, reference):
    full = reference("the", 20)
    at = next(i for i in range(3, len(full) - 1) if "\ufffd" not in full[i : i + 2])
    r = server.client().completions.create(model="m", prompt="the", max_tokens=20, temperature=0, stop=[full[at : at + 2]])
    assert r.choices[0].text == full[: full.index(full[at : at + 2])] and r.choices[0].finish_reason == "stop"


def streamed_choice(server: Server, body: dict) -> tuple[str, dict]:
    """A streamed request's text and its logprobs lists, concatenated over the chunks (one choice)."""
    text, lists = "", {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            choice = json.loads(line[6:])["choices"][0]
            text += choice["text"]
            for key, value in (choice["logprobs"] or {}).items():
                lists[key] += value or []  # (top_logprobs is null with logprobs 0)
    return text, lists


def test_logprobs_at_a_stop_string_are_the_model_tokens_cut_at_the_stop(server, model_dir):
    # was: without streaming the token that completed the stop string stayed in `tokens` (they
    # joined to more than the text, the stop string included); streamed, each `tokens` entry was
    # the text shown with that token (truncated, empty or merged pieces), so the modes disagreed
    bundle = load_bundle(model_dir, device="cpu")
    prompt_ids = bundle.encode_prompt("the")

    def sample(seed: int) -> list[str]:  # the server's seeded rows are these (same config, same seed)
        config = GenerationConfig(max_new_tokens=24, temperature=1.0, seed=seed, stop_ids=bundle.stop_ids)
        return token_pieces(bundle.decode, generate(bundle.model, [prompt_ids], config)[0].ids, prompt_ids)

    def starts_of(pieces: list[str]) -> list[int]:
        return [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]

    # The tiny random model writes mostly byte tokens: look for a seed whose text has a stop string
    # beginning inside a multi-character token, and one whose stop string begins where a token does.
    found: dict[str, tuple[int, str]] = {}
    for seed in range(60):
        pieces = sample(seed)
        text, starts = "".join(pieces), starts_of(pieces)
        for j in range(1, len(pieces) - 1):
            if "\ufffd" in pieces[j] + pieces[j + 1] or not pieces[j + 1]:
                continue
            for where, stop in (("inside", pieces[j][1:] + pieces[j + 1][:1]), ("start", pieces[j] + pieces[j + 1][:1])):
                if len(stop) >= 2 and where not in found and text.find(stop) > 0 \
                        and (text.find(stop) in starts) == (where == "start"):
                    found[where] = (seed, stop)
        if len(found) == 2:
            break
    assert set(found) == {"inside", "start"}
    for where, (seed, stop) in found.items():
        pieces = sample(seed)
        text, starts = "".join(pieces), starts_of(pieces)
        at = text.find(stop)
        kept = [p for p, a in zip(pieces, starts) if a < at]
        body = {"model": "m", "prompt": "the", "max_tokens": 24, "temperature": 1.0, "seed": seed, "logprobs": 2}
        full = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()["choices"][0]
        assert full["logprobs"]["tokens"][: len(pieces)] == pieces  # no stop string: every token, whole
        choice = httpx.post(f"{server.url}/v1/completions", json={**body, "stop": [stop]}, timeout=60).json()["choices"][0]
        lp = choice["logprobs"]
        assert choice["text"] == text[:at] and choice["finish_reason"] == "stop"
        assert lp["tokens"] == kept, (where, stop)
        joined = "".join(lp["tokens"])
        if where == "start":  # the stop string starts where a token does: the tokens join to the text
            assert joined == choice["text"]
        else:  # it starts inside the last token kept, which is listed whole
            assert joined.startswith(choice["text"]) and joined != choice["text"]
            assert stop.startswith(joined[len(choice["text"]):])
        assert lp["text_offset"] == starts[: len(kept)]
        assert lp["token_logprobs"] == pytest.approx(full["logprobs"]["token_logprobs"][: len(kept)], abs=1e-6)
        assert len(lp["top_logprobs"]) == len(kept)
        streamed_text, streamed = streamed_choice(server, {**body, "stop": [stop]})
        assert streamed_text == choice["text"]
        assert streamed["tokens"] == lp["tokens"] and streamed["text_offset"] == lp["text_offset"]
        assert streamed["token_logprobs"] == pytest.approx(lp["token_logprobs"], abs=1e-6)
        assert streamed["top_logprobs"] == [pytest.approx(t, abs=1e-6) for t in lp["top_logprobs"]]


@pytest.mark.parametrize("style", ["bytelevel", "gpt1"])
def test_token_pieces_one_token_at_a_time_equal_token_pieces(style):
    # The worker works the logprobs entries out as tokens come (for streaming); they must be exactly
    # token_pieces' pieces, each released once its text is shown, and cut at a stop string.
    import random

    from gptkit.serve.worker import TokenPieces
    from gptkit.tokenizer import train_from_texts
    from test_generation_cli import CORPUS

    tok = train_from_texts(CORPUS * 20, vocab_size=300, style=style)

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    rng, cut = random.Random(0), 0
    for case in range(60):
        context = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(0, 6))]
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 25))]
        expected = token_pieces(decode, ids, context)
        starts = [sum(len(p) for p in expected[:i]) for i in range(len(expected))]
        whole = "".join(expected)
        stops = [whole[len(whole) // 2 : len(whole) // 2 + 2]] if case % 2 and len(whole) > 3 else []
        stream = TextStream(decode, stops, context=context)
        tracker, released, shown = TokenPieces(decode, context), [], ""
        for t in ids:
            delta, stopped = stream.push(t)
            shown += delta
            got = tracker.push(t, -1.0, (), delta)
            assert all(e[1] < len(shown) for e in got)  # released only once its text is shown
            released += got
            if stopped:
                break
        tail, text = stream.finish(), stream.text
        if stream.stopped:  # a stop string: the tokens that start before it
            released += tracker.finish(tail, text, True, None)
            keep = sum(a < len(text) for a in starts)
            end, cut = [], cut + 1
        else:  # the row ended on the end-of-text token: listed last, at the end of the text
            released += tracker.finish(tail, text, False, (0, -2.0, ()))
            keep = len(expected)
            end = [("", len(whole), 0)]
        assert [e[:3] for e in released] == [*zip(expected[:keep], starts[:keep], ids[:keep]), *end], (case, ids)
    assert cut >= 10  # the stop strings were hit


def test_streamed_and_whole_logprobs_list_the_same_entries(server):
    # sampled rows ending on the end-of-text token, or mid-character, and echo: the same lists both ways
    for body in ({"prompt": "caf", "max_tokens": 30, "temperature": 1.5, "seed": 5, "logprobs": 1},
                 {"prompt": "héllo", "max_tokens": 30, "temperature": 2.0, "seed": 11, "logprobs": 0, "echo": True},
                 {"prompt": "the", "max_tokens": 30, "temperature": 1.0, "seed": 2, "logprobs": 3, "stop": ["a", "é"]}):
        whole = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()["choices"][0]
        text, lists = streamed_choice(server, body)
        assert text == whole["text"]
        assert lists["tokens"] == whole["logprobs"]["tokens"] and lists["text_offset"] == whole["logprobs"]["text_offset"]
        assert lists["token_logprobs"] == pytest.approx(whole["logprobs"]["token_logprobs"], abs=1e-6)
        assert len(lists["top_logprobs"]) == len(whole["logprobs"]["top_logprobs"] or [])


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": -3}, "max_tokens"),
        ({"prompt": "x", "temperature": -0.5}, "temperature"),
        ({"prompt": "x", "top_p": 0}, "top_p"),
        ({"prompt": "x", "top_p": 1.5}, "top_p"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "bogus_field": 1}, "bogus_field"),
        ({"prompt": "x", "logprobs": 99}, "logprobs"),
        ({"prompt": " ".join(["cat"] * 100)}, "prompt"),  # n_ctx is 64
        ({"prompt": [1, 2, 99999]}, "prompt"),
        ({"prompt": []}, "prompt"),
    ],
)
def test_bad_requests_get_400_with_openai_error_body(server, body, param):
    r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_bad_json_and_wrong_shapes(server):
    r = httpx.post(f"{server.url}/v1/completions", content=b'{"prompt": "x",', timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/completions", json=[1, 2], timeout=30)
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = httpx.get(f"{server.url}/v1/nothing", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_openai_client_raises_bad_request(server):
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        server.client().completions.create(model="m", prompt="cat " * 100, max_tokens=3)


def test_models_health_and_classify_refused(server, model_dir):
    models = server.client().models.list()
    assert [m.id for m in models.data] == [model_dir.name]
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["max_queue"] == 64
    r = httpx.post(f"{server.url}/v1/classify", json={"input": "good"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_a_task_model"


def test_twenty_concurrent_clients_get_their_own_answers(server, reference):
    prompts = [f"{w} {v}" for w in ("the", "a", "once", "cat", "dog") for v in ("cat", "sat", "bird", "tree")]
    client = server.client()

    def ask(prompt: str) -> str:
        return client.completions.create(model="m", prompt=prompt, max_tokens=8, temperature=0).choices[0].text

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, prompts))
    assert answers == [reference(p, 8) for p in prompts]
    assert len(set(answers)) > 5


def slow_server(model_dir: Path, *, max_queue: int, max_batch: int, delay: float, **kw) -> Server:
    bundle = load_bundle(model_dir, device="cpu")
    bundle.model.transformer.register_forward_pre_hook(lambda *_: time.sleep(delay))
    return Server(create_app(bundle, max_queue=max_queue, max_batch=max_batch, **kw))


def wait_for(url: str, predicate, timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        health = httpx.get(f"{url}/health", timeout=10).json()
        if predicate(health):
            return health
        time.sleep(0.02)
    raise AssertionError(f"server never reached the expected state: {health}")


def test_full_queue_gives_503(model_dir):
    with slow_server(model_dir, max_queue=1, max_batch=1, delay=0.05) as s:
        client = s.client(max_retries=0)
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(client.completions.create, model="m", prompt="the", max_tokens=30, temperature=0)
            wait_for(s.url, lambda h: h["busy"])
            waiting = pool.submit(client.completions.create, model="m", prompt="a", max_tokens=2, temperature=0)
            wait_for(s.url, lambda h: h["queued"] == 1)
            r = httpx.post(f"{s.url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
            assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full"
            with pytest.raises(openai.InternalServerError):
                client.completions.create(model="m", prompt="x", max_tokens=2)
            assert running.result(timeout=60).choices[0].text and waiting.result(timeout=60).choices[0].text


def test_queued_requests_are_batched(model_dir):
    with slow_server(model_dir, max_queue=16, max_batch=8, delay=0.02) as s:
        client = s.client()
        with ThreadPoolExecutor(6) as pool:
            first = pool.submit(client.completions.create, model="m", prompt="the", max_tokens=20, temperature=0)
            wait_for(s.url, lambda h: h["busy"])
            rest = [pool.submit(client.completions.create, model="m", prompt=p, max_tokens=5, temperature=0)
                    for p in ("a", "cat", "dog", "bird", "tree")]
            wait_for(s.url, lambda h: h["queued"] == 5)
            texts = [f.result(timeout=60).choices[0].text for f in [first, *rest]]
        health = httpx.get(f"{s.url}/health", timeout=10).json()
    assert all(texts) and health["largest_batch"] == 5 and health["batches_run"] == 2


def test_classify_with_a_task_model(tmp_path, model_dir):
    tasks = pytest.importorskip("gptkit.tasks.model")
    from gptkit.tasks.spec import TaskSpec
    from gptkit.tokenizer import GPTTokenizer

    tok = GPTTokenizer.load(model_dir)
    torch.manual_seed(0)
    task_model = tasks.TaskModel(load_pretrained(model_dir), TaskSpec(task="classification", labels=["neg", "pos"]))
    target = tmp_path / "clf"
    tasks.save_task_model(task_model, tok, target)
    with Server(load_app(str(target), device="cpu")) as s:
        r = httpx.post(f"{s.url}/v1/classify", json={"input": ["the cat sat", "a bird sang"]}, timeout=30)
        bad = httpx.post(f"{s.url}/v1/classify", json={"input": {"nope": "x"}}, timeout=30)
        gen = s.client().completions.create(model="m", prompt="the", max_tokens=3, temperature=0)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and all(d["label"] in ("neg", "pos") for d in data)
    assert all(abs(sum(d["probabilities"].values()) - 1) < 1e-5 for d in data)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    assert gen.choices[0].text  # a task model directory still generates


def start_cli_server(model_dir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`gptkit serve` as a real process on a free port; returns once /health answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gptkit", "serve", str(model_dir), "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"gptkit serve did not come up: {proc.communicate()[0][-2000:]}")
        time.sleep(0.1)


def test_cli_serve_real_process(model_dir):
    proc, url = start_cli_server(model_dir, "--max-body-bytes", "5000")
    try:
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "the", "max_tokens": 4}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["text"]
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "the " * 2000, "max_tokens": 4}, timeout=30)
        assert r.status_code == 413 and "5000 bytes" in r.json()["error"]["message"]  # the CLI's bound
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_client_disconnect_stops_its_generation(model_dir):
    with slow_server(model_dir, max_queue=4, max_batch=1, delay=0.05, max_tokens_limit=200) as s:
        body = {"prompt": "the", "max_tokens": 200, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{s.url}/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line).startswith("data: ")
        t0 = time.time()
        wait_for(s.url, lambda h: not h["busy"], timeout=5)
        assert time.time() - t0 < 5  # 200 tokens would take >= 10 s


def test_max_batch_bounds_a_single_request(model_dir):
    # was: the worker took the first queued job whole, so one request of 8 prompts x n=16 ran as a
    # 128-row batch under --max-batch 8
    prompts = ["the", "a cat", "once", "dog", "the bird", "x", "tree", "sat on"]
    greedy = {"prompt": prompts, "n": 2, "max_tokens": 6, "temperature": 0, "logprobs": 1, "stop": ["e"]}
    wide_n = {"prompt": prompts[:2], "n": 6, "max_tokens": 6, "temperature": 0, "logprobs": 1}
    with Server(load_app(str(model_dir), max_batch=64, device="cpu")) as one_batch:
        expected = [httpx.post(f"{one_batch.url}/v1/completions", json=b, timeout=60).json() for b in (greedy, wide_n)]
        assert httpx.get(f"{one_batch.url}/health", timeout=10).json()["largest_batch"] == 16
    with Server(load_app(str(model_dir), max_batch=4, device="cpu")) as s:
        for body, want in zip((greedy, wide_n), expected):
            got = httpx.post(f"{s.url}/v1/completions", json=body, timeout=60).json()
            assert [c["index"] for c in got["choices"]] == list(range(len(want["choices"])))
            assert [c["text"] for c in got["choices"]] == [c["text"] for c in want["choices"]]
            assert [c["finish_reason"] for c in got["choices"]] == [c["finish_reason"] for c in want["choices"]]
            for a, b in zip(got["choices"], want["choices"]):
                assert a["logprobs"]["tokens"] == b["logprobs"]["tokens"]
                assert a["logprobs"]["token_logprobs"] == pytest.approx(b["logprobs"]["token_logprobs"], abs=1e-5)
            assert got["usage"] == want["usage"]
            streamed = {}
            with httpx.stream("POST", f"{s.url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        choice = json.loads(line[6:])["choices"][0]
                        streamed[choice["index"]] = streamed.get(choice["index"], "") + choice["text"]
            assert [streamed.get(i, "") for i in range(len(want["choices"]))] == [c["text"] for c in want["choices"]]
        sampled = httpx.post(f"{s.url}/v1/completions", json={"prompt": prompts, "n": 16, "max_tokens": 3}, timeout=60)
        assert sampled.status_code == 200 and len(sampled.json()["choices"]) == 128
        health = httpx.get(f"{s.url}/health", timeout=10).json()
        assert health["largest_batch"] == 4 and health["max_batch"] == 4
        # a seeded sample shares one generator across its batch: it must fit one, or be refused
        seeded = {"prompt": prompts[:2], "n": 3, "max_tokens": 3, "temperature": 1.0, "seed": 7}
        r = httpx.post(f"{s.url}/v1/completions", json=seeded, timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "n" and "--max-batch" in err["message"] and "4" in err["message"]
        fits = httpx.post(f"{s.url}/v1/completions", json={**seeded, "n": 2}, timeout=60)
        assert fits.status_code == 200
        assert fits.json()["choices"] == httpx.post(f"{s.url}/v1/completions", json={**seeded, "n": 2}, timeout=60).json()["choices"]
