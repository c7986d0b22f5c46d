"""Corpus preparation: text/jsonl/gz inputs -> shards; determinism, piecing, and every bad-input case."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from gptkit.cli import main
from gptkit.data import load_corpus
from gptkit.data.prepare import PrepareOptions, in_val, prepare_corpus
from gptkit.errors import GptkitError
from gptkit.textio import iter_file_pieces, iter_jsonl_pieces
from gptkit.tokenizer import GPTTokenizer, train_from_texts

WORDS = "the of and to a in that is was he for it with as his on be at by i this had not are but".split()


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(rng.choice(WORDS) + ("\n" if i % 11 == 10 else " "))
    return "".join(out)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    train_from_texts([words(3000, s) for s in range(3)], 300, "bytelevel").save(d)
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    return GPTTokenizer.load(tok_dir)


def opts(**kw) -> PrepareOptions:
    kw.setdefault("workers", 1)
    kw.setdefault("show_progress", False)
    return PrepareOptions(**kw)


def make_inputs(root):
    root.mkdir()
    (root / "a.txt").write_text("First document. " + words(200, 1), encoding="utf-8")
    (root / "sub").mkdir()
    (root / "sub" / "b.txt.gz").write_bytes(gzip.compress(("Gzipped one. " + words(150, 2)).encode()))
    lines = [json.dumps({"text": f"json doc {i}: " + words(30, 10 + i), "id": i}) for i in range(6)]
    (root / "c.jsonl").write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n", encoding="utf-8")
    (root / "ignored.csv").write_text("not,a,corpus\n")
    return ["First document. " + words(200, 1), "Gzipped one. " + words(150, 2),
            *[f"json doc {i}: " + words(30, 10 + i) for i in range(6)]]


def all_docs(corpus, tok, split):
    tokens = np.concatenate([np.asarray(s) for s in corpus.split(split)]) if corpus.split(split) else np.empty(0)
    assert tokens.size == 0 or tokens[-1] == tok.eot_id
    docs, start = [], 0
    for end in np.flatnonzero(tokens == tok.eot_id):
        docs.append(tok.decode(tokens[start:end].tolist()))
        start = end + 1
    return docs


def test_prepare_text_gz_jsonl_round_trip(tmp_path, tok_dir, tok):
    expected = make_inputs(tmp_path / "in")
    meta = prepare_corpus([tmp_path / "in"], tok_dir, tmp_path / "out", opts(val_fraction=0.3, seed=1))
    corpus = load_corpus(tmp_path / "out")
    assert meta["documents"] == 8 == sum(corpus.meta["splits"][s]["documents"] for s in ("train", "val"))
    assert corpus.meta["vocab_size"] == tok.vocab_size and corpus.meta["dtype"] == "uint16"
    assert corpus.meta["mb_per_s"] > 0 and corpus.meta["val_split"] == "documents"
    got = all_docs(corpus, tok, "train") + all_docs(corpus, tok, "val")
    assert sorted(got) == sorted(expected)
    # Which documents are held out depends only on (seed, document index): files sorted a.txt, c.jsonl, sub/b.txt.gz.
    order = [expected[0], *expected[2:], expected[1]]
    assert all_docs(corpus, tok, "val") == [d for i, d in enumerate(order) if in_val(i, 1, 0.3)]
    assert GPTTokenizer.load(corpus.tokenizer_path).encode("the of") == tok.encode("the of")
    total = sum(s.size for sp in ("train", "val") for s in corpus.split(sp))
    assert total == meta["tokens"]


def test_special_strings_in_text_stay_text(tmp_path, tok_dir, tok):
    (tmp_path / "in.txt").write_text("a <|endoftext|> b _start_ c")
    prepare_corpus([tmp_path / "in.txt"], tok_dir, tmp_path / "out", opts(val_fraction=0.0))
    tokens = load_corpus(tmp_path / "out").split("train")[0]
    assert list(tokens).count(tok.eot_id) == 1 and tok.start_id not in tokens
    assert tok.decode(tokens[:-1].tolist()) == "a <|endoftext|> b _start_ c"


def test_workers_and_shard_size_do_not_change_the_tokens(tmp_path, tok_dir):
    make_inputs(tmp_path / "in")
    outs = {}
    for name, kw in {"one": dict(workers=1), "two": dict(workers=2, shard_tokens=97)}.items():
        prepare_corpus([tmp_path / "in"], tok_dir, tmp_path / name, opts(val_fraction=0.3, **kw))
        c = load_corpus(tmp_path / name)
        outs[name] = {s: np.concatenate(c.split(s)) for s in ("train", "val")}
        if name == "two":
            sizes = [s.size for s in c.split("train")]
            assert len(sizes) > 3 and all(n == 97 for n in sizes[:-1]) and 0 < sizes[-1] <= 97
            assert c.meta["splits"]["train"]["shards"][:2] == ["train_00000.bin", "train_00001.bin"]
    for s in ("train", "val"):
        np.testing.assert_array_equal(outs["one"][s], outs["two"][s])


def test_long_document_pieces_encode_like_the_whole(tmp_path, tok):
    # A 30k-character document read in 1000-character pieces, one line and many lines.
    for name, text in {"lines.txt": words(6000, 5), "oneline.txt": words(6000, 6).replace("\n", " ")}.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        pieces = list(iter_file_pieces(path, max_chars=1000))
        assert len(pieces) > 20 and all(len(p.text) <= 1000 for p in pieces)
        assert [p.last for p in pieces] == [False] * (len(pieces) - 1) + [True]
        assert "".join(p.text for p in pieces) == text
        assert sum(p.advance for p in pieces) == path.stat().st_size
        assert [i for p in pieces for i in tok.encode(p.text)] == tok.encode(text)


def test_blank_line_documents(tmp_path, tok_dir, tok):
    (tmp_path / "in.txt").write_text("\n\nfirst para\nstill first\n\n \n\nsecond para\n\n\nthird\n  \n")
    pieces = [p.text for p in iter_file_pieces(tmp_path / "in.txt", doc_split="blank-line") if p.last]
    assert pieces == ["first para\nstill first", "second para", "third"]
    meta = prepare_corpus([tmp_path / "in.txt"], tok_dir, tmp_path / "out", opts(val_fraction=0.0, doc_split="blank-line"))
    assert meta["documents"] == 3
    assert all_docs(load_corpus(tmp_path / "out"), tok, "train") == pieces


def test_no_document_in_validation_holds_out_the_tail(tmp_path, tok_dir):
    (tmp_path / "one.txt").write_text(words(2000, 3))
    meta = prepare_corpus([tmp_path / "one.txt"], tok_dir, tmp_path / "out", opts(val_fraction=0.1))
    s = meta["splits"]
    assert meta["val_split"] == "tail" and s["val"]["tokens"] > 0 and s["train"]["documents"] == 1
    assert s["val"]["tokens"] == -(-(s["train"]["tokens"] + s["val"]["tokens"]) // 10)


@pytest.mark.parametrize("doc_split", ["file", "blank-line"])
def test_tail_note_suggests_only_what_is_not_in_use(tmp_path, tok_dir, capsys, doc_split):
    """The note told a user who had passed --doc-split blank-line to pass --doc-split blank-line."""
    (tmp_path / "a.txt").write_text("\n\n".join(words(20, i) for i in range(5)))
    assert main(["prepare", str(tmp_path / "a.txt"), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "out"),
                 "--doc-split", doc_split, "--workers", "1", "--quiet"]) == 0
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "a larger --val-fraction" in note[0]
    assert ("--doc-split blank-line" in note[0]) == (doc_split == "file"), note


def test_uint32_shards_for_a_big_vocabulary(tmp_path):
    # A byte-level vocabulary of 70,256 entries (bytes + filler), no merges: <|endoftext|> lands above 65535.
    from tokenizers import pre_tokenizers

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({f"filler{i}": 256 + i for i in range(70_000)})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    big = GPTTokenizer.load(tmp_path)
    assert big.vocab_size > 65536 and big.eot_id > 65535
    (tmp_path / "in.txt").write_text("w1x2 w3x4")
    prepare_corpus([tmp_path / "in.txt"], tmp_path, tmp_path / "out", opts(val_fraction=0.0))
    tokens = load_corpus(tmp_path / "out").split("train")[0]
    assert tokens.dtype == np.uint32 and int(tokens[-1]) == big.eot_id
    assert big.decode(tokens[:-1].tolist()) == "w1x2 w3x4"


# ---- bad input: a clear error, and nothing partial left behind -------------------------------------
def leftovers(parent, keep):
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


@pytest.mark.parametrize("case", ["empty_file", "whitespace_only", "empty_dir", "empty_jsonl"])
def test_empty_corpus(tmp_path, tok_dir, case):
    src = tmp_path / "in"
    src.mkdir()
    if case == "empty_file":
        (src / "a.txt").write_text("")
    elif case == "whitespace_only":
        (src / "a.txt").write_text("  \n\n \t\n")
    elif case == "empty_jsonl":
        (src / "a.jsonl").write_text('{"text": ""}\n\n{"text": "   "}\n')
    with pytest.raises(GptkitError, match="empty corpus"):
        prepare_corpus([src], tok_dir, tmp_path / "out", opts())
    assert leftovers(tmp_path, {"in"}) == []


def test_invalid_utf8_names_file_and_offset(tmp_path, tok_dir):
    (tmp_path / "good.txt").write_text(words(100, 1))
    bad = tmp_path / "bad.txt"
    bad.write_bytes("café ok\n".encode() * 1000 + b"broken \xc3\x28 here")
    offset = len("café ok\n".encode()) * 1000 + len(b"broken ")
    with pytest.raises(GptkitError) as e:
        prepare_corpus([tmp_path / "good.txt", bad], tok_dir, tmp_path / "out", opts())
    assert str(e.value) == (f"{bad}, line 1001: invalid UTF-8 at byte offset {offset} "
                            "(byte 0xc3: invalid continuation byte); convert it to UTF-8")
    assert leftovers(tmp_path, {"good.txt", "bad.txt"}) == []


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 1 << 20])
def test_invalid_utf8_line_is_counted_across_chunks(tmp_path, chunk_bytes):
    """The streaming reader counts lines chunk by chunk: a \r\n cut by a chunk's end is one line end,
    and a character cut by it (held by the decoder) is reported at its own first byte."""
    path = tmp_path / "mixed.txt"
    data = b"one\r\ntwo\rthree\n\xc3\xa9\r\n\xe2\x82 broken"
    path.write_bytes(data)
    with pytest.raises(GptkitError) as e:
        list(iter_file_pieces(path, chunk_bytes=chunk_bytes))
    offset = data.index(b"\xe2")
    assert str(e.value) == (f"{path}, line 5: invalid UTF-8 at byte offset {offset} "
                            "(byte 0xe2: invalid continuation byte); convert it to UTF-8")


def test_invalid_utf8_in_gz_and_jsonl(tmp_path):
    (tmp_path / "x.txt.gz").write_bytes(gzip.compress(b"abc\xffdef"))
    with pytest.raises(GptkitError, match=r"x\.txt\.gz, line 1: invalid UTF-8 at byte offset 3 in the decompressed data "
                                          r"\(byte 0xff: invalid start byte\)"):
        list(iter_file_pieces(tmp_path / "x.txt.gz"))
    (tmp_path / "y.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xe2\x82"}\n')
    with pytest.raises(GptkitError, match=r"y\.jsonl, line 2: invalid UTF-8 at byte offset 25 \(byte 0xe2: "):
        list(iter_jsonl_pieces(tmp_path / "y.jsonl"))


def test_utf8_character_split_across_read_chunks_is_fine(tmp_path):
    text = "é" * ((1 << 20) + 3)  # 2-byte characters straddle the 1 MiB read boundary
    (tmp_path / "e.txt").write_text(text, encoding="utf-8")
    assert "".join(p.text for p in iter_file_pieces(tmp_path / "e.txt")) == text


def test_missing_path(tmp_path, tok_dir):
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(GptkitError, match=r"nope\.txt: no such file or directory"):
        prepare_corpus([tmp_path / "a.txt", tmp_path / "nope.txt"], tok_dir, tmp_path / "out", opts())
    assert leftovers(tmp_path, {"a.txt"}) == []


def test_malformed_json_line_names_file_and_line(tmp_path, tok_dir):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"text": "fine too"}\n{"text": broken}\n')
    with pytest.raises(GptkitError, match=r"d\.jsonl:3: malformed JSON"):
        prepare_corpus([tmp_path / "d.jsonl"], tok_dir, tmp_path / "out", opts())
    assert leftovers(tmp_path, {"d.jsonl"}) == []


def test_json_error_messages_say_at_once(tmp_path, tok_dir, capsys):
    """The parser's "Invalid control character at" plus our " at column N" read "at at column 15"
    (prepare and tokenizer train); jsonio's form ended in a dangling "at"."""
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"text": "a\tb"}\n')
    want = f"{tmp_path / 'd.jsonl'}:2: malformed JSON (Invalid control character at column 12)\n"
    assert main(["prepare", str(tmp_path / "d.jsonl"), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "out"),
                 "--workers", "1", "--quiet"]) == 2
    assert capsys.readouterr().err == "gptkit prepare: error: " + want
    assert main(["tokenizer", "train", str(tmp_path / "d.jsonl"), "--vocab-size", "300", "--out",
                 str(tmp_path / "tok")]) == 2
    assert capsys.readouterr().err == "gptkit tokenizer: error: " + want
    (tmp_path / "u.jsonl").write_text('{"text": "unterminated}')  # no newline: the string just stops
    with pytest.raises(GptkitError, match=r"malformed JSON \(Unterminated string starting at column 10\)$"):
        prepare_corpus([tmp_path / "u.jsonl"], tok_dir, tmp_path / "out", opts())
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "meta.json").write_text('{"format": "a\tb"}')
    with pytest.raises(GptkitError, match=r"meta\.json: invalid JSON at line 1, column 14: Invalid control character$"):
        load_corpus(tmp_path / "c")
    assert leftovers(tmp_path, {"d.jsonl", "u.jsonl", "c"}) == []


