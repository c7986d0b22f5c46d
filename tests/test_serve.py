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

from gptkit.generation import GenerationConfig, TextStream, generate  # noqa: E402
from gptkit.generation.bundle import load_bundle  # noqa: E402
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
    from gptkit import GPT
    from gptkit.tasks.spec import TaskSpec
    from gptkit.tokenizer import GPTTokenizer

    tok = GPTTokenizer.load(model_dir)
    torch.manual_seed(0)
    task_model = tasks.TaskModel(GPT.from_pretrained(model_dir), TaskSpec(task="classification", labels=["neg", "pos"]))
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
    proc, url = start_cli_server(model_dir)
    try:
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "the", "max_tokens": 4}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["text"]
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
