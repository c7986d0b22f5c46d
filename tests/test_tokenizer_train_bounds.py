"""Issue 17 item 14: tokenizer training on a text with one enormous whitespace-free "word" (base64,
minified JSON) stays linear: such runs reach the BPE trainer cut into bounded pieces."""

from __future__ import annotations

import os
import subprocess
import sys

from gptkit.tokenizer import GPTTokenizer
from gptkit.tokenizer.train import MAX_WORD_CHARS, bound_words


def test_bound_words_cuts_only_long_runs():
    text = "short words stay " + "x" * (2 * MAX_WORD_CHARS + 5) + " end"
    out = bound_words(text)
    assert out.startswith("short words stay ") and out.endswith(" end")
    assert max(len(w) for w in out.split()) == MAX_WORD_CHARS and out.replace(" ", "") == text.replace(" ", "")
    assert bound_words("a" * MAX_WORD_CHARS) == "a" * MAX_WORD_CHARS


def test_a_huge_word_does_not_stall_training(tmp_path):
    # 300,000 characters without a space: before the bound, about 70 s of CPU (quadratic: 160,000
    # took 19 s); now well under one. The timeout is a hang guard, not a speed claim.
    (tmp_path / "big.txt").write_text("the cat sat on the mat. " * 200 + "a" * 300_000 + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "gptkit", "tokenizer", "train", str(tmp_path / "big.txt"), "--out",
                           str(tmp_path / "tok"), "--vocab-size", "300", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stderr
    tok = GPTTokenizer.load(tmp_path / "tok")
    assert tok.decode(tok.encode("the cat sat")).strip() == "the cat sat"
