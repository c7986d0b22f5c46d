"""`gpt1` BPE training is reproducible across processes (tokenizer/wordfinal.py), and what it learns is
the `</w>` BPE of tokenizers' own suffix trainer: the same symbols, merges that encode like a plain
rank-ordered BPE, every character kept as a plain symbol too."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
from tokenizers import Tokenizer, models, trainers

from gptkit.tokenizer import train_from_texts
from gptkit.tokenizer.specials import UNK
from gptkit.tokenizer.styles import EOW, empty_tokenizer
from gptkit.tokenizer.train import TRAINED_SPECIALS


def tied_text(n_words: int = 6000) -> list[str]:
    """Many words over a few syllables: merges of equal count are everywhere. Plus characters the
    marking must treat with care: punctuation (word-final, but a run of one mark is one word: `--`), an emoji and a private-use
    character of plane 15 at word ends and inside words."""
    rng = random.Random(0)
    syllables = ["ka", "ki", "ko", "ta", "te", "to", "sa", "su", "na", "ne", "ma", "mo", "ra", "ri"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) + rng.choice("aeioustnkr")
             for _ in range(n_words)]
    extra = ["party\U0001F600", "\U0001F600start", "odd\U000F0065", "in\U000F0065side", "end.", "(x)", "why?", "so--then", "no!!!", "wait...", "?!"]
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return lines + [" ".join(extra)] * 3


SCRIPT = """
import json, sys
from gptkit.tokenizer import train_from_texts
texts = json.loads(sys.stdin.read())
sys.stdout.write(train_from_texts(texts, 400, "gpt1").backend.to_str())
"""


def test_two_processes_train_byte_identical_gpt1_tokenizers():
    texts = json.dumps(tied_text())
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-c", SCRIPT], input=texts, capture_output=True, text=True,
                           env=env, timeout=120, check=True)
        outputs.append(r.stdout)
    # was: the `x</w>` symbols got other ids in each process, and tied merges another order
    assert outputs[0] == outputs[1]
    model = json.loads(outputs[0])["model"]
    assert len(model["vocab"]) == 400 and len(model["merges"]) > 100


def native_suffix_bpe(texts: list[str], vocab_size: int) -> dict:
    """tokenizers' own `</w>` trainer (ids and tie order vary run to run; the symbols do not)."""
    tok = empty_tokenizer("gpt1")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, end_of_word_suffix=EOW,
                                  special_tokens=[*TRAINED_SPECIALS, UNK])
    tok.train_from_iterator(texts, trainer=trainer)
    return json.loads(tok.to_str())["model"]


@pytest.fixture(scope="module")
def trained():
    return train_from_texts(tied_text(), 400, "gpt1")


def test_same_base_symbols_as_the_suffix_trainer_numbered_in_code_point_order(trained):
    ours = json.loads(trained.backend.to_str())["model"]
    theirs = native_suffix_bpe(tied_text(), 400)
    n_specials = len(TRAINED_SPECIALS) + 1
    base = lambda m: sorted(m["vocab"], key=m["vocab"].get)[n_specials : len(m["vocab"]) - len(m["merges"])]  # noqa: E731
    assert set(base(ours)) == set(base(theirs))  # every character plain, and word-final where it ends a word
    assert {".", "(", "?", "\U0001F600", "\U000F0065"} <= set(base(ours))  # plain although (also) final
    assert {".</w>", "\U0001F600</w>", "\U000F0065</w>", "s</w>"} <= set(base(ours))
    bmp = [t for t in base(ours) if ord(t[0]) < 0x10000]
    plain, final = sorted(t for t in bmp if not t.endswith(EOW)), sorted(t for t in bmp if t.endswith(EOW))
    assert bmp == plain + final  # ids: the plain characters, then the word-final ones, each in code point order


def reference_bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """The textbook `</w>` BPE of one word: merge the lowest-ranked adjacent pair until none is left."""
    symbols = [*word[:-1], word[-1] + EOW]
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def test_encodings_are_those_of_a_plain_bpe_with_the_learned_merges(trained):
    model = json.loads(trained.backend.to_str())["model"]
    ranks = {tuple(m): r for r, m in enumerate(model["merges"])}
    vocab = model["vocab"]
    text = " ".join(tied_text(400)[:20])
    words = [w for w, _ in trained.backend.pre_tokenizer.pre_tokenize_str(trained.backend.normalizer.normalize_str(text))]
    expected = [vocab[s] for w in words for s in reference_bpe(w, ranks)]
    assert trained.encode(text) == expected
    # and a tokenizer rebuilt from nothing but the vocabulary and the merges encodes alike
    plain = Tokenizer(models.BPE(vocab, [tuple(m) for m in model["merges"]], unk_token=UNK, end_of_word_suffix=EOW))
    plain.normalizer, plain.pre_tokenizer = trained.backend.normalizer, trained.backend.pre_tokenizer
    assert plain.encode(text).ids == expected


def test_same_vocabulary_and_merges_as_the_suffix_trainer_when_the_pairs_run_out():
    """Trained until no pair occurs twice, both learn every merge there is: the same set (the suffix
    trainer's order of tied merges varies run to run, so only the sets can be compared)."""
    ours = json.loads(train_from_texts(tied_text(), 5000, "gpt1").backend.to_str())["model"]
    theirs = native_suffix_bpe(tied_text(), 5000)
    assert len(ours["vocab"]) < 5000  # ran out of pairs, not of room
    assert set(ours["vocab"]) == set(theirs["vocab"])
    assert {tuple(m) for m in ours["merges"]} == {tuple(m) for m in theirs["merges"]}
