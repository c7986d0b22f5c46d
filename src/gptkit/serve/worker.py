"""One thread owns the model; requests reach it through a bounded queue.

Why a single worker: a model (and its KV caches) is not safe to drive from several threads, and on a
CPU concurrent forwards only fight over the same cores. Concurrency comes from batching instead:
queued generation jobs with the same settings are merged into one left-padded batch (the engine makes
each row equal to its run alone), up to `max_batch` rows. A full queue is refused at once (the app
answers 503) instead of letting latency grow without bound.

Results travel back to the asyncio side through `loop.call_soon_threadsafe`, as small event tuples.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ..generation import GenerationConfig, TextStream, stream_generate
from ..generation.engine import TokenEvent
from ..model.gpt import GPT

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The request queue is at its bound; the client should retry later."""


class Job:
    """A unit of work for the worker plus the channel its events go back through.

    Events: ("token", choice, text_delta, token_id, logprob, top) and ("finish", choice, reason,
    held_back_text, full_text, n_tokens_at_stop_string or None, stop_token or None) for generation,
    where stop_token is (token_id, logprob, top) of the end-of-text token that ended the row;
    ("result", value) for calls; then ("done",), or ("error", message) for a failure and
    ("shutdown", message) when the server stops before the job is done.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: asyncio.Queue[tuple] = asyncio.Queue()
        self.cancelled = threading.Event()

    def post(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            self.cancelled.set()

    @property
    def rows(self) -> int:
        return 1

    def batch_key(self) -> Any:
        return None


class GenerationJob(Job):
    def __init__(self, loop: asyncio.AbstractEventLoop, prompts: list[list[int]], config: GenerationConfig,
                 stops: list[str]) -> None:
        super().__init__(loop)
        self.prompts = prompts
        self.config = config
        self.stops = stops

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.config.num_samples

    def batch_key(self) -> Any:
        # Rows of one batch share one sampling generator, so a seeded job must run alone to be
        # reproducible; greedy and unseeded jobs with equal settings can share a batch.
        if self.config.seed is not None and self.config.temperature > 0:
            return None
        return self.config


class CallJob(Job):
    """Any other model work (e.g. classification), run on the worker thread, result posted back."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> None:
        super().__init__(loop)
        self.fn = fn


class Worker:
    """The thread that owns `model`. `submit(job)` enqueues or raises QueueFull."""

    def __init__(self, model: GPT, decode: Callable[[list[int]], str], *, max_queue: int = 64, max_batch: int = 8) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be >= 1")
        self.model = model
        self.decode = decode
        self.max_queue = max_queue
        self.max_batch = max_batch
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._running: list[Job] = []
        self.busy = False
        self.batches_run = 0
        self.largest_batch = 0
        self._thread = threading.Thread(target=self._loop, name="gptkit-model-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Refuse new jobs and end every queued and running one now: the running batch stops at its
        next token (a generation can be long, and shutdown must not wait for it). Safe to call from a
        signal handler and more than once."""
        with self._cv:
            self._closing = True
            ended = list(self._jobs) + self._running
            self._jobs.clear()
            self._cv.notify_all()
        for job in ended:
            if not job.cancelled.is_set():
                job.cancelled.set()
                job.post(("shutdown", "the server is shutting down"))

    def close(self, timeout: float = 10.0) -> None:
        self.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def queued(self) -> int:
        return len(self._jobs)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting); retry later")
            self._jobs.append(job)
            self._cv.notify()

    # --- worker thread ------------------------------------------------------------------------

    def _take_batch(self) -> list[Job]:
        first = self._jobs.popleft()
        batch, rows, key = [first], first.rows, first.batch_key()
        if key is not None:
            for job in list(self._jobs):
                if rows >= self.max_batch:
                    break
                if job.batch_key() == key and rows + job.rows <= self.max_batch and not job.cancelled.is_set():
                    self._jobs.remove(job)
                    batch.append(job)
                    rows += job.rows
        return batch

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closing:
                    self._cv.wait()
                if self._closing:
                    return
                batch = self._take_batch()
                self._running = batch
                self.busy = True
            try:
                live = [job for job in batch if not job.cancelled.is_set()]
                if live and isinstance(live[0], CallJob):
                    live[0].post(("result", live[0].fn()))
                elif live:
                    self._generate(live)
                for job in live:
                    job.post(("done",))
            except Exception as e:  # a failed batch must not take the server down with it
                log.exception("generation failed")
                for job in batch:
                    job.post(("error", f"{type(e).__name__}: {e}"))
            finally:
                with self._cv:
                    self._running = []
                self.busy = False

    def _generate(self, batch: list[Job]) -> None:
        jobs: list[GenerationJob] = batch  # type: ignore[assignment]
        config = jobs[0].config
        n = config.num_samples
        prompts: list[list[int]] = []
        owners: list[tuple[GenerationJob, int]] = []  # per batch prompt: its job and index there
        for job in jobs:
            for i, p in enumerate(job.prompts):
                prompts.append(p)
                owners.append((job, i))
        streams = [TextStream(self.decode, owners[r // n][0].stops, context=prompts[r // n])
                   for r in range(len(prompts) * n)]

        def owner(row: int) -> tuple[GenerationJob, int]:
            job, i = owners[row // n]
            return job, i * n + row % n

        def should_stop(row: int, _ids: list[int]) -> bool:
            return streams[row].stopped or owner(row)[0].cancelled.is_set()

        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(streams))
        log.debug("running %d job(s), %d rows", len(jobs), len(streams))
        for event in stream_generate(self.model, prompts, config, should_stop=should_stop):
            job, choice = owner(event.row)
            stream = streams[event.row]
            if isinstance(event, TokenEvent):
                delta, _ = stream.push(event.token)
                job.post(("token", choice, delta, event.token, event.logprob, event.top))
            else:
                stop_token = None if event.token is None else (event.token, event.logprob, event.top)
                job.post(("finish", choice, event.reason, stream.finish(), stream.text, stream.n_tokens_at_stop,
                          stop_token))
