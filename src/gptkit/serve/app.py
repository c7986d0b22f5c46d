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
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GptkitError
from ..generation import GenerationConfig
from ..generation.bundle import ModelBundle
from ..generation.scoring import score_sequences
from .auth import require_api_key
from .bodylimit import DEFAULT_MAX_BODY_BYTES, TOO_LARGE_CODE, BodyLimit
from .prompts import Prompt, PromptReader
from .protocol import (
    ApiError,
    ClassifyRequest,
    CompletionRequest,
    completion_id,
    completion_object,
    error_body,
    join_logprobs,
    logprobs_object,
    usage,
)
from .worker import CallJob, GenerationJob, Job, QueueFull, Worker

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.2  # how often a non-streaming request checks that its client is still there
UNION_SHAPES = {  # what a field of several shapes accepts, for the message when a value fits none
    "prompt": "a string, a list of strings, a list of token ids (integers) or a list of token-id lists",
    "stop": "a string or a list of strings",
}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    if err.get("type") == "json_invalid":
        return f"could not parse the request body as JSON: {err.get('ctx', {}).get('error', err.get('msg'))}", None
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    param = loc[0] if loc else None
    if err.get("type") == "extra_forbidden":
        return f"unrecognized request argument supplied: {param}", param
    if param in UNION_SHAPES and len(loc) > 1:
        # a union's errors name its branches ("prompt.list[int].0"): say what the field takes instead
        return f"{param}: must be {UNION_SHAPES[param]}", param
    where = ".".join(loc) or "body"
    return f"{where}: {err.get('msg')}", param


