"""`gptkit generate` through real invocations on a tiny model directory the test builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptkit import GPT
from gptkit.cli import main
from gptkit.generation import GenerationConfig, TextStream, generate
from gptkit.generation.bundle import load_bundle
from gptkit.interop import save_pretrained
from gptkit.model import preset

CORPUS = [
    "the cat sat on the mat. the dog sat on the log. a bird sang in the tree.",
    "once upon a time there was a small model that liked to write stories about cats.",
    "héllo wörld, café crème — naïve façade!",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def make_model_dir(directory: Path, *, n_ctx: int = 64, seed: int = 0) -> Path:
    """A tiny random model + a BPE trained on a few lines: enough to exercise text in, text out."""
    from gptkit.tokenizer import train_from_texts

    tok = train_from_texts(CORPUS * 20, vocab_size=300, style="bytelevel")
    torch.manual_seed(seed)
    model = GPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=n_ctx, initializer_range=0.3))
    save_pretrained(model, directory)
    tok.save(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("gen") / "tiny")


def greedy_text(model_dir: Path, prompt: str, n: int) -> str:
    b = load_bundle(model_dir, device="cpu")
    prompt_ids = b.encode_prompt(prompt)
    c = generate(b.model, [prompt_ids], GenerationConfig(max_new_tokens=n, temperature=0.0, stop_ids=b.stop_ids))[0]
    return TextStream(b.decode, context=prompt_ids).decode(c.ids)


def test_generate_streams_greedy_text(model_dir, capsys):
    assert main(["generate", str(model_dir), "the cat", "--max-new-tokens", "12", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    expected = greedy_text(model_dir, "the cat", 12)
    assert expected and out == expected + "\n"



def test_prompt_may_follow_the_options(model_dir, capsys):
    """`generate DIR --max-new-tokens 5 PROMPT` used to be refused ("unrecognized arguments", under the
    top-level usage): argparse had filled the optional PROMPT, empty, together with DIR."""
    assert main(["generate", str(model_dir), "--max-new-tokens", "5", "--temperature", "0", "the cat"]) == 0
    assert capsys.readouterr().out == greedy_text(model_dir, "the cat", 5) + "\n"
    with pytest.raises(SystemExit) as stop:  # a real extra argument: the error shows generate's usage
        main(["generate", str(model_dir), "the", "cat", "--max-new-tokens", "5"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage: gptkit generate ")
    assert "gptkit generate: error: unrecognized arguments: cat" in err

def test_generate_json_has_ids_text_logprobs(model_dir, capsys):
    args = ["generate", str(model_dir), "once upon", "--max-new-tokens", "8", "--temperature", "0.8",
            "--seed", "3", "--num-samples", "3", "--json", "--logprobs", "2"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["samples"]) == 3
    b = load_bundle(model_dir, device="cpu")
    assert result["prompt_ids"] == b.tokenizer.encode("once upon")
    for s in result["samples"]:
        assert s["finish_reason"] in ("stop", "length")
        assert len(s["ids"]) == len(s["logprobs"]) == len(s["top_logprobs"]) <= 8
        assert s["text"] == TextStream(b.decode, context=result["prompt_ids"]).decode(s["ids"]) and all(lp <= 0 for lp in s["logprobs"])
        assert all(len(top) == 2 for top in s["top_logprobs"])
    # seeded: the same command gives the same samples, with or without the cache
    assert main(args + ["--no-cache"]) == 0
    again = json.loads(capsys.readouterr().out)["samples"]
    assert [s["ids"] for s in again] == [s["ids"] for s in result["samples"]]
    for a, s in zip(again, result["samples"]):
        assert a["logprobs"] == pytest.approx(s["logprobs"], abs=1e-4)


def test_generate_stop_string_is_cut(model_dir, capsys):
    full = greedy_text(model_dir, "the", 20)
    # a random model emits stray bytes (U+FFFD when decoded); stop on two real characters
    at = next(i for i in range(3, len(full) - 1) if "\ufffd" not in full[i : i + 2])
    stop = full[at : at + 2]
    assert main(["generate", str(model_dir), "the", "--max-new-tokens", "20", "--temperature", "0", "--stop", stop]) == 0
    out = capsys.readouterr().out
    assert out == full[: full.index(stop)] + "\n"


def test_generate_from_file_and_stdin(model_dir, tmp_path, capsys):
    f = tmp_path / "prompt.txt"
    f.write_text("the dog", encoding="utf-8")
    expected = greedy_text(model_dir, "the dog", 6) + "\n"
    args = ["generate", str(model_dir), "--max-new-tokens", "6", "--temperature", "0"]
    assert main(args + ["--file", str(f)]) == 0
    assert capsys.readouterr().out == expected
    # a real process reading standard input, as `echo ... | gptkit generate DIR` does
    by_stdin = subprocess.run([sys.executable, "-m", "gptkit", *args], input="the dog", capture_output=True,
                              text=True, timeout=120)
    assert by_stdin.returncode == 0 and by_stdin.stdout == expected


def test_generate_past_context_window(model_dir, capsys):
    assert main(["generate", str(model_dir), "a", "--max-new-tokens", "90", "--temperature", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["samples"][0]
    assert s["finish_reason"] == "length" and len(s["ids"]) == 90  # n_ctx is 64


def test_generate_bad_input_is_one_line_error(model_dir, tmp_path, capsys):
    assert main(["generate", str(model_dir), "x", "--top-p", "1.5"]) == 2
    assert "error: --top-p" in capsys.readouterr().err
    assert main(["generate", str(model_dir), "x", "--logprobs", "-1"]) == 2  # said "--top-logprobs", a flag that is not
    assert "gptkit generate: error: --logprobs must be >= 0, got -1\n" == capsys.readouterr().err
    assert main(["generate", str(model_dir), "x", "--window-stride", "64"]) == 2
    assert "error: --window-stride must be in [1, n_ctx=64), got 64\n" in capsys.readouterr().err  # not "n-ctx"
    assert main(["generate", str(tmp_path / "missing"), "x"]) == 2
    assert "missing" in capsys.readouterr().err



def test_non_utf8_prompt_is_one_line_error(model_dir, capsys, monkeypatch):
    """Python hands argv/stdin bytes that are not UTF-8 over as lone surrogates: they used to reach the
    tokenizer and end in "TypeError: TextInputSequence must be str"."""
    import io

    assert main(["generate", str(model_dir), "the \udcff king", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err == ("gptkit generate: error: the PROMPT argument: invalid UTF-8 at byte offset 4 (byte 0xff: "
                   "invalid start byte); convert it to UTF-8\n")
    assert main(["generate", str(model_dir), "the", "--stop", "\udce9", "--max-new-tokens", "2"]) == 2
    assert "error: --stop: invalid UTF-8 at byte offset 0" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the caf\xe9 king")))
    assert main(["generate", str(model_dir), "--max-new-tokens", "2"]) == 2
    assert "error: standard input: invalid UTF-8 at byte offset 7 (byte 0xe9: invalid continuation byte)" in (
        capsys.readouterr().err)

def test_gpt1_style_completion_keeps_the_space_after_the_prompt(tmp_path, capsys):
    """A GPT-1 BPE ends words with </w>: the completion of "the cat" must read " sat", not "sat"."""
    from gptkit.tokenizer import train_from_texts

    tok = train_from_texts(CORPUS * 20, vocab_size=300, style="gpt1")
    prompt = tok.encode("the cat")
    stream = TextStream(tok.decode, context=prompt)
    assert "".join(stream.push(t)[0] for t in tok.encode("sat on")) + stream.finish() == " sat on"
    torch.manual_seed(0)
    save_pretrained(GPT(preset("tiny", vocab_size=tok.vocab_size)), tmp_path)
    tok.save(tmp_path)
    assert main(["generate", str(tmp_path), "the cat", "--max-new-tokens", "5", "--temperature", "0", "--json"]) == 0
    sample = json.loads(capsys.readouterr().out)["samples"][0]
    words = tok.decode(prompt + sample["ids"])
    assert "the cat" + sample["text"] == words


def test_generate_several_samples_print_whole_with_headers(model_dir, capsys):
    args = ["generate", str(model_dir), "the", "--max-new-tokens", "4", "--num-samples", "3", "--seed", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("=== sample")]
    assert [h.split()[2] for h in headers] == ["1", "2", "3"]
    assert all(h.endswith(("(length) ===", "(stop) ===")) for h in headers)
    assert main(args + ["--json"]) == 0
    texts = [s["text"] for s in json.loads(capsys.readouterr().out)["samples"]]
    assert all(f"===\n{t}\n" in out for t in texts)  # the same seed gives the same samples