def test_missing_text_field_lists_the_fields(tmp_path, tok_dir):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"body": "x", "title": "y"}\n')
    with pytest.raises(GptkitError, match=r"d\.jsonl:2: no 'text' field \(fields found: body, title\)"):
        prepare_corpus([tmp_path / "d.jsonl"], tok_dir, tmp_path / "out", opts())
    (tmp_path / "e.jsonl").write_text('{"body": "x"}\n{"body": 3}\n')
    with pytest.raises(GptkitError, match=r"e\.jsonl:2: field 'body' is int"):
        prepare_corpus([tmp_path / "e.jsonl"], tok_dir, tmp_path / "out", opts(text_field="body"))
    assert leftovers(tmp_path, {"d.jsonl", "e.jsonl"}) == []


def test_corpus_shorter_than_a_context_window(tmp_path, tok_dir):
    (tmp_path / "a.txt").write_text("just a few words")
    with pytest.raises(GptkitError, match=r"PrepareOptions\.min_tokens is 513, but the corpus is too short: only \d+ training tokens"):
        prepare_corpus([tmp_path / "a.txt"], tok_dir, tmp_path / "out", opts(min_tokens=513, val_fraction=0))
    assert leftovers(tmp_path, {"a.txt"}) == []


def test_output_directory_not_empty_unless_overwrite(tmp_path, tok_dir):
    (tmp_path / "a.txt").write_text(words(100, 1))
    out = tmp_path / "out"
    prepare_corpus([tmp_path / "a.txt"], tok_dir, out, opts(val_fraction=0))
    with pytest.raises(GptkitError, match="out: output directory is not empty: it holds a prepared corpus "
                                          r"\(pass --overwrite"):
        prepare_corpus([tmp_path / "a.txt"], tok_dir, out, opts())
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # A failing overwrite leaves the old corpus as it was.
    (tmp_path / "bad.txt").write_bytes(b"\xff")
    with pytest.raises(GptkitError, match="invalid UTF-8"):
        prepare_corpus([tmp_path / "a.txt", tmp_path / "bad.txt"], tok_dir, out, opts(overwrite=True))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    (tmp_path / "b.txt").write_text(words(100, 2))
    prepare_corpus([tmp_path / "a.txt", tmp_path / "b.txt"], tok_dir, out, opts(overwrite=True, val_fraction=0))
    assert load_corpus(out).meta["documents"] == 2
    assert leftovers(tmp_path, {"a.txt", "b.txt", "bad.txt", "out"}) == []
    empty = tmp_path / "empty_out"
    empty.mkdir()  # an existing empty directory is fine without --overwrite
    prepare_corpus([tmp_path / "a.txt"], tok_dir, empty, opts(val_fraction=0))
    assert (empty / "meta.json").is_file()


