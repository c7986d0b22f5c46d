"""One thread owns the model; requests reach it through a bounded queue.

Why a single worker: a model (and its KV caches) is not safe to drive from several threads, and on a
CPU concurrent forwards only fight over the same cores. Concurrency comes from batching instead:
queued generation jobs with the same settings are merged into one left-padded batch (the engine makes
each row equal to its run alone), up to `max_batch` rows. A job with more rows than `max_batch` runs
in parts of at most `max_batch` rows, one after the other (GenerationJob.parts), so `max_batch`
bounds every batch, and with it the KV cache and activations. A full queue is refused at once (the
app answers 503) instead of letting latency grow without bound.

Results travel back to the asyncio side through `loop.call_soon_threadsafe`, as small event tuples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..generation import GenerationConfig, TextStream, stream_generate
from ..generation.engine import TokenEvent
from ..model.gpt import GPT

log = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"  # what decoding shows for a character whose bytes have not all come yet


class QueueFull(Exception):
    """The request queue is at its bound; the client should retry later."""


class Job:
    """A unit of work for the worker plus the channel its events go back through.

    Events: ("token", choice, text_delta, entries) per generated token and ("finish", choice, reason,
    held_back_text, full_text, entries, ended_on_stop_token) per row, for generation; ("result", value)
    for calls; then ("done",), or ("error", message) for a failure and ("shutdown", message) when the
    server stops before the job is done. `entries` are the row's logprobs entries released by that
    event (see TokenPieces; empty unless the job asked for them).
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


class TokenPieces:
    """A generated row's logprobs entries, `(piece, start, token, logprob, top)`: each token's piece
    of the text as `token_pieces` cuts it (pieces join to the row's text; a token ending inside a
    character adds "" and the one completing it the character) and where that piece starts in the
    text. Worked out one token at a time, beside the row's TextStream, so that a stream can send them
    as it goes and a whole response lists exactly the same ones.

    An entry is released once the text it starts in is shown, so a streamed chunk carries the entries
    of its own text; the rest at the end of the row. After a stop string only the tokens that start
    before it are kept (OpenAI cuts logprobs at the stop): the pieces then join to the text followed
    by at most the beginning of the stop string, when it starts inside the last token kept. A row
    ending on the end-of-text token gets that token last, with piece "" (a position the model chose).
    """

    def __init__(self, decode: Callable[[list[int]], str], context: list[int]) -> None:
        # token_pieces' pieces are a stop-less TextStream's deltas (the last token's with its held-back
        # tail): this one gives them one token at a time, at the stream's constant cost per token.
        self._pieces = TextStream(decode, context=context)
        self._pending: tuple[str, int, int, float, tuple] | None = None  # newest entry: its piece may still grow
        self._length = 0  # the pieces so far, joined: their length
        self._ready: list[tuple[str, int, int, float, tuple]] = []  # final entries not yet released
        self._shown = 0  # characters of the row's text shown so far

    def push(self, token: int, logprob: float, top: tuple, delta: str) -> list[tuple]:
        """The entries that the text shown up to and including `delta` releases."""
        if self._pending is not None:  # a next token came: the held-back character is not the last one's
            self._ready.append(self._pending)
            self._pending = None
        piece = self._pieces.push(token)[0]
        entry = (piece, self._length, token, logprob, top)
        self._length += len(piece)
        if self._pieces.holds_back:  # an unfinished character: the piece grows if this token is the last
            self._pending = entry
        else:
            self._ready.append(entry)
        self._shown += len(delta)
        return self._release(self._shown)

    def finish(self, tail: str, text: str, stopped: bool, stop_token: tuple | None) -> list[tuple]:
        """The entries still held back, once the row is over (`text`: its final text)."""
        if self._pending is not None:
            piece, start, *rest = self._pending
            rest_of_text = self._pieces.finish()
            self._ready.append((piece + rest_of_text, start, *rest))
            self._length += len(rest_of_text)
            self._pending = None
        out = self._release(len(text) if stopped else None)
        if stop_token is not None:
            out.append(("", self._length, *stop_token))
        return out

    def _release(self, before: int | None) -> list[tuple]:
        """The ready entries that start before `before` (all of them for None)."""
        n = len(self._ready)
        if before is not None:
            n = next((i for i, e in enumerate(self._ready) if e[1] >= before), n)
        out, self._ready = self._ready[:n], self._ready[n:]
        return out


@dataclass
class Part:
    """Rows of a generation job that run in one batch: samples `first` .. `first + count - 1` of each
    of its prompts numbered in `prompts`; `last` is the job's final part."""

    job: GenerationJob
    prompts: list[int]
    first: int
    count: int
    last: bool = True

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.count