def create_app(bundle: ModelBundle, *, max_queue: int = 64, max_batch: int = 8, classifier: Any = None,
               max_tokens_limit: int | None = None, api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """An app serving `bundle` (model + tokenizer); `classifier` (serve.classify.Classifier) enables
    /v1/classify. The worker thread starts and stops with the app's lifespan.

    `max_tokens_limit` caps a request's max_tokens (default: the model's context, n_ctx; the engine
    can slide past it, so a server may allow more). With `api_key`, every /v1 request must carry
    `Authorization: Bearer <api_key>` (what the openai client sends). A request body over
    `max_body_bytes` is answered 413 `request_too_large` before it is parsed."""
    worker = Worker(bundle.model, bundle.decode, max_queue=max_queue, max_batch=max_batch)
    n_ctx = bundle.model.config.n_ctx
    limit = max_tokens_limit or n_ctx
    if limit < 1:
        raise ValueError(f"max_tokens_limit must be >= 1, got {max_tokens_limit}")
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
    if api_key:
        require_api_key(app, api_key)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    reader = PromptReader(bundle)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 413: TOO_LARGE_CODE}.get(exc.status_code)
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

    def check_max_tokens(req: CompletionRequest) -> None:
        if req.max_tokens == 0 and not req.echo:
            raise ApiError(400, "max_tokens: 0 generates nothing; it is only allowed with echo=true "
                           "(which returns the prompt, scored with logprobs)", param="max_tokens")
        if req.max_tokens > limit:
            raise ApiError(400, f"max_tokens is {req.max_tokens}, but this server allows at most {limit} "
                           "tokens per completion", param="max_tokens")

    def check_rows(req: CompletionRequest, n_prompts: int) -> None:
        # A larger job runs in batches of max_batch rows (worker.GenerationJob.parts), except a seeded
        # sampling one: its rows share one generator, so splitting it would change its samples.
        rows = n_prompts * req.n
        if rows > max_batch and req.seed is not None and req.temperature > 0 and req.max_tokens:
            raise ApiError(400, f"prompts x n is {rows}, but a request with a seed (and temperature > 0) runs in "
                           f"one batch, so that the seed reproduces it, and this server's batches hold at most "
                           f"{max_batch} rows (--max-batch): lower n or the number of prompts, or leave out the "
                           "seed", param="n")

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

    def shutting_down() -> ApiError:
        return ApiError(503, "the server is shutting down", type_="server_error", code="server_shutting_down")

    async def run_call(fn: Any, what: str) -> Any:
        """Run `fn` on the model's thread (as a queued job) and return its result."""
        job = CallJob(asyncio.get_running_loop(), fn)
        enqueue(job)
        result = None
        while True:
            event = await job.events.get()
            if event[0] == "result":
                result = event[1]
            elif event[0] == "error":
                raise ApiError(500, f"{what} failed: {event[1]}", type_="server_error")
            elif event[0] == "shutdown":
                raise shutting_down()
            else:
                return result

    def entries_logprobs(entries: list[tuple], at: int, k: int) -> dict[str, Any]:
        """A logprobs object of worker.TokenPieces entries, offsets shifted by `at` (the echoed prompt);
        the same entries give the same object whether they come in one response or over a stream."""
        return logprobs_object([e[0] for e in entries], [e[3] for e in entries],
                               reader.tops_as_dicts([e[4] for e in entries]) if k else None, at,
                               offsets=[at + e[1] for e in entries])

    async def prompt_logprobs(prompts: list[Prompt], k: int) -> list[dict[str, Any]]:
        """echo + logprobs: every prompt token's logprob under the model (the first is null)."""
        scores = await run_call(lambda: score_sequences(bundle.model, [p.ids for p in prompts], k), "scoring")
        return [logprobs_object(p.pieces(), list(sc.logprobs), reader.tops_as_dicts(list(sc.top)) if k else None, 0,
                                offsets=list(p.starts)) for p, sc in zip(prompts, scores)]

    async def cancel_on_disconnect(request: Request, job: Job) -> None:
        # A non-streaming handler only waits on the worker, so nothing else would notice the client
        # leaving; without this its rows run to max_tokens while later requests queue behind them.
        while not job.cancelled.is_set():
            if await request.is_disconnected():
                log.info("client disconnected: stopping its generation")
                job.cancelled.set()
                return
            await asyncio.sleep(DISCONNECT_POLL_S)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        # Everything that needs no tokenizing first (a request that cannot be served is refused
        # cheaply); then the prompts are tokenized on a thread, so that a long one does not hold up
        # the event loop, and with it every other request and /health.
        items = reader.items(req)
        check_max_tokens(req)
        check_rows(req, len(items))
        prompts = await run_in_threadpool(reader.read, items, echo=req.echo)
        config = generation_config(req) if req.max_tokens else None
        want_lp = req.logprobs is not None
        n = req.n
        n_choices = len(prompts) * n
        echoed = await prompt_logprobs(prompts, req.logprobs or 0) if req.echo and want_lp else None
        job = None
        if config is not None:
            job = GenerationJob(asyncio.get_running_loop(), [p.ids for p in prompts], config, req.stop_list(),
                                logprobs_entries=want_lp)
            enqueue(job)
        cid, created, name = completion_id(), int(time.time()), req.model or bundle.name
        prefix = [prompts[c // n].text if req.echo else "" for c in range(n_choices)]
        prefix_lp = [echoed[c // n] if echoed else None for c in range(n_choices)]
        prompt_tokens = sum(len(p.ids) for p in prompts)

        if req.stream:
            return StreamingResponse(
                stream_events(job, cid, created, name, prefix, prefix_lp, prompt_tokens, want_lp, req.logprobs or 0,
                              n_choices, bool(req.stream_options and req.stream_options.include_usage)),
                media_type="text/event-stream",
            )

        entries: list[list[tuple]] = [[] for _ in range(n_choices)]
        texts: list[str] = [""] * n_choices
        reasons: list[str | None] = ["length"] * n_choices
        completion_tokens = 0
        if job is not None:
            watcher = asyncio.create_task(cancel_on_disconnect(request, job))
            try:
                while True:
                    event = await job.events.get()
                    kind = event[0]
                    if kind == "token":
                        _, c, _delta, released = event
                        entries[c] += released
                        completion_tokens += 1
                    elif kind == "finish":
                        _, c, reason, _tail, text, released, on_stop_token = event
                        texts[c], reasons[c] = text, reason
                        entries[c] += released
                        completion_tokens += on_stop_token
                    elif kind == "error":
                        raise ApiError(500, f"generation failed: {event[1]}", type_="server_error")
                    elif kind == "shutdown":
                        raise shutting_down()
                    else:
                        break
            finally:
                watcher.cancel()
                job.cancelled.set()  # whatever ended this handler, its rows stop at the next token
        choices = []
        for c in range(n_choices):
            logprobs = None
            if want_lp:
                logprobs = entries_logprobs(entries[c], len(prefix[c]), req.logprobs or 0)
                if prefix_lp[c] is not None:
                    logprobs = join_logprobs(prefix_lp[c], logprobs)
            choices.append({"text": prefix[c] + texts[c], "index": c, "logprobs": logprobs, "finish_reason": reasons[c]})
        return completion_object(cid, name, choices, usage(prompt_tokens, completion_tokens), created)

    async def stream_events(job: GenerationJob | None, cid: str, created: int, name: str, prefix: list[str],
                            prefix_lp: list[dict[str, Any] | None], prompt_tokens: int, want_lp: bool, k: int,
                            n_choices: int, include_usage: bool) -> AsyncIterator[str]:
        def chunk(choice: int, text: str, logprobs: Any = None, reason: str | None = None) -> str:
            obj = completion_object(cid, name, [{"text": text, "index": choice, "logprobs": logprobs,
                                                 "finish_reason": reason}], None, created)
            return f"data: {json.dumps(obj)}\n\n"

        completion_tokens = 0
        try:
            for c in range(n_choices):
                if prefix[c] or prefix_lp[c]:
                    yield chunk(c, prefix[c], prefix_lp[c])
            if job is None:  # max_tokens 0: the echoed prompt is the whole answer
                for c in range(n_choices):
                    yield chunk(c, "", None, "length")
            while job is not None:
                event = await job.events.get()
                kind = event[0]
                if kind == "token":
                    _, c, delta, released = event
                    completion_tokens += 1
                    if delta or released:  # a chunk carries the entries of the tokens its text starts
                        yield chunk(c, delta, entries_logprobs(released, len(prefix[c]), k) if released else None)
                elif kind == "finish":
                    _, c, reason, tail, _text, released, on_stop_token = event
                    completion_tokens += on_stop_token
                    yield chunk(c, tail, entries_logprobs(released, len(prefix[c]), k) if released else None, reason)
                elif kind == "error":
                    body = error_body(f"generation failed: {event[1]}", type_="server_error")
                    yield f"data: {json.dumps(body)}\n\n"
                    return
                elif kind == "shutdown":  # the same error a non-streaming request gets (shutting_down)
                    yield f"data: {json.dumps(shutting_down().body())}\n\n"
                    return
                else:
                    break
            if include_usage:
                obj = completion_object(cid, name, [], usage(prompt_tokens, completion_tokens), created)
                yield f"data: {json.dumps(obj)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if job is not None:
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
        result = await run_call(lambda: classifier.run(encoded), "classification")
        return {"object": "list", "model": req.model or bundle.name, "task": classifier.spec.task, "data": result}

    return app


def load_app(model_dir: str, *, max_queue: int = 64, max_batch: int = 8, device: str = "auto",
             max_tokens_limit: int | None = None, api_key: str | None = None,
             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
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
        return create_app(bundle, max_queue=max_queue, max_batch=max_batch, classifier=Classifier(task_model, tok),
                          max_tokens_limit=max_tokens_limit, api_key=api_key, max_body_bytes=max_body_bytes)
    return create_app(load_bundle(directory, device=device), max_queue=max_queue, max_batch=max_batch,
                      max_tokens_limit=max_tokens_limit, api_key=api_key, max_body_bytes=max_body_bytes)
