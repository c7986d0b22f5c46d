"""Tokenization throughput: gptkit's GPTTokenizer vs transformers' PreTrainedTokenizerFast on the same
tokenizer file and text, and `gptkit prepare` end to end.

    python benchmarks/bench_tokenize.py                         # Shakespeare (gptkit data fetch), both styles
    python benchmarks/bench_tokenize.py --input DIR_OR_FILE --tokenizer TOK [--gpt2 DIR]

For each tokenizer (by default a gpt1 and a bytelevel BPE of 8,000 ids trained on the input, timed too):
encode MB/s one document at a time and as one batch, for both libraries (and a check that the ids agree),
then `gptkit prepare` MB/s with 1 worker and with one per core (library call, progress bar off), and the
CLI's wall time including interpreter start. MB are UTF-8 bytes of input text. Best of --repeats runs
(the least disturbed by other processes on a shared machine), with the median alongside.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def read_documents(inputs: list[Path]) -> list[str]:
    from gptkit.data.sources import collect_inputs, iter_pieces

    docs, parts = [], []
    for path in collect_inputs(inputs):
        for piece in iter_pieces(path):
            parts.append(piece.text)
            if piece.last:
                docs.append("".join(parts))
                parts = []
    return docs


def bench_tokenizer(name: str, tok_dir: Path, docs: list[str], repeats: int) -> list[dict]:
    from transformers import PreTrainedTokenizerFast

    from gptkit.tokenizer import GPTTokenizer

    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    tok = GPTTokenizer.load(tok_dir)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
    ours = tok.encode_batch(docs)
    theirs = hf(docs, add_special_tokens=False)["input_ids"]
    same = ours == theirs
    n_tokens = sum(map(len, ours))
    cases = {
        ("gptkit", "single"): lambda: [tok.encode(d) for d in docs],
        ("gptkit", "batch"): lambda: tok.encode_batch(docs),
        ("transformers", "single"): lambda: [hf.encode(d, add_special_tokens=False) for d in docs],
        ("transformers", "batch"): lambda: hf(docs, add_special_tokens=False)["input_ids"],
    }
    rows = []
    for (library, mode), fn in cases.items():
        best, median = common.time_best(fn, repeats)
        rows.append({"tokenizer": name, "what": f"{library} encode {mode}", "mb_s": mb / best,
                     "mb_s_median": mb / median, "tokens": n_tokens, "ids_equal": same})
    return rows


def bench_prepare(name: str, tok_dir: Path, inputs: list[Path], mb: float, repeats: int, workdir: Path) -> list[dict]:
    from gptkit.data.prepare import PrepareOptions, prepare_corpus

    rows = []
    for workers in sorted({1, os.cpu_count() or 1}):
        results = []
        for r in range(repeats):
            out = workdir / f"{name}-w{workers}-{r}"
            meta = prepare_corpus(inputs, tok_dir, out, PrepareOptions(workers=workers, show_progress=False))
            results.append(meta)
        best = max(m["mb_per_s"] for m in results)
        median = sorted(m["mb_per_s"] for m in results)[len(results) // 2]
        rows.append({"tokenizer": name, "what": f"prepare (library), {workers} worker(s)", "mb_s": best,
                     "mb_s_median": median, "tokens": results[0]["tokens"]})
    out = workdir / f"{name}-cli"
    cmd = [sys.executable, "-m", "gptkit", "prepare", *map(str, inputs), "--tokenizer", str(tok_dir),
           "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"gptkit prepare failed: {done.stderr.strip()}")
    rows.append({"tokenizer": name, "what": "gptkit prepare CLI (wall, incl. start-up)", "mb_s": mb / wall,
                 "summary": done.stdout.strip()})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, nargs="+", help="text files / directories (default: Shakespeare)")
    parser.add_argument("--tokenizer", type=Path, nargs="*", default=[], help="tokenizer(s) to use instead of training two")
    parser.add_argument("--gpt2", type=Path, help="directory with GPT-2 encoder.json + vocab.bpe (adds that tokenizer)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/tokenize-<time>.json)")
    args = parser.parse_args()
    # The 42-play default corpus has no whole document in a 0.5% validation draw: that warning, once per
    # run, is not news here.
    logging.getLogger("gptkit.data.prepare").setLevel(logging.ERROR)

    from gptkit.tokenizer import GPTTokenizer, train_from_texts

    inputs = args.input
    if not inputs:
        from gptkit.builtin_data import fetch

        inputs = [fetch("shakespeare")]
    docs = read_documents(inputs)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"input: {', '.join(map(str, inputs))}: {len(docs)} documents, {mb:.2f} MB", file=sys.stderr)

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gptkit-bench-tok-") as tmp:
        work = Path(tmp)
        tokenizers: dict[str, Path] = {}
        for path in args.tokenizer:
            tokenizers[path.name] = path
        if not args.tokenizer:
            for style in ("gpt1", "bytelevel"):
                t0 = time.perf_counter()
                tok = train_from_texts(iter(docs), args.vocab_size, style)
                seconds = time.perf_counter() - t0
                tok.save(work / style)
                tokenizers[f"{style}-{args.vocab_size}"] = work / style
                rows.append({"tokenizer": f"{style}-{args.vocab_size}", "what": "train_tokenizer", "mb_s": mb / seconds})
        if args.gpt2:
            GPTTokenizer.load(args.gpt2).save(work / "gpt2")
            tokenizers["gpt2"] = work / "gpt2"
        for name, tok_dir in tokenizers.items():
            tok_dir = tok_dir if tok_dir.is_dir() else tok_dir.parent
            rows += bench_tokenizer(name, tok_dir, docs, args.repeats)
            rows += bench_prepare(name, tok_dir, inputs, mb, args.repeats, work)

    print(common.format_table(rows, [("tokenizer", "tokenizer", "s"), ("what", "what", "s"), ("mb_s", "MB/s best", ".2f"),
                                     ("mb_s_median", "MB/s median", ".2f"), ("tokens", "tokens", ","),
                                     ("ids_equal", "ids = HF", "")]))
    path = common.write_results("tokenize", {"machine": common.machine_info(), "load_average": os.getloadavg(),
                                             "inputs": [str(p) for p in inputs], "documents": len(docs),
                                             "megabytes": mb, "rows": rows}, args.out)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