class GenerationJob(Job):
    """Generate `prompts` with `config`, cutting rows at the stop strings `stops`; with
    `logprobs_entries` the events carry TokenPieces entries (for the response's `logprobs`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompts: list[list[int]], config: GenerationConfig,
                 stops: list[str], *, logprobs_entries: bool = False) -> None:
        super().__init__(loop)
        self.prompts = prompts
        self.config = config
        self.stops = stops
        self.logprobs_entries = logprobs_entries
        self.remaining: deque[Part] | None = None  # the parts not run yet, once the worker has split it

    def parts(self, max_batch: int) -> list[Part]:
        """The job in parts of at most `max_batch` rows: whole prompts (all n samples) while n fits,
        else each prompt's samples in runs of `max_batch`. A greedy row is the same in any batch, and
        unseeded samples are as random in one batch as in several; a seeded sampling job shares one
        generator across its batch, so splitting it would change (and, over a prompt's samples, repeat)
        its draws: it is left whole, and the app refuses one that does not fit."""
        n, count = self.config.num_samples, len(self.prompts)
        if count * n <= max_batch or self.batch_key() is None:
            return [Part(self, list(range(count)), 0, n)]
        if n <= max_batch:
            k = max_batch // n
            parts = [Part(self, list(range(i, min(count, i + k))), 0, n) for i in range(0, count, k)]
        else:
            parts = [Part(self, [i], f, min(max_batch, n - f)) for i in range(count) for f in range(0, n, max_batch)]
        for part in parts[:-1]:
            part.last = False
        return parts

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

    def _take_batch(self) -> list[Job | Part]:
        """The next batch: a call job, or the parts of generation jobs to run together. A job in
        several parts stays at the head of the queue until its last part is taken."""
        first = self._jobs[0]
        if not isinstance(first, GenerationJob) or first.cancelled.is_set():
            return [self._jobs.popleft()]
        if first.remaining is None:
            first.remaining = deque(first.parts(self.max_batch))
        part = first.remaining.popleft()
        if first.remaining:
            return [part]
        self._jobs.popleft()
        batch: list[Job | Part] = [part]
        rows, key = part.rows, first.batch_key()
        if key is not None and part.rows == first.rows:  # a whole job: others with its settings may join
            for job in list(self._jobs):
                if rows >= self.max_batch:
                    break
                if job.batch_key() == key and rows + job.rows <= self.max_batch and not job.cancelled.is_set():
                    self._jobs.remove(job)
                    batch.append(job.parts(self.max_batch)[0])  # type: ignore[attr-defined]  (whole: it fits)
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
                jobs = [item.job if isinstance(item, Part) else item for item in batch]
                self._running = jobs
                self.busy = True
            try:
                live = [item for item, job in zip(batch, jobs) if not job.cancelled.is_set()]
                if live and isinstance(live[0], CallJob):
                    live[0].post(("result", live[0].fn()))
                elif live:
                    self._generate(live)  # type: ignore[arg-type]
                for item in live:
                    if not isinstance(item, Part) or item.last:
                        (item.job if isinstance(item, Part) else item).post(("done",))
            except Exception as e:  # a failed batch must not take the server down with it
                log.exception("generation failed")
                for job in jobs:
                    job.post(("error", f"{type(e).__name__}: {e}"))
                    job.cancelled.set()  # its parts still queued are dropped
            finally:
                with self._cv:
                    self._running = []
                self.busy = False

    def _generate(self, parts: list[Part]) -> None:
        # The parts share their settings and their number of samples per prompt (n in the batch).
        config = parts[0].job.config
        n = parts[0].count
        if n != config.num_samples:
            config = dataclasses.replace(config, num_samples=n)
        prompts: list[list[int]] = []
        owners: list[tuple[GenerationJob, int]] = []  # per batch prompt: its job, and its first choice there
        for part in parts:
            for i in part.prompts:
                prompts.append(part.job.prompts[i])
                owners.append((part.job, i * part.job.config.num_samples + part.first))
        streams = [TextStream(self.decode, owners[r // n][0].stops, context=prompts[r // n])
                   for r in range(len(prompts) * n)]
        pieces = [TokenPieces(self.decode, prompts[r // n]) if owners[r // n][0].logprobs_entries else None
                  for r in range(len(streams))]

        def owner(row: int) -> tuple[GenerationJob, int]:
            job, first_choice = owners[row // n]
            return job, first_choice + row % n

        def should_stop(row: int, _ids: list[int]) -> bool:
            return streams[row].stopped or owner(row)[0].cancelled.is_set()

        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(streams))
        log.debug("running %d part(s) of jobs, %d rows", len(parts), len(streams))
        for event in stream_generate(self.model, prompts, config, should_stop=should_stop):
            job, choice = owner(event.row)
            stream, row_pieces = streams[event.row], pieces[event.row]
            if isinstance(event, TokenEvent):
                delta, _ = stream.push(event.token)
                entries = row_pieces.push(event.token, event.logprob, event.top, delta) if row_pieces else []
                job.post(("token", choice, delta, entries))
            else:
                stop_token = None if event.token is None else (event.token, event.logprob, event.top)
                tail, text = stream.finish(), stream.text
                entries = row_pieces.finish(tail, text, stream.stopped, stop_token) if row_pieces else []
                job.post(("finish", choice, event.reason, tail, text, entries, stop_token is not None))
