"""Bad model directories get one-line errors naming the file; a pickle payload never runs."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from gptkit import GPT
from gptkit.cli import main
from gptkit.errors import GptkitError
from gptkit.interop import load_pretrained, save_pretrained
from gptkit.model import GPTConfig


@pytest.fixture()
def model_dir(tmp_path):
    torch.manual_seed(0)
    save_pretrained(GPT(GPTConfig(vocab_size=40, n_ctx=8, n_embd=16, n_layer=2, n_head=2)), tmp_path / "m")
    return tmp_path / "m"


def one_line_error(directory, needle: str) -> str:
    with pytest.raises(GptkitError) as err:
        load_pretrained(directory)
    message = str(err.value)
    assert "\n" not in message
    assert needle in message, message
    return message


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "no config.json")


def test_unknown_model_type(model_dir):
    path = model_dir / "config.json"
    data = json.loads(path.read_text())
    data["model_type"] = "llama"
    path.write_text(json.dumps(data))
    message = one_line_error(model_dir, "unsupported model_type 'llama'")
    assert str(path) in message


def test_truncated_safetensors(model_dir):
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = one_line_error(model_dir, "not a valid safetensors file")
    assert str(path) in message


def test_missing_tensor(model_dir):
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    state = load_file(path)
    del state["transformer.h.1.mlp.c_fc.weight"]
    save_file(state, path)
    message = one_line_error(model_dir, "missing tensor(s) h.1.mlp.c_fc.weight")
    assert str(path) in message


class Payload:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(model_dir, tmp_path):
    marker = tmp_path / "pwned"
    (model_dir / "model.safetensors").unlink()
    with open(model_dir / "pytorch_model.bin", "wb") as f:
        pickle.dump({"transformer.tokens_embed.weight": Payload(str(marker))}, f)
    message = one_line_error(model_dir, "refused to load")
    assert "pytorch_model.bin" in message
    assert "nsupported" in message  # what the unpickler blocked
    assert "weights_only" not in message  # never torch's advice to retry unsafely
    assert not marker.exists()


def test_legacy_bin_of_plain_tensors_loads(model_dir, tmp_path):
    """An honest pytorch_model.bin (tensors only) loads through weights_only=True."""
    from safetensors.torch import load_file

    state = load_file(model_dir / "model.safetensors")
    (model_dir / "model.safetensors").unlink()
    torch.save(state, model_dir / "pytorch_model.bin")
    model = load_pretrained(model_dir)
    assert model.config.vocab_size == 40


def test_cli_reports_bad_directory_in_one_line(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["info", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no config.json" in err


def test_cli_info_on_preset_and_directory(model_dir, capsys):
    assert main(["info", "gpt1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"]["total"] == 116_534_784
    assert report["config"]["n_layer"] == 12
    assert main(["info", str(model_dir), "--forward"]) == 0
    out = capsys.readouterr().out
    assert "logits (1, 8, 40)" in out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "gptkit", "info", "tiny"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "total" in result.stdout
