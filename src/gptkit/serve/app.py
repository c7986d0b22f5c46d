"""The HTTP server: an OpenAI-compatible `/v1/completions` (and `/v1/models`), `/v1/classify` for
fine-tuned task models, and `/health`, on FastAPI. The model lives on one worker thread (worker.py);
handlers only validate, tokenize, enqueue, and turn worker events into JSON or server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GptkitError
from ..generation import GenerationConfig
from ..generation.bundle import ModelBundle
from ..generation.text import token_pieces
from .protocol import (
    ClassifyRequest,
    CompletionRequest,
    completion_id,
    completion_object,
    error_body,
    logprobs_object,
    usage,
)
from .worker import CallJob, GenerationJob, Job, QueueFull, Worker

log = logging.getLogger(__name__)

MAX_ROWS = 128  # prompts x n in one request


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    if err.get("type") == "json_invalid":
        return f"could not parse the request body as JSON: {err.get('ctx', {}).get('error', err.get('msg'))}", None
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    param = loc[0] if loc else None
    if err.get("type") == "extra_forbidden":
        return f"unrecognized request argument supplied: {param}", param
    where = ".".join(loc) or "body"
    return f"{where}: {err.get('msg')}", param


def create_app(bundle: ModelBundle, *, max_queue: int = 64, max_batch: int = 8, classifier: Any = None) -> FastAPI:
    """An app serving `bundle` (model + tokenizer); `classifier` (serve.classify.Classifier) enables
    /v1/classify. The worker thread starts and stops with the app's lifespan."""
    worker = Worker(bundle.model, bundle.decode, max_queue=max_queue, max_batch=max_batch)
    n_ctx = bundle.model.config.n_ctx
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        log.info("serving %s (n_ctx %d, max batch %d, max queue %d)", bundle.name, n_ctx, max_batch, max_queue)
        try:
            yield
        finally:
            worker.close()

    app = FastAPI(title="gptkit", lifespan=lifespan)
    app.state.worker = worker

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, type_=exc.type, param=exc.param, code=exc.code), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return JSONResponse(error_body(str(exc.detail), code=code), exc.status_code)

    def enqueue(job: Job) -> None:
        try:
            worker.submit(job)
        except QueueFull as e:
            raise ApiError(503, str(e), type_="server_error", code="queue_full") from None

    # --- endpoints ------------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": bundle.name, "busy": worker.busy, "queued": worker.queued,
                "max_queue": max_queue, "max_batch": max_batch, "batches_run": worker.batches_run,
                "largest_batch": worker.largest_batch}

    def model_card() -> dict[str, Any]:
        return {"id": bundle.name, "object": "model", "created": started, "owned_by": "gptkit",
                "n_ctx": n_ctx, "task": classifier.spec.task if classifier else None}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != bundle.name:
            raise ApiError(404, f"the model {model_id!r} does not exist; this server has {bundle.name!r}",
                           param="model", code="model_not_found")
        return model_card()

    def encode_prompts(req: CompletionRequest) -> tuple[list[list[int]], list[str]]:
        """Prompt(s) -> ids and texts; a string or token-id list, or a list of either."""
        p = req.prompt
        if isinstance(p, str):
            items: list[Any] = [p]
        elif p and all(isinstance(x, int) for x in p):
            items = [p]
        else:
            items = list(p)
        if not items:
            raise ApiError(400, "prompt: give at least one prompt", param="prompt")
        vocab = bundle.model.config.vocab_size
        ids, texts = [], []
        for i, item in enumerate(items):
            if isinstance(item, str):
                ids.append(bundle.encode_prompt(item))
                texts.append(item)
            else:
                if any(not 0 <= t < vocab for t in item):
                    raise ApiError(400, f"prompt[{i}]: token ids must be in [0, {vocab})", param="prompt")
                ids.append(list(item) or [bundle.tokenizer.eot_id])
                texts.append(bundle.decode(list(item)))
            if len(ids[-1]) > n_ctx:
                raise ApiError(
                    400,
                    f"This model's maximum context length is {n_ctx} tokens, however prompt {i} has "
                    f"{len(ids[-1])} tokens. Please shorten the prompt.",
                    param="prompt", code="context_length_exceeded",
                )
        if len(ids) * req.n > MAX_ROWS:
            raise ApiError(400, f"prompts x n is {len(ids) * req.n}; at most {MAX_ROWS} per request", param="n")
        return ids, texts

    def generation_config(req: CompletionRequest) -> GenerationConfig:
        if req.best_of is not None and req.best_of != req.n:
            raise ApiError(400, "best_of is not supported (only best_of == n)", param="best_of")
        greedy = req.temperature == 0
        return GenerationConfig(
            max_new_tokens=req.max_tokens,
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=None if req.top_p >= 1.0 else req.top_p,
            repetition_penalty=req.repetition_penalty,
            seed=None if greedy else req.seed,
            stop_ids=bundle.stop_ids,
            num_samples=req.n,
            top_logprobs=req.logprobs or 0,
        )

    def tops_as_dicts(tops: list[tuple[tuple[int, float], ...]]) -> list[dict[str, float]]:
        return [{bundle.decode([t]): lp for t, lp in top} for top in tops]

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        prompts, prompt_texts = encode_prompts(req)
        config = generation_config(req)
        job = GenerationJob(asyncio.get_running_loop(), prompts, config, req.stop_list())
        enqueue(job)
        cid, created, name = completion_id(), int(time.time()), req.model or bundle.name
        n = req.n
        n_choices = len(prompts) * n
        prefix = [prompt_texts[c // n] if req.echo else "" for c in range(n_choices)]
        prompt_tokens = sum(len(p) for p in prompts)
        want_lp = req.logprobs is not None

        if req.stream:
            return StreamingResponse(
                stream_events(job, cid, created, name, prefix, prompt_tokens, want_lp, n_choices,
                              bool(req.stream_options and req.stream_options.include_usage)),
                media_type="text/event-stream",
            )

        ids: list[list[int]] = [[] for _ in range(n_choices)]
        lps: list[list[float]] = [[] for _ in range(n_choices)]
        tops: list[list[tuple]] = [[] for _ in range(n_choices)]
        texts: list[str] = [""] * n_choices
        reasons: list[str | None] = [None] * n_choices
        try:
            while True:
                event = await job.events.get()
                kind = event[0]
                if kind == "token":
                    _, c, _delta, token, lp, top = event
                    ids[c].append(token)
                    lps[c].append(lp)
                    tops[c].append(top)
                elif kind == "finish":
                    _, c, reason, _tail, text, n_at_stop = event
                    texts[c], reasons[c] = text, reason
                    if n_at_stop is not None:  # a stop string: report the tokens up to it
                        del ids[c][n_at_stop:], lps[c][n_at_stop:], tops[c][n_at_stop:]
                elif kind == "error":
                    raise ApiError(500, f"generation failed: {event[1]}", type_="server_error")
                else:
                    break
        finally:
            job.cancelled.set()  # a disconnected client stops its rows at the next token
        choices = []
        for c in range(n_choices):
            logprobs = None
            if want_lp:
                logprobs = logprobs_object(token_pieces(bundle.decode, ids[c], prompts[c // n]), lps[c],
                                           tops_as_dicts(tops[c]) if req.logprobs else None, len(prefix[c]))
            choices.append({"text": prefix[c] + texts[c], "index": c, "logprobs": logprobs, "finish_reason": reasons[c]})
        return completion_object(cid, name, choices, usage(prompt_tokens, sum(len(x) for x in ids)), created)

    async def stream_events(job: GenerationJob, cid: str, created: int, name: str, prefix: list[str],
                            prompt_tokens: int, want_lp: bool, n_choices: int, include_usage: bool) -> AsyncIterator[str]:
        def chunk(choice: int, text: str, logprobs: Any = None, reason: str | None = None) -> str:
            obj = completion_object(cid, name, [{"text": text, "index": choice, "logprobs": logprobs,
                                                 "finish_reason": reason}], None, created)
            return f"data: {json.dumps(obj)}\n\n"

        completion_tokens = 0
        offsets = [len(p) for p in prefix]
        try:
            for c in range(n_choices):
                if prefix[c]:
                    yield chunk(c, prefix[c])
            while True:
                event = await job.events.get()
                kind = event[0]
                if kind == "token":
                    _, c, delta, token, lp, top = event
                    completion_tokens += 1
                    logprobs = None
                    if want_lp:
                        logprobs = logprobs_object([delta], [lp],
                                                   tops_as_dicts([top]) if top else None, offsets[c])
                    offsets[c] += len(delta)
                    if delta or logprobs:
                        yield chunk(c, delta, logprobs)
                elif kind == "finish":
                    _, c, reason, tail, _text, _n = event
                    yield chunk(c, tail, None, reason)
                elif kind == "error":
                    yield f"data: {json.dumps(error_body(f'generation failed: {event[1]}', type_='server_error'))}\n\n"
                    return
                else:
                    break
            if include_usage:
                obj = completion_object(cid, name, [], usage(prompt_tokens, completion_tokens), created)
                yield f"data: {json.dumps(obj)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()

    @app.post("/v1/classify")
    async def classify(req: ClassifyRequest):
        if classifier is None:
            raise ApiError(400, f"{bundle.name} is not a task model (no task.json + head.safetensors); "
                           "fine-tune one with `gptkit finetune`", param="model", code="not_a_task_model")
        try:
            encoded = classifier.encode(req.input)
        except GptkitError as e:
            raise ApiError(400, str(e), param="input") from None
        job = CallJob(asyncio.get_running_loop(), lambda: classifier.run(encoded))
        enqueue(job)
        result = None
        while True:
            event = await job.events.get()
            if event[0] == "result":
                result = event[1]
            elif event[0] == "error":
                raise ApiError(500, f"classification failed: {event[1]}", type_="server_error")
            else:
                break
        return {"object": "list", "model": req.model or bundle.name, "task": classifier.spec.task, "data": result}

    return app


def load_app(model_dir: str, *, max_queue: int = 64, max_batch: int = 8, device: str = "auto") -> FastAPI:
    """An app for a model directory; a fine-tuned task directory also gets /v1/classify."""
    from pathlib import Path

    from ..generation.bundle import load_bundle, pick_device

    directory = Path(model_dir)
    if (directory / "task.json").is_file():
        from ..tasks.model import load_task_model
        from .classify import Classifier

        task_model, tok = load_task_model(directory, device=pick_device(device))
        if tok.vocab_size > task_model.gpt.config.vocab_size:
            raise GptkitError(f"{directory}: tokenizer and model vocabularies disagree")
        bundle = ModelBundle(task_model.gpt, tok, directory.resolve().name, directory)
        return create_app(bundle, max_queue=max_queue, max_batch=max_batch, classifier=Classifier(task_model, tok))
    return create_app(load_bundle(directory, device=device), max_queue=max_queue, max_batch=max_batch)