def _tree(root):
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


@pytest.mark.parametrize("case", ["user_files", "corpus_plus_a_file", "tokenizer_plus_a_file", "other_format"])
def test_overwrite_deletes_nothing_but_an_earlier_corpus(tmp_path, tok_dir, case):
    """--overwrite used to delete whatever --out held (a user's thesis included): now, like pretrain's,
    it replaces only what gptkit made, a directory holding a corpus and nothing else."""
    (tmp_path / "a.txt").write_text(words(100, 1))
    out = tmp_path / "out"
    if case == "user_files":
        (out / "sub").mkdir(parents=True)
        (out / "thesis.txt").write_text("precious")
        (out / "sub" / "notes.md").write_text("x")
        why = "no meta.json"
    else:
        prepare_corpus([tmp_path / "a.txt"], tok_dir, out, opts(val_fraction=0))
        if case == "corpus_plus_a_file":
            (out / "thesis.txt").write_text("precious")
            why = r"it also holds thesis\.txt, which prepare did not write"
        elif case == "tokenizer_plus_a_file":
            (out / "tokenizer" / "mine.json").write_text("{}")
            why = r"it also holds tokenizer/mine\.json"
        else:
            meta = json.loads((out / "meta.json").read_text())
            (out / "meta.json").write_text(json.dumps({**meta, "format": "something-else"}))
            why = "format 'something-else' is not 'gptkit-corpus'"
    before = _tree(out)
    with pytest.raises(GptkitError, match=rf"out: not a prepared corpus \(.*{why}.*\); refusing to delete its files"):
        prepare_corpus([tmp_path / "a.txt"], tok_dir, out, opts(overwrite=True))
    with pytest.raises(GptkitError, match=rf"out: output directory is not empty and is not a prepared corpus \(.*{why}"):
        prepare_corpus([tmp_path / "a.txt"], tok_dir, out, opts())
    assert _tree(out) == before
    assert leftovers(tmp_path, {"a.txt", "out"}) == []


