"""Corpus preparation: text files / JSON lines -> token shards, streaming and in parallel.

The main process reads and validates the inputs piece by piece (gptkit.textio) and hands batches of
pieces to a pool of worker processes that encode them with the tokenizer's batch encoder. Results come
back in submission order and at most a few batches are in flight, so memory is bounded by the shard
buffers plus those batches, whatever the corpus size. Everything is written into a temporary directory
beside the output, which is renamed into place only when the whole corpus is done: an error or an
interrupt leaves nothing partial behind.

Each document ends with the end-of-text token; special-token strings inside the text are encoded as
plain text. The validation split is drawn by document: a document
goes to `val` when a hash of (seed, document index) falls below --val-fraction, which is deterministic
and independent of the number of workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import pid_alive
from ..errors import GptkitError
from ..options import (
    OptionError,
    boolean,
    check_options,
    fraction,
    non_negative_int,
    option,
    optional,
    positive_int,
)
from ..tokenizer import GPTTokenizer
from .corpus import FORMAT
from .shards import dtype_for, write_shard
from .sources import collect_inputs, iter_pieces

log = logging.getLogger(__name__)

DEFAULT_SHARD_TOKENS = 50_000_000  # 100 MB per uint16 shard
BATCH_CHARS = 1 << 20  # text per task sent to a worker
# A long document is encoded as pieces of at most this many characters (the ids do not change, see
# gptkit.textio), so even a corpus that is one huge file fills each batch with several pieces that the
# tokenizer's batch encoder spreads over its threads.
PIECE_CHARS = 1 << 16
SPLITS = ("train", "val")


@dataclass
class PrepareOptions:
    """How `prepare_corpus` works; each field declared once (the CLI's flags are read from here)."""

    val_fraction: float = option(0.005, help="share of documents held out for validation", check=fraction)
    shard_tokens: int = option(DEFAULT_SHARD_TOKENS, help="tokens per shard file (bounds memory)", check=positive_int)
    workers: int | None = option(None, help="encoding processes (default: one per CPU core; 1: none)",
                                 check=optional(positive_int))
    seed: int = option(0, help="seed of the validation draw", check=non_negative_int)
    text_field: str = option("text", help="field holding the document in .jsonl inputs")
    doc_split: str = option("file", help="plain text: one document per file, or one per blank-line-separated block",
                            choices=("file", "blank-line"))
    min_tokens: int | None = option(None, help="refuse a corpus with fewer training tokens than this (e.g. one "
                                               "context window, n_ctx + 1)", check=optional(positive_int))
    overwrite: bool = option(False, help="replace an earlier corpus in the output directory (only a directory that "
                                         "holds nothing but a corpus gptkit prepared)", check=boolean)
    show_progress: bool | None = None
    """None: a progress bar only when stderr is a terminal."""

    def __post_init__(self) -> None:
        check_options(self)

    def check(self) -> None:
        check_options(self)


def in_val(doc_index: int, seed: int, fraction: float) -> bool:
    """Deterministic per-document coin: hash(seed, index) mapped to [0, 1) compared with `fraction`."""
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"{seed}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


@dataclass
class ShardWriter:
    """Buffers one split's tokens and writes a shard each time `shard_tokens` have accumulated."""

    directory: Path
    split: str
    shard_tokens: int
    vocab_size: int
    shards: list[str] = field(default_factory=list)
    tokens: int = 0
    documents: int = 0
    _chunks: list[np.ndarray] = field(default_factory=list)
    _buffered: int = 0

    def add(self, ids: np.ndarray) -> None:
        self._chunks.append(ids.astype(dtype_for(self.vocab_size), copy=False))
        self._buffered += ids.size
        self.tokens += ids.size
        while self._buffered >= self.shard_tokens:
            self._write(self.shard_tokens)

    def take_tail(self, n: int) -> np.ndarray:
        """Remove and return up to the last `n` buffered (unwritten) tokens."""
        data = np.concatenate(self._chunks) if self._chunks else np.empty(0, dtype_for(self.vocab_size))
        n = min(n, data.size)
        self._chunks = [data[: data.size - n]]
        self._buffered -= n
        self.tokens -= n
        return data[data.size - n:]

    def close(self) -> None:
        if self._buffered:
            self._write(self._buffered)

    def _write(self, n: int) -> None:
        data = np.concatenate(self._chunks)
        name = f"{self.split}_{len(self.shards):05d}.bin"
        write_shard(self.directory / name, data[:n], self.vocab_size)
        self.shards.append(name)
        rest = data[n:]
        self._chunks = [rest] if rest.size else []
        self._buffered = rest.size


# ---- encoding: in this process, or in a pool of workers --------------------------------------------
_worker_tok: GPTTokenizer | None = None


def _worker_init(tokenizer_json: str, style: str) -> None:
    # One process per core already: the tokenizer's own thread pool would only oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # Ctrl-C is the main process's to handle (it stops the pool and removes the partial output);
    # workers that raised too would only add a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from tokenizers import Tokenizer

    global _worker_tok
    _worker_tok = GPTTokenizer(Tokenizer.from_str(tokenizer_json), style)


def _encode(tok: GPTTokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All pieces' ids concatenated (uint32) plus each piece's length: cheap to send between processes."""
    # A corpus that happens to contain "<|endoftext|>" or "_start_" must not smuggle special ids in.
    encoded = tok.encode_batch(texts, allow_special=False)
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
    flat = np.concatenate([np.asarray(ids, dtype=np.uint32) for ids in encoded]) if encoded else np.empty(0, np.uint32)
    return flat, lengths


def _worker_encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker_tok is not None
    return _encode(_worker_tok, texts)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Start worker processes with SIGINT blocked. A spawned worker spends its first seconds importing
    (gptkit, torch) before `_worker_init` can ignore SIGINT, and a Ctrl-C to the process group then
    printed a KeyboardInterrupt traceback from each one. The signal mask is inherited through fork and
    exec, so a worker starts blocking SIGINT and keeps doing so (Ctrl-C is the main process's to
    handle: it stops the pool and removes the partial output). Here a SIGINT that arrives meanwhile
    waits and is delivered, as KeyboardInterrupt, when the mask is restored."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield  # Windows has no signal masks; off the main thread, Python gets no SIGINT anyway
        return
    # The pool's first lock starts multiprocessing's resource tracker, and starting it unblocks SIGINT
    # (CPython's resource_tracker.ensure_running): have it running before SIGINT is blocked.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _start_pool(tok: GPTTokenizer, workers: int):
    """A pool of `workers` spawned encoding processes, started with SIGINT blocked (_sigint_held)."""
    # Fresh worker processes, not forks: the parent has already run the tokenizers library's own
    # threads (training, encoding), and a fork taken while one of them holds a lock can hang the child
    # forever (seen once in the test suite). Spawned workers also start without the CLI's SIGTERM
    # handler, so the pool's own SIGTERM at the end stops them quietly.
    ctx = multiprocessing.get_context("spawn")
    pool = None
    try:
        with _sigint_held():
            pool = ctx.Pool(workers, initializer=_worker_init, initargs=(tok.backend.to_str(), tok.style))
    except BaseException:  # a Ctrl-C held back while the workers started
        if pool is not None:
            pool.terminate()
        raise
    return pool


def _bounded_map(tok: GPTTokenizer, batches: Iterator[list[str]], workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Encoded batches in order; with workers > 1 at most 2 x workers batches are in flight."""
    if workers == 1:
        for texts in batches:
            yield _encode(tok, texts)
        return
    with _start_pool(tok, workers) as pool:
        pending: deque = deque()
        for texts in batches:
            pending.append(pool.apply_async(_worker_encode, (texts,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---- the whole job ------------------------------------------------------------------------------
def prepare_corpus(inputs: list[str | Path], tokenizer: str | Path, out: str | Path,
                   options: PrepareOptions | None = None) -> dict:
    """Tokenize `inputs` into a corpus directory `out`; returns the meta.json contents (with summary)."""
    opts = options or PrepareOptions()
    opts.check()
    out = Path(out)
    files = collect_inputs(inputs)
    _check_output(out, opts.overwrite, [Path(i) for i in inputs] + files)
    if out.name in ("", ".", ".."):  # "a/..": name the directory itself (the temporary one is named after it)
        out = out.resolve()
    if not files:
        raise GptkitError(f"empty corpus: no *.txt, *.jsonl or *.gz files in {', '.join(map(str, inputs))}")
    tok = GPTTokenizer.load(tokenizer)
    workers = opts.workers or os.cpu_count() or 1
    total_bytes = sum(f.stat().st_size for f in files)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(out)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-{os.getpid()}-"))
    except OSError as e:
        raise GptkitError(f"{out}: cannot create it in {out.parent} ({e.strerror or e})") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the corpus is an ordinary directory
        meta = _prepare_into(tmp, files, tok, opts, workers, total_bytes)
        meta["inputs"] = [str(f) for f in inputs]
        meta["tokenizer_source"] = str(tokenizer)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        # Again, now that the corpus is done: `out` may have gained files while it was being encoded.
        _check_output(out, opts.overwrite, [])
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _prepare_into(tmp: Path, files: list[Path], tok: GPTTokenizer, opts: PrepareOptions, workers: int,
                  total_bytes: int) -> dict:
    from tqdm import tqdm

    start = time.perf_counter()
    writers = {s: ShardWriter(tmp, s, opts.shard_tokens, tok.vocab_size) for s in SPLITS}
    eot = np.array([tok.eot_id], dtype=np.uint32)
    # Per submitted batch, the (split, ends-document) of each piece, consumed as results return.
    routes: deque[list[tuple[str, bool]]] = deque()
    progress = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare", leave=False,
                    disable=(not opts.show_progress) if opts.show_progress is not None else None)

    text_bytes = [0]  # uncompressed: what MB/s is about (a .gz's size on disk is not the work done)

    def batches() -> Iterator[list[str]]:
        doc_index = 0
        texts: list[str] = []
        route: list[tuple[str, bool]] = []
        size = 0
        for path in files:
            for piece in iter_pieces(path, opts.text_field, opts.doc_split, PIECE_CHARS):
                progress.update(piece.advance)
                if not piece.text and not piece.last:
                    continue  # progress-only piece
                split = "val" if in_val(doc_index, opts.seed, opts.val_fraction) else "train"
                texts.append(piece.text)
                route.append((split, piece.last))
                size += len(piece.text)
                text_bytes[0] += len(piece.text.encode("utf-8", "surrogatepass"))
                if piece.last:
                    doc_index += 1
                if size >= BATCH_CHARS:
                    routes.append(route)
                    yield texts
                    texts, route, size = [], [], 0
        if texts:
            routes.append(route)
            yield texts

    with progress:
        for flat, lengths in _bounded_map(tok, batches(), workers):
            route = routes.popleft()
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            # One array per split per batch (not one per document): a shard of many short documents
            # must not cost a Python object per document while it is buffered.
            parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
            for (split, last), a, b in zip(route, offsets[:-1], offsets[1:]):
                parts[split].append(flat[a:b])
                if last:
                    parts[split].append(eot)
                    writers[split].documents += 1
            for split, arrays in parts.items():
                if arrays:
                    writers[split].add(np.concatenate(arrays))

    documents = sum(w.documents for w in writers.values())
    if documents == 0:
        raise GptkitError(f"empty corpus: the {len(files)} input file(s) hold no text")
    val_split = "documents"
    if opts.val_fraction > 0 and writers["val"].tokens == 0:
        # Few, long documents (one per file, say) can all miss the validation draw; hold out the
        # tail of the training stream instead, and say so, rather than leave validation empty.
        want = max(1, math.ceil(opts.val_fraction * writers["train"].tokens))
        tail = writers["train"].take_tail(want)
        if tail.size:
            writers["val"].add(tail)
            val_split = "tail"
            log.warning("no document fell in the validation split (%d documents, --val-fraction %g): the last %d "
                        "training tokens were held out instead", documents, opts.val_fraction, tail.size)
    for w in writers.values():
        w.close()
    if opts.min_tokens is not None and writers["train"].tokens < opts.min_tokens:
        raise OptionError("PrepareOptions", "min_tokens", f"is {opts.min_tokens}, but the corpus is too short: "
                                                          f"only {writers['train'].tokens} training tokens")
    tok.save(tmp / "tokenizer")
    seconds = time.perf_counter() - start
    tokens = sum(w.tokens for w in writers.values())
    return {
        "format": FORMAT,
        "version": 1,
        "tokenizer": "tokenizer",
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "dtype": str(dtype_for(tok.vocab_size).name),
        "splits": {s: {"shards": w.shards, "tokens": w.tokens, "documents": w.documents} for s, w in writers.items()},
        "val_fraction": opts.val_fraction,
        "val_split": val_split,
        "seed": opts.seed,
        "doc_split": opts.doc_split,
        "text_field": opts.text_field,
        "shard_tokens": opts.shard_tokens,
        "files": len(files),
        "documents": documents,
        "tokens": tokens,
        "bytes": text_bytes[0],
        "input_bytes": total_bytes,
        "seconds": round(seconds, 3),
        "mb_per_s": round(text_bytes[0] / 1e6 / max(seconds, 1e-9), 3),
        "workers": workers,
    }


def summary_line(meta: dict) -> str:
    s = meta["splits"]
    return (f"{meta['documents']:,} documents ({s['train']['documents']:,} train, {s['val']['documents']:,} val), "
            f"{meta['tokens']:,} tokens ({s['train']['tokens']:,} train, {s['val']['tokens']:,} val), "
            f"{meta['bytes'] / 1e6:.2f} MB in {meta['seconds']:.2f} s = {meta['mb_per_s']:.2f} MB/s")


# What a prepared corpus directory holds besides its shards (listed in its meta.json); `--overwrite`
# replaces a directory only when it holds nothing else. TOKENIZER_FILES are what GPTTokenizer.save
# writes (a test holds the two in step).
CORPUS_ENTRIES = ("meta.json", "tokenizer")
TOKENIZER_FILES = ("special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")


def _check_output(out: Path, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse an `out` that prepare must not write, before anything is read or written: a file, the
    current directory or one holding it, a directory that is or holds an input, and a non-empty
    directory unless `overwrite` and it holds a corpus gptkit prepared (nothing else is ever deleted)."""
    if out.exists() and not out.is_dir():
        raise GptkitError(f"{out}: exists and is not a directory")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise GptkitError(f"{out}: {above} is not a directory")
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise GptkitError(f"{out}: is the current directory{'' if target == cwd else ' or holds it'}; "
                          f"give the corpus a directory of its own (e.g. --out corpus)")
    for item in inputs:
        path = item.resolve()
        if path == target or target in path.parents:
            raise GptkitError(f"{out}: {'is' if path == target else 'holds'} the input {item}; give the corpus "
                              f"a directory of its own")
    if not out.is_dir() or not any(out.iterdir()):
        return
    foreign = _not_a_corpus(out)
    if not overwrite:
        if foreign is None:
            raise GptkitError(f"{out}: output directory is not empty: it holds a prepared corpus (pass --overwrite "
                              f"to replace it, or choose another directory)")
        raise GptkitError(f"{out}: output directory is not empty and is not a prepared corpus ({foreign}); "
                          f"choose another directory")
    if foreign is not None:
        raise GptkitError(f"{out}: not a prepared corpus ({foreign}); refusing to delete its files")


def _not_a_corpus(out: Path) -> str | None:
    """None if `out` holds a corpus gptkit prepared and nothing else; otherwise why not, in a few words."""
    from ..jsonio import read_json

    meta_path = out / "meta.json"
    if meta_path.is_symlink() or not meta_path.is_file():
        return "meta.json is a symbolic link" if meta_path.is_symlink() else "no meta.json"
    try:
        meta = read_json(meta_path)
    except GptkitError as e:
        return str(e)
    if meta.get("format") != FORMAT:
        return f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}"
    expected = set(CORPUS_ENTRIES)
    splits = meta.get("splits")
    for split in splits.values() if isinstance(splits, dict) else ():
        shards = split.get("shards") if isinstance(split, dict) else None
        expected.update(name for name in shards or () if isinstance(name, str))
    others = sorted(p.name for p in out.iterdir() if p.name not in expected)
    tok_dir = out / "tokenizer"
    if tok_dir.is_symlink() or tok_dir.exists() and not tok_dir.is_dir():
        others.append("tokenizer (not a directory)")
    elif tok_dir.is_dir():
        others += [f"tokenizer/{p.name}" for p in sorted(tok_dir.iterdir())
                   if p.name not in TOKENIZER_FILES or p.is_dir() or p.is_symlink()]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return f"it also holds {shown}, which prepare did not write"
    return None


def _remove_stale_partials(out: Path) -> None:
    """Remove `.OUT.partial-PID-*` directories of earlier runs whose process is gone (kill -9); a
    running preparation's (its pid alive) is left alone."""
    for p in out.parent.glob(f".{out.name}.partial-*"):
        pid = p.name[len(f".{out.name}.partial-"):].split("-", 1)[0]
        if p.is_dir() and not p.is_symlink() and (not pid.isdigit() or not pid_alive(int(pid))):
            log.info("removing %s, left by an interrupted run", p)
            shutil.rmtree(p, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished directory to `out`; an old `out` (checked to be a corpus) is moved aside
    first and removed after, or put back if the new one cannot take its place."""
    if out.is_dir() and any(out.iterdir()):
        trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, trash / "old")
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(trash / "old", out)
            trash.rmdir()
            raise
        shutil.rmtree(trash, ignore_errors=True)
        return
    if out.is_dir():
        out.rmdir()
    os.replace(tmp, out)
