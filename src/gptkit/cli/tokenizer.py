"""`gptkit tokenizer train|encode|decode|info`: learn a BPE vocabulary, and look at what it does."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..tokenizer import GPTTokenizer

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train a BPE tokenizer, encode/decode text, describe a tokenizer")
    # intermixed: `encode TOK --tokens "text"` and `train a.txt --out T b.txt` read as meant
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="learn a BPE vocabulary from text files, directories or .jsonl (optionally .gz)")
    t.add_argument("inputs", nargs="+", help="text files, .jsonl files or directories (searched for *.txt, *.jsonl, *.gz)")
    t.add_argument("--out", required=True, help="directory to write tokenizer.json (+ transformers side files) into")
    t.add_argument("--vocab-size", type=int, required=True, help="total number of ids, special tokens included")
    t.add_argument("--style", choices=("gpt1", "bytelevel"), default="gpt1",
                   help="gpt1: lowercased, </w> word ends, as the paper; bytelevel: GPT-2's, never an unknown token")
    t.add_argument("--min-frequency", type=int, default=2, help="a pair must occur this often to be merged")
    t.add_argument("--text-field", default="text", help="field holding the text in .jsonl inputs")
    t.add_argument("--overwrite", action="store_true", help="replace an existing tokenizer.json in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)

    e = sub.add_parser("encode", help="print the ids (or tokens) of a text")
    e.add_argument("tokenizer", help="tokenizer.json, a directory holding one, or a vocab.json/encoder.json + merges directory")
    e.add_argument("text", nargs="*", help="text to encode (default: read --file or standard input)")
    e.add_argument("--file", help="encode this file's contents")
    e.add_argument("--tokens", action="store_true", help="print the token strings too")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=run_encode)

    d = sub.add_parser("decode", help="print the text of a list of ids")
    d.add_argument("tokenizer")
    d.add_argument("ids", nargs="+", type=int)
    d.add_argument("--keep-special", action="store_true", help="keep special tokens in the output")
    d.set_defaults(func=run_decode)

    i = sub.add_parser("info", help="vocabulary size, style and special-token ids of a tokenizer")
    i.add_argument("tokenizer")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)


def run_train(args: argparse.Namespace) -> int:
    from ..data.sources import collect_inputs, iter_pieces
    from ..errors import GptkitError
    from ..tokenizer import train_from_texts

    out = Path(args.out)
    check_out_dir(out)
    if (out / "tokenizer.json").exists() and not args.overwrite:
        raise GptkitError(f"{out / 'tokenizer.json'}: already exists (pass --overwrite to replace it)")
    files = collect_inputs(args.inputs)
    if not files:
        raise GptkitError(f"no *.txt, *.jsonl or *.gz files in {', '.join(args.inputs)}")

    def texts():
        for path in files:
            for piece in iter_pieces(path, args.text_field):
                if piece.text:
                    yield piece.text

    show = not args.quiet and sys.stderr.isatty()
    log.debug("training a %s BPE of %d ids on %d input files", args.style, args.vocab_size, len(files))
    tok = train_stoppably(lambda: train_from_texts(texts(), args.vocab_size, args.style, args.min_frequency,
                                                   show_progress=show))
    try:
        tok.save(out)
    except OSError as e:  # checked before training, but a disk can fill up or a path change meanwhile
        raise GptkitError(f"--out {out}: cannot write the tokenizer ({e.strerror or e})") from None
    print(f"wrote {out / 'tokenizer.json'}: {args.style} BPE, {tok.vocab_size} ids; "
          + ", ".join(f"{t}={i}" for t, i in tok.special_ids.items()))
    return 0


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def train_stoppably(train: Callable[[], GPTTokenizer]) -> GPTTokenizer:
    """`train()`, run in a forked child process so that SIGTERM and Ctrl-C stop it at once.

    The `tokenizers` trainer computes its merges in Rust without returning to Python, and Python
    runs a signal handler only between bytecodes: in-process, a SIGTERM sent mid-training waited for
    the whole training to finish (seconds to minutes) before the command could exit. Here the parent
    waits on a pipe, which a signal interrupts; it then kills the child and exits 143 (130), having
    written nothing. The child sends the trained tokenizer back as its JSON; the parent saves it
    (atomically, as before). Where fork is not available, training runs in this process."""
    import multiprocessing

    from ..errors import GptkitError
    from ..tokenizer import GPTTokenizer

    if "fork" not in multiprocessing.get_all_start_methods():
        return train()
    ctx = multiprocessing.get_context("fork")  # not spawn: no second import of gptkit and torch
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_training_child, args=(train, writer), daemon=True, name="tokenizer-train")
    # The child is made with SIGINT/SIGTERM blocked, so neither can reach it before it has set its
    # own dispositions; one that comes meanwhile is delivered to the parent when unblocked below.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        writer.close()
        try:
            kind, value = reader.recv()
        except EOFError:  # the child died without a word
            kind, value = "died", None
        child.join()
    except BaseException:  # SIGTERM (Terminated), Ctrl-C (KeyboardInterrupt), anything
        if child.pid is not None:
            child.kill()
            child.join()
        raise
    finally:
        reader.close()
    if kind == "ok":
        from tokenizers import Tokenizer

        backend_json, style = value
        return GPTTokenizer(Tokenizer.from_str(backend_json), style)
    if kind == "error":
        raise GptkitError(value)
    code = child.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with status {code}"
    raise GptkitError(f"tokenizer training failed: its process {how}")


def _training_child(train: Callable[[], GPTTokenizer], writer) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it (and kills this process).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    from ..errors import GptkitError

    try:
        tok = train()
    except GptkitError as e:  # a user error (a bad input file, too small a vocabulary): one line
        writer.send(("error", str(e)))
        return
    writer.send(("ok", (tok.backend.to_str(), tok.style)))


def check_out_dir(out: Path) -> None:
    """Refuse, before any training, an --out that cannot become a directory of files: an existing
    file, a path under a file, a directory this user cannot write in."""
    from ..errors import GptkitError

    if os.path.lexists(out) and not out.is_dir():
        raise GptkitError(f"--out {out}: exists and is not a directory")
    existing = out
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise GptkitError(f"--out {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GptkitError(f"--out {out}: cannot write in {existing} (permission denied)")


def run_encode(args: argparse.Namespace) -> int:
    from ..errors import GptkitError
    from ..tokenizer import GPTTokenizer
    from ..tokenizer.inputs import argument_text, read_stdin_text

    tok = GPTTokenizer.load(args.tokenizer)
    if args.text:
        n = len(args.text)
        text = " ".join(argument_text(t, "the TEXT argument" if n == 1 else f"TEXT argument {i + 1} of {n}")
                        for i, t in enumerate(args.text))
    elif args.file:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise GptkitError(f"{args.file}: cannot read as UTF-8 text ({e})") from None
    else:
        text = read_stdin_text()
    ids = tok.encode(text)
    if args.json:
        out = {"ids": ids}
        if args.tokens:
            out["tokens"] = tok.tokens(text)
        print(json.dumps(out, ensure_ascii=False))
    elif args.tokens:
        for i, t in zip(ids, tok.tokens(text)):
            print(f"{i}\t{t}")
    else:
        print(" ".join(map(str, ids)))
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from ..errors import GptkitError
    from ..tokenizer import GPTTokenizer

    tok = GPTTokenizer.load(args.tokenizer)
    bad = [i for i in args.ids if not 0 <= i < tok.vocab_size]
    if bad:
        raise GptkitError(f"ids out of range [0, {tok.vocab_size}): {bad[:10]}")
    print(tok.decode(args.ids, skip_special_tokens=not args.keep_special))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..tokenizer import GPTTokenizer

    tok = GPTTokenizer.load(args.tokenizer)
    info = {"tokenizer": args.tokenizer, "style": tok.style, "vocab_size": tok.vocab_size,
            "special_ids": tok.special_ids, "unk_id": tok.unk_id}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"tokenizer   {args.tokenizer}")
    print(f"style       {tok.style}")
    print(f"vocab_size  {tok.vocab_size}  (a model needs at least this many embeddings)")
    for token, i in tok.special_ids.items():
        print(f"  {token:<15} {i}")
    if tok.unk_id is not None:
        print(f"  {'<unk>':<15} {tok.unk_id}")
    return 0