def test_tokenizer_files_are_what_a_corpus_may_hold(tmp_path, tok):
    from gptkit.data.prepare import TOKENIZER_FILES

    tok.save(tmp_path)
    assert tuple(sorted(p.name for p in tmp_path.iterdir())) == TOKENIZER_FILES


def test_output_that_is_or_holds_an_input_or_the_working_directory(tmp_path, tok_dir, monkeypatch):
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text(words(100, 1))
    before = _tree(tmp_path)
    with pytest.raises(GptkitError, match="books: is the input .*books; give the corpus a directory of its own"):
        prepare_corpus([books], tok_dir, books, opts(overwrite=True))
    with pytest.raises(GptkitError, match="books: holds the input .*a.txt"):
        prepare_corpus([books / "a.txt"], tok_dir, books, opts(overwrite=True))
    with pytest.raises(GptkitError, match=r"\.\.: holds the input"):  # a path that only resolves to it
        prepare_corpus([books / "a.txt"], tok_dir, books / "sub" / "..", opts(overwrite=True))
    monkeypatch.chdir(books)
    with pytest.raises(GptkitError, match=r"^\.: is the current directory"):
        prepare_corpus(["a.txt"], tok_dir, ".", opts(overwrite=True))
    with pytest.raises(GptkitError, match=r"^\.\.: is the current directory or holds it"):
        prepare_corpus(["a.txt"], tok_dir, "..", opts(overwrite=True))
    assert _tree(tmp_path) == before


