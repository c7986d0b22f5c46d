"""The `</w>` tokenizer styles beyond gptkit's own `gpt1`: `openai-gpt` (transformers'
OpenAIGPTTokenizer, id for id) and `gpt1-original` (the pipeline GPT-1 was trained with)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gptkit.errors import GptkitError
from gptkit.tokenizer import GPTTokenizer, original, train_from_texts
from gptkit.tokenizer.original import standardize
from gptkit.tokenizer.styles import empty_tokenizer

WIKIPEDIA = Path.home() / ".cache" / "gptkit" / "datasets" / "wikipedia" / "documents.jsonl"
# Mixed text written here, used when the built-in Wikipedia leads are not in the cache: accents,
# other scripts, control characters, punctuation runs, numbers, contractions.
WRITTEN = [
    "Her naiveté surprised Schütte, who had studied with Mollà in Barcelona.",
    "Ångström, Øresund, Łódź, Dvořák and São Paulo: façade, crème brûlée, jalapeño.",
    "東京 (Tokyo) and 北京 are capitals; Москва is too. Ελλάδα, عربى, हिन्दी.",
    "He said \"don't\" -- twice!! Costs $5.00, or 1,000,000 yen... (maybe) [sic] {x|y} a_b a/b",
    "Tabs\tand\u00a0non-breaking spaces, zero\u200bwidth, control\x07 chars and ﬁ ligatures.",
    "Résumé vs resume; coöperate; naïve café; İstanbul; Straße; Ǆemal; ½ + ² = ¾?",
] * 40


def documents(limit: int) -> list[str]:
    if WIKIPEDIA.is_file():
        with open(WIKIPEDIA, encoding="utf-8") as f:
            return [json.loads(line)["text"] for _, line in zip(range(limit), f)]
    return WRITTEN


def write_pair(tok: GPTTokenizer, directory: Path) -> Path:
    """The `vocab.json` + `merges.txt` pair of a `</w>` BPE, as the released openai-gpt files are laid out."""
    model = json.loads(tok.backend.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    docs = documents(400)
    tok = train_from_texts(docs + WRITTEN[:6], vocab_size=2000, style="gpt1")
    return write_pair(tok, tmp_path_factory.mktemp("pair"))


# 2,000 documents in the default suite (seconds); all 10,033 Wikipedia leads with -m slow.
@pytest.mark.parametrize("limit", [2000, pytest.param(20_000, marks=pytest.mark.slow)])
def test_openai_gpt_pair_gives_transformers_ids_on_every_document(pair, limit):
    transformers = pytest.importorskip("transformers")
    hf = transformers.OpenAIGPTTokenizer.from_pretrained(str(pair))
    mine = GPTTokenizer.load(pair)
    assert mine.style == "openai-gpt"
    docs = documents(limit) + WRITTEN[:6]
    theirs = hf(docs, add_special_tokens=False)["input_ids"]
    ours = mine.encode_batch(docs)
    same = sum(a == b for a, b in zip(theirs, ours))
    print(f"openai-gpt style vs transformers: {same} of {len(docs)} documents identical")
    assert same == len(docs)
    # The accents that used to differ: stripped, as BERT's normaliser does.
    for word in ("naiveté", "Schütte", "Mollà"):
        assert mine.encode(word) == hf.encode(word, add_special_tokens=False)
    assert mine.decode(mine.encode("Her naiveté")) == "her naivete"


def test_gpt1_style_is_still_available_and_different(pair):
    gpt1 = GPTTokenizer.load(pair, style="gpt1")
    assert gpt1.style == "gpt1" and gpt1.decode(gpt1.encode("naiveté")) != "naivete"
    with pytest.raises(GptkitError, match="cannot be read in the bytelevel style"):
        GPTTokenizer.load(pair, style="bytelevel")


# ---- gpt1-original: the standardisation rules (pure Python) ---------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("a—b–c―d", "a - b - c - d"),  # the dash family becomes "-", set apart
    ("wait…", "wait..."),  # the ellipsis character: three dots (dots are not set apart)
    ("it´s", "it's"),  # the acute accent used as an apostrophe
    ("no!!! really??", "no !!! really ??"),  # a run of one character stays one group
    ("a--b", "a -- b"),
    ("(x) [y] {z} a/b a\\b a|b a_b a*b a+b a~b a;b a,b", "( x ) [ y ] { z } a / b a \\ b a | b a _ b a * b a + b a ~ b a ; b a , b"),
    ('say "hi"', 'say " hi "'),
    ("!?", "! ?"),  # different characters: separate groups
    ("one\n\n  two", "one \n two"),  # newlines and the whitespace around them: one " \n "
    ("  many \t  spaces  ", "many spaces"),
    ("3.5 and 1,000 and 10:30", "3.5 and 1 , 000 and 10:30"),
    ("don't", "don't"),
])
def test_standardize_follows_the_published_rules(text, expected):
    assert standardize(text) == expected


def original_or_skip():
    pytest.importorskip("ftfy")
    pytest.importorskip("spacy")
    return original.pipeline()


@pytest.mark.parametrize("text, words", [
    ("I don't know, can't you?", ["i", "do", "n't", "know", ",", "ca", "n't", "you", "?"]),
    ("It's 3.5 km... or 1,000,000 $!", ["it", "'s", "3.5", "km", "...", "or", "1", ",", "000", ",", "000", "$", "!"]),
    ("An e-mail — a dash – and… more", ["an", "e", "-", "mail", "-", "a", "dash", "-", "and", "...", "more"]),
    ("Line one.\n\nLine two", ["line", "one", ".", "\n", "line", "two"]),
    ("“Curly” quotes ﬁxed by ftfy", ['"', "curly", '"', "quotes", "fixed", "by", "ftfy"]),
    ("U.S.A. and Dr. Who", ["u.s.a.", "and", "dr.", "who"]),
])
def test_original_pipeline_words(text, words):
    assert original_or_skip().words(text) == words


def reference_bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE as the released encoder applied it to one word: the last symbol carries `</w>`, then the
    adjacent pair of lowest merge rank is joined, everywhere it occurs, until none is left."""
    symbols = [*word[:-1], word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = {(a, b) for a, b in zip(symbols, symbols[1:]) if (a, b) in ranks}
        if not pairs:
            break
        best = min(pairs, key=ranks.__getitem__)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def test_original_style_encodes_those_words_with_the_bpe(tmp_path):
    original_or_skip()
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    # A vocabulary learned on the pipeline's own words (as GPT-1's was), so "n't" and "\n" are in it.
    text = "I don't know, can't you? It's 3.5 km... or 1,000,000 $! An e-mail.\nLine two."
    raw = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    raw.pre_tokenizer = pre_tokenizers.Split(" ", "removed")
    raw.train_from_iterator([" ".join(original.pipeline().words(text))] * 30, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>"], end_of_word_suffix="</w>", show_progress=False))
    tok = GPTTokenizer.load(write_pair(GPTTokenizer(raw, "gpt1"), tmp_path / "pair"), style="gpt1-original")
    assert tok.style == "gpt1-original"
    text = "I don't know.\n\nIt's 3.5 km... An e-mail!"
    words = original.pipeline().words(text)
    vocab = json.loads((tmp_path / "pair" / "vocab.json").read_text(encoding="utf-8"))
    merges = (tmp_path / "pair" / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    expected = [vocab.get(piece, tok.unk_id) for w in words for piece in reference_bpe(w, ranks)]
    assert tok.encode(text) == expected
    assert "\n</w>" in tok.tokens(text) and "n't</w>" in tok.tokens(text)
    # A special token's string stands alone (and can be read as plain text instead).
    ids = tok.encode(f"hello{tok.id_to_token(tok.eot_id)}world")
    assert tok.eot_id in ids and tok.eot_id not in tok.encode("hello<|endoftext|>world", allow_special=False)
    # The style survives a save and load (it is recorded beside tokenizer.json).
    tok.save(tmp_path / "saved")
    again = GPTTokenizer.load(tmp_path / "saved")
    assert again.style == "gpt1-original" and again.encode(text) == tok.encode(text)
    assert again.encode_batch([text, "can't"]) == [tok.encode(text), tok.encode("can't")]


def test_original_style_without_its_dependencies_says_what_to_install(pair, monkeypatch):
    monkeypatch.setattr(original, "_pipeline", None)
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    with pytest.raises(GptkitError, match=r"pip install 'gptkit\[original\]'"):
        GPTTokenizer.load(pair, style="gpt1-original")


@pytest.mark.parametrize("text, words", [
    ("a father--o, that", ["a", "father", "--", "o", ",", "that"]),  # the typewriter dash: one word
    ("no!!! really?? wait... what?!", ["no", "!!!", "really", "??", "wait", "...", "what", "?", "!"]),
    ("(x) [y] «z»", ["(", "x", ")", "[", "y", "]", "«", "z", "»"]),
])
def test_gpt1_style_keeps_a_run_of_one_punctuation_character_together(text, words):
    # as the released standardisation grouped `-+`, `!+`, ...: a small LM trained on `--` split into
    # two `-` words sampled runs of `- - - -`
    pre = empty_tokenizer("gpt1").pre_tokenizer
    assert [w for w, _ in pre.pre_tokenize_str(text)] == words
