"""`gptkit inspect attention|mask|trace|next` through real invocations, and the page in a real browser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptkit.cli import main
from gptkit.interop import load_pretrained, save_pretrained
from gptkit.model import GPT, preset
from gptkit.tokenizer import train_from_texts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT = "the cat sat on the mat."
CORPUS = ["the cat sat on the mat. the dog sat on the log. a bird flew over the old house."] * 40
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random tiny GPT-1 (post-LN) model directory holding its tokenizer, as gptkit writes them."""
    d = tmp_path_factory.mktemp("model")
    tok = train_from_texts(CORPUS, 120, "gpt1")
    torch.manual_seed(0)
    save_pretrained(GPT(preset("tiny", vocab_size=tok.vocab_size)), d)
    tok.save(d)
    return d


def attention_maps_of(model_dir: Path) -> torch.Tensor:
    from gptkit.inspect import attention_maps
    from gptkit.tokenizer import GPTTokenizer

    model = load_pretrained(model_dir).eval()
    return attention_maps(model, torch.tensor(GPTTokenizer.load(model_dir).encode(TEXT)))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5000


def test_attention_text_png_and_html(model_dir, tmp_path, capsys):
    png, page = tmp_path / "att.png", tmp_path / "att.html"
    code, out, _ = run(capsys, "attention", str(model_dir), TEXT, "--layer", "-1", "--out", str(png), "--html", str(page))
    assert code == 0
    assert "layer 1 head 0" in out
    assert "'cat'" in out and "</w>" not in out  # readable labels
    matrix_rows = [line for line in out.splitlines() if line.strip().startswith("cat ")]
    assert matrix_rows and matrix_rows[0].split()[3] == "."  # 'cat' (position 1) cannot see position 2
    assert_png(png)
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and len(html) > 3000
    assert '<canvas id="heatmap"' in html and '"layer":1' in html


def test_attention_all_heads_and_mean(model_dir, tmp_path, capsys):
    code, out, _ = run(capsys, "attention", str(model_dir), TEXT, "--all-heads", "--out", str(tmp_path / "g.png"))
    assert code == 0 and all(f"layer 0 head {h}" in out for h in range(4))
    assert_png(tmp_path / "g.png")
    code, out, _ = run(capsys, "attention", str(model_dir), TEXT, "--mean")
    assert code == 0 and "mean of 4 heads" in out
    strongest = [line for line in out.splitlines() if "->" in line]
    assert len(strongest) == 7  # one line per query token


def test_attention_rejects_bad_choices(model_dir, tmp_path, capsys):
    code, _, err = run(capsys, "attention", str(model_dir), TEXT, "--layer", "5")
    assert code == 2 and "--layer 5" in err and "2 layers" in err
    code, _, err = run(capsys, "attention", str(model_dir), TEXT, "--head", "4")
    assert code == 2 and "--head 4" in err
    code, _, err = run(capsys, "attention", str(tmp_path / "nope"), TEXT)
    assert code == 2 and "not a model directory" in err
    code, _, err = run(capsys, "attention", str(model_dir), "")
    assert code == 2 and "no tokens" in err
    code, _, err = run(capsys, "attention", str(model_dir), "the cat " * 40)
    assert code == 2 and "n_ctx=64" in err
    code, _, err = run(capsys, "attention", str(model_dir), TEXT, "--out", str(tmp_path / "missing" / "a.png"))
    assert code == 2 and "does not exist" in err


def test_mask_text_and_png(tmp_path, capsys):
    code, out, _ = run(capsys, "mask", "--n", "5", "--pad", "2", "--out", str(tmp_path / "mask.png"))
    assert code == 0
    lines = out.splitlines()
    causal = lines[lines.index("causal mask: query i sees keys j <= i") + 1 :][:6]
    assert [row.split()[1:] for row in causal[1:]] == [
        ["1", ".", ".", ".", "."],
        ["1", "1", ".", ".", "."],
        ["1", "1", "1", ".", "."],
        ["1", "1", "1", "1", "."],
        ["1", "1", "1", "1", "1"],
    ]
    start = next(i for i, line in enumerate(lines) if line.startswith("with 2 left-padding tokens"))
    padded = [row.split() for row in lines[start + 2 : start + 7]]
    assert padded[0] == ["pad0", "1", ".", ".", ".", "."]
    assert padded[-1] == ["4", ".", ".", "1", "1", "1"]
    assert_png(tmp_path / "mask.png")
    code, _, err = run(capsys, "mask", "--n", "4", "--pad", "4")
    assert code == 2 and "--pad 4" in err



def test_a_wrong_argument_shows_the_actions_usage(capsys):
    with pytest.raises(SystemExit) as stop:  # was `usage: gptkit [-h] [-v] COMMAND ...`
        main(["inspect", "mask", "--n", "3", "extra"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage: gptkit inspect mask ") and "arguments: extra" in err


def test_non_utf8_text_is_one_line_error(model_dir, capsys, monkeypatch):
    import io

    code, _, err = run(capsys, "next", str(model_dir), "the \udcff cat")  # argv bytes as Python hands them over
    assert code == 2 and err == ("gptkit inspect: error: the TEXT argument: invalid UTF-8 at byte offset 4 "
                                 "(byte 0xff: invalid start byte); convert it to UTF-8\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfet\0h\0e\0")))
    code, _, err = run(capsys, "trace", str(model_dir), "-")
    assert code == 2 and "standard input: invalid UTF-8 at byte offset 0" in err and "looks like UTF-16" in err