def test_overwrite_with_the_corpus_own_tokenizer(tmp_path, tok_dir):
    (tmp_path / "a.txt").write_text(words(100, 1))
    out = tmp_path / "out"
    first = prepare_corpus([tmp_path / "a.txt"], tok_dir, out, opts(val_fraction=0))
    again = prepare_corpus([tmp_path / "a.txt"], out / "tokenizer", out, opts(val_fraction=0, overwrite=True))
    assert again["tokens"] == first["tokens"] and load_corpus(out).meta["tokenizer_source"] == str(out / "tokenizer")


def test_a_file_added_to_out_while_encoding_is_not_deleted(tmp_path, tok_dir, monkeypatch):
    import gptkit.data.prepare as prep

    (tmp_path / "a.txt").write_text(words(100, 1))
    out = tmp_path / "out"
    prepare_corpus([tmp_path / "a.txt"], tok_dir, out, opts(val_fraction=0))
    real = prep._prepare_into

    def meanwhile(*args):
        (out / "new.txt").write_text("written while prepare ran")
        return real(*args)

    monkeypatch.setattr(prep, "_prepare_into", meanwhile)
    with pytest.raises(GptkitError, match=r"new\.txt, which prepare did not write"):
        prepare_corpus([tmp_path / "a.txt"], tok_dir, out, opts(overwrite=True))
    assert (out / "new.txt").is_file() and (out / "meta.json").is_file()
    assert leftovers(tmp_path, {"a.txt", "out"}) == []


def test_cli_prepare_overwrite_refusals(tmp_path, tok_dir, capsys, monkeypatch):
    """The audit's reproductions: the input directory as --out, a user's directory, and `--out .`
    (a traceback and a `..old-*` directory left behind)."""
    d2 = tmp_path / "d2"
    d2.mkdir()
    (d2 / "books.txt").write_text(words(100, 1))
    common = ["--tokenizer", str(tok_dir), "--workers", "1", "--quiet", "--overwrite"]
    assert main(["prepare", str(d2), "--out", str(d2), *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the input" in err, err
    assert sorted(p.name for p in d2.iterdir()) == ["books.txt"]
    monkeypatch.chdir(d2)
    assert main(["prepare", "books.txt", "--out", ".", *common]) == 2
    err = capsys.readouterr().err
    assert err == "gptkit prepare: error: .: is the current directory; give the corpus a directory of its own " \
                  "(e.g. --out corpus)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d2"]
    assert sorted(p.name for p in d2.iterdir()) == ["books.txt"]


def test_output_below_a_file(tmp_path, tok_dir):
    (tmp_path / "a.txt").write_text(words(100, 1))
    with pytest.raises(GptkitError, match=r"a\.txt/corpus: .*a\.txt is not a directory"):
        prepare_corpus([tmp_path / "a.txt"], tok_dir, tmp_path / "a.txt" / "corpus", opts())


def test_load_corpus_errors(tmp_path):
    with pytest.raises(GptkitError, match="not a prepared corpus"):
        load_corpus(tmp_path)
    (tmp_path / "meta.json").write_text("{")
    with pytest.raises(GptkitError, match=r"meta\.json: invalid JSON at line 1"):
        load_corpus(tmp_path)


def test_cli_prepare_prints_summary_and_errors(tmp_path, tok_dir, capsys):
    make_inputs(tmp_path / "in")
    rc = main(["prepare", str(tmp_path / "in"), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "out"),
               "--val-fraction", "0.2", "--workers", "1", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "8 documents" in out and "tokens" in out and "MB/s" in out
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["documents"] == 8 and meta["splits"]["train"]["shards"] == ["train_00000.bin"]
    rc = main(["prepare", str(tmp_path / "in"), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2
    assert "gptkit prepare: error:" in capsys.readouterr().err
    rc = main(["prepare", str(tmp_path / "missing"), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "o2")])
    assert rc == 2 and "missing: no such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_interrupt_leaves_nothing_partial(tmp_path, tok_dir, monkeypatch):
    import gptkit.data.prepare as prep

    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(words(50, i))
    real = prep.iter_pieces

    def interrupted(path, *args):
        if path.name == "3.txt":
            raise KeyboardInterrupt
        return real(path, *args)

    monkeypatch.setattr(prep, "iter_pieces", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus([tmp_path], tok_dir, tmp_path / "out", opts(shard_tokens=10))
    assert leftovers(tmp_path, {f"{i}.txt" for i in range(5)}) == []


@pytest.mark.parametrize("chunk_bytes", [3, 7, 64])
def test_blank_line_split_does_not_depend_on_read_chunks(tmp_path, chunk_bytes):
    rng = random.Random(chunk_bytes)
    docs = [words(rng.randint(1, 30), i).strip() for i in range(40)]
    seps = ["\n\n", "\n \n", "\n\n\n\n", "\n\t\n  \n"]
    text = "\n" + "".join(d + rng.choice(seps) for d in docs) + "é tail"
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    got = [p.text for p in iter_file_pieces(tmp_path / "in.txt", "blank-line", chunk_bytes=chunk_bytes) if p.last]
    assert got == [*docs, "é tail"]


def test_byte_order_mark_is_not_text(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfhello")
    (tmp_path / "b.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "hi"}\n')
    assert [p.text for p in iter_file_pieces(tmp_path / "b.txt")] == ["hello"]
    assert [p.text for p in iter_jsonl_pieces(tmp_path / "b.jsonl")] == ["hi"]


# --- issue 17: inputs that crashed or misled ------------------------------------------------------


def test_utf16_file_is_named_as_utf16(tmp_path, tok_dir):
    (tmp_path / "u16.txt").write_bytes("hello world, in UTF-16".encode("utf-16"))
    with pytest.raises(GptkitError, match=r"u16\.txt, line 1: invalid UTF-8 at byte offset 0 \(a UTF-16 .*looks like UTF-16"):
        prepare_corpus([tmp_path / "u16.txt"], tok_dir, tmp_path / "out", opts())
    (tmp_path / "u16.jsonl").write_bytes('{"text": "hi"}\n'.encode("utf-16-le"))  # no byte-order mark
    with pytest.raises(GptkitError, match="looks like UTF-16"):
        prepare_corpus([tmp_path / "u16.jsonl"], tok_dir, tmp_path / "out", opts())


def test_lone_surrogate_in_a_jsonl_line_is_a_one_line_error(tmp_path, tok_dir):
    (tmp_path / "s.jsonl").write_text('{"text": "fine"}\n{"text": "bad \\ud800 here"}\n', encoding="utf-8")
    with pytest.raises(GptkitError, match=r"s\.jsonl:2: field 'text' holds an unpaired surrogate \(U\+D800\)"):
        prepare_corpus([tmp_path / "s.jsonl"], tok_dir, tmp_path / "out", opts())
    assert not (tmp_path / "out").exists()


def test_dangling_symlink_is_reported(tmp_path, tok_dir, caplog):
    import logging

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(words(100, 0), encoding="utf-8")
    (src / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    with caplog.at_level(logging.WARNING):
        prepare_corpus([src], tok_dir, tmp_path / "out", opts(val_fraction=0))
    assert "gone.txt: skipped: a symbolic link to" in caplog.text


def test_mb_per_s_counts_uncompressed_bytes(tmp_path, tok_dir):
    text = words(3000, 4)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(text.encode()))
    meta = prepare_corpus([tmp_path / "a.txt.gz"], tok_dir, tmp_path / "out", opts(val_fraction=0))
    assert meta["bytes"] == len(text.encode()) and meta["input_bytes"] == (tmp_path / "a.txt.gz").stat().st_size
    done = meta["mb_per_s"] * meta["seconds"] * 1e6  # the bytes the rate is about (both rounded)
    assert meta["input_bytes"] < meta["bytes"] / 3 and abs(done - meta["bytes"]) < abs(done - meta["input_bytes"])


def test_partial_output_of_a_killed_run_is_removed_next_time(tmp_path, tok_dir):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}-abc"
    live = tmp_path / f".out.partial-{__import__('os').getpid()}-xyz"  # a run still going: kept
    for d in (stale, live):
        d.mkdir()
        (d / "train_00000.bin").write_bytes(b"half")
    (tmp_path / "a.txt").write_text(words(100, 0), encoding="utf-8")
    prepare_corpus([tmp_path / "a.txt"], tok_dir, tmp_path / "out", opts(val_fraction=0))
    assert not stale.exists() and live.exists()


def test_cli_prepare_with_worker_processes_ends_without_tracebacks(tmp_path, tok_dir):
    """The pool stops its workers with SIGTERM; they must not run the CLI's SIGTERM handler (a forked one
    turned each worker's stop into a `Terminated` traceback in the middle of the demo's output)."""
    import subprocess
    import sys

    make_inputs(tmp_path / "in")
    proc = subprocess.run([sys.executable, "-m", "gptkit", "prepare", str(tmp_path / "in"), "--tokenizer",
                           str(tok_dir), "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Terminated" not in proc.stderr, proc.stderr


def _children(pid):
    """Pids of the running processes whose parent is `pid` (Linux /proc)."""
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_while_workers_start_is_quiet(tmp_path, tok_dir):
    """Ctrl-C (SIGINT to the whole process group) while the spawned workers were still importing
    printed a KeyboardInterrupt traceback from each: they could ignore SIGINT only once `_worker_init`
    ran. Now they start with SIGINT blocked; the main process exits 130 and leaves nothing. (Timing:
    the stop lands while the workers import, which takes seconds; a fast machine may miss the window,
    and then this passes either way. test_workers_start_with_sigint_blocked does not depend on it.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.txt").write_text((words(2000, 0) + "\n\n") * 400)  # ~4 MB: still encoding at the stop
    proc = subprocess.Popen([sys.executable, "-m", "gptkit", "prepare", str(tmp_path / "in"), "--tokenizer",
                             str(tok_dir), "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(_children(proc.pid)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.3)  # the resource tracker and both workers are past the interpreter's start-up, importing
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "gptkit prepare: interrupted", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="no signal masks")
def test_workers_start_with_sigint_blocked(tok):
    """The deterministic half of the test above: a worker blocks SIGINT from its first instruction,
    and the main process's own mask is as it was."""
    import signal

    import gptkit.data.prepare as prep

    pool = prep._start_pool(tok, 1)
    try:
        assert signal.SIGINT in pool.apply(signal.pthread_sigmask, (signal.SIG_BLOCK, []))
    finally:
        pool.terminate()
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