def test_trace_text_and_json(model_dir, capsys):
    V = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    code, out, _ = run(capsys, "trace", str(model_dir), TEXT)
    assert code == 0
    for needle in ("(1, 4, 7, 16)", "(1, 4, 7, 7)", "(1, 7, 256)", f"(1, 7, {V})", "---- block 1", "next-token"):
        assert needle in out
    worst = float(re.search(r"max \|difference\| = (\S+)", out).group(1))
    assert worst < 1e-5
    code, out, _ = run(capsys, "trace", str(model_dir), TEXT, "--json", "--layers", "1", "--top-k", "3")
    assert code == 0
    data = json.loads(out)
    assert data["tokens"][:3] == ["the", "cat", "sat"]
    assert [s["name"] for s in data["steps"] if s["block"] == 0] == ["block 0: whole block (post_ln; not expanded)"]
    assert data["steps"][-2]["shape"] == [1, 7, V] and len(data["next_token"]) == 3
    code, _, err = run(capsys, "trace", str(model_dir), TEXT, "--layers", "0,7")
    assert code == 2 and "layers 0..1" in err


def test_next_text_json_and_png(model_dir, tmp_path, capsys):
    code, out, _ = run(capsys, "next", str(model_dir), "the cat sat on the", "--top-k", "5", "--out", str(tmp_path / "n.png"))
    assert code == 0
    ranks = [line for line in out.splitlines() if re.match(r"\s+\d+\. ", line)]
    assert len(ranks) == 5
    assert_png(tmp_path / "n.png")
    code, out, _ = run(capsys, "next", str(model_dir), "the cat sat on the", "--top-k", "5", "--json")
    rows = json.loads(out)["next"]
    probs = [r["prob"] for r in rows]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    model = load_pretrained(model_dir).eval()
    from gptkit.tokenizer import GPTTokenizer

    ids = torch.tensor([GPTTokenizer.load(model_dir).encode("the cat sat on the")])
    with torch.no_grad():
        expected = model(ids)[0, -1].softmax(-1)
    assert [r["id"] for r in rows] == expected.topk(5).indices.tolist()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_attention_page_renders_in_headless_chromium(model_dir, tmp_path, capsys):
    page = tmp_path / "att.html"
    assert run(capsys, "attention", str(model_dir), TEXT, "--html", str(page), "--layer", "1", "--head", "2")[0] == 0
    flags = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900",
    ]  # fmt: skip
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=60, check=False)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60).stdout
    if not shot.exists() and not dom:
        pytest.skip("chromium is installed but could not start here")
    canvas = re.search(r"<canvas[^>]*>", dom).group(0)
    assert 'data-rendered="true"' in canvas
    assert 'data-cells="49"' in canvas  # 7 x 7 tokens drawn
    assert 'data-layer="1"' in canvas and 'data-head="2"' in canvas
    assert '<option value="11"' not in dom and dom.count("<option") == 2 + 1 + 4  # layers, mean, heads

    # A link naming layer, head and cell opens that view and describes the cell like a hover does.
    probe = subprocess.run(
        [*flags, "--dump-dom", page.as_uri() + "#layer=0&head=1&cell=2,1"], capture_output=True, text=True, timeout=60
    ).stdout
    assert 'data-layer="0"' in probe and 'data-head="1"' in probe
    maps = attention_maps_of(model_dir)
    expected = f"sat (2) -&gt; cat (1): {maps[0, 1, 2, 1]:.4f}"
    assert expected in probe

    assert_png(shot)
    mpimg = pytest.importorskip("matplotlib.image")
    pixels = mpimg.imread(shot)[..., :3]
    colours = {tuple(p) for p in (pixels.reshape(-1, 3) * 255).round().astype(int)[::7].tolist()}
    assert len(colours) > 20  # not a blank page: text, the heatmap, its colour ramp


def test_console_script_runs(tmp_path):
    # The installed `gptkit` script sits next to this interpreter (the venv's bin/), on PATH or not.
    script = Path(sys.executable).with_name("gptkit")
    assert script.exists(), f"console script not installed at {script}"
    out = subprocess.run(
        [str(script), "inspect", "mask", "--n", "3"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "causal mask" in out and out.count("1") >= 6


def test_gpt2_order_bytelevel_model_with_separate_tokenizer(tmp_path, capsys):
    """A pre-LN model whose tokenizer lives elsewhere (--tokenizer), with byte-level labels."""
    tok = train_from_texts(CORPUS, 300, "bytelevel")
    model_dir, tok_dir = tmp_path / "m", tmp_path / "tok"
    torch.manual_seed(0)
    save_pretrained(GPT(preset("tiny", vocab_size=tok.vocab_size, block_order="pre_ln")), model_dir)
    tok.save(tok_dir)
    code, out, _ = run(capsys, "trace", str(model_dir), TEXT, "--tokenizer", str(tok_dir / "tokenizer.json"))
    assert code == 0
    assert "pre-LN (GPT-2)" in out and "final LayerNorm" in out and "LayerNorm before attention" in out
    assert "\u2423cat" in out  # the byte-level space shown as a visible marker, not as 'Ġ'
    code, out, _ = run(capsys, "attention", str(model_dir), TEXT, "--tokenizer", str(tok_dir), "--mean")
    assert code == 0 and "'\u2423sat'" in out
    code, _, err = run(capsys, "trace", str(model_dir), TEXT)  # no tokenizer in the model directory
    assert code == 2 and "--tokenizer PATH" in err

    small = tmp_path / "small"
    save_pretrained(GPT(preset("tiny", vocab_size=50)), small)
    code, _, err = run(capsys, "next", str(small), TEXT, "--tokenizer", str(tok_dir))
    assert code == 2 and "do not belong together" in err
