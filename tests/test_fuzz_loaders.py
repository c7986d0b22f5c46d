"""Property tests (issue 17 item 13): the corpus reader and config loading, fed anything, either
succeed or fail with gptkit's own error (GptkitError; ConfigError from model/, which imports only
torch) naming the file. Bounded: a few seconds in all."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gptkit.data import write_shard
from gptkit.data.corpus import load_corpus
from gptkit.errors import GptkitError
from gptkit.interop.hf import config_to_hf, load_pretrained, read_config
from gptkit.model import GPT, ConfigError, GPTConfig, preset

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Texts no generator reaches by chance but a fuzzer did: huge integers, deep nesting, bad bytes.
NASTY = [b"1" * 5000, b"[" * 3000 + b"]" * 3000, b'{"a": ' * 3000 + b"1" + b"}" * 3000, b"\xff\xfe{\x00}\x00",
         b"\x80\x81", b'{"vocab_size": 1e999}', b"", b"null", b'"\\ud800"']


def _valid_meta(directory):
    write_shard(directory / "train_00000.bin", np.arange(50) % 20, 20)
    return {"format": "gptkit-corpus", "version": 1, "tokenizer": "tokenizer", "vocab_size": 20, "eot_id": 0,
            "splits": {"train": {"shards": ["train_00000.bin"], "tokens": 50, "documents": 1}}}


def _open_corpus(directory):
    corpus = load_corpus(directory)
    for name in corpus.splits:
        corpus.split(name)
        corpus.num_tokens(name)
    return corpus.vocab_size, corpus.eot_id, corpus.tokenizer_path


@FAST
@given(key=st.sampled_from(["format", "tokenizer", "vocab_size", "eot_id", "splits", "splits.train",
                            "splits.train.shards", "splits.train.tokens", "splits.train.shards.0"]),
       value=json_values)
@example(key="splits", value=None)
@example(key="splits.train.shards", value=None)
@example(key="splits.train.shards.0", value="../../etc/passwd")
@example(key="vocab_size", value=True)
def test_corpus_meta_with_any_field_value(tmp_path, key, value):
    meta = _valid_meta(tmp_path)
    *path, last = key.split(".")
    node = meta
    for part in path:
        node = node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    (tmp_path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    try:
        _open_corpus(tmp_path)
    except GptkitError as e:
        assert "\n" not in str(e)


@FAST
@given(blob=st.binary(max_size=64) | st.sampled_from(NASTY))
def test_corpus_meta_with_any_bytes(tmp_path, blob):
    _valid_meta(tmp_path)
    (tmp_path / "meta.json").write_bytes(blob)
    with pytest.raises(GptkitError, match="meta.json"):
        _open_corpus(tmp_path)


def test_utf16_meta_is_named_as_such(tmp_path):
    (tmp_path / "meta.json").write_bytes('{"format": 1}'.encode("utf-16"))
    with pytest.raises(GptkitError, match="looks like UTF-16"):
        load_corpus(tmp_path)


FIELDS = [f for f in GPTConfig.__dataclass_fields__]


@FAST
@given(data=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5))
@example(data={"layer_norm_epsilon": "1e-5"})
@example(data={"initializer_range": None})
@example(data={"n_layer": True})
@example(data={"activation": []})
def test_gpt_config_file_with_any_values(tmp_path, data):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    try:
        GPTConfig.from_json_file(path)
    except ConfigError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)


@FAST
@given(blob=st.binary(max_size=64) | st.sampled_from(NASTY))
def test_gpt_config_file_with_any_bytes(tmp_path, blob):
    path = tmp_path / "cfg.json"
    path.write_bytes(blob)
    try:
        GPTConfig.from_json_file(path)
    except ConfigError as e:
        assert str(e).startswith(str(path))


HF_KEYS = ["model_type", "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "afn",
           "activation_function", "layer_norm_epsilon", "initializer_range", "resid_pdrop", "gptkit",
           "scale_attn_weights", "tie_word_embeddings"]


@FAST
@given(changes=st.dictionaries(st.sampled_from(HF_KEYS), json_values, max_size=4),
       model_type=st.sampled_from(["openai-gpt", "gpt2"]))
@example(changes={"activation_function": []}, model_type="gpt2")
@example(changes={"layer_norm_epsilon": "x"}, model_type="gpt2")
@example(changes={"gptkit": [1]}, model_type="openai-gpt")
def test_hf_config_with_any_values(tmp_path, changes, model_type):
    base = config_to_hf(preset("tiny", block_order="pre_ln" if model_type == "gpt2" else "post_ln"))
    (tmp_path / "config.json").write_text(json.dumps({**base, **changes}), encoding="utf-8")
    try:
        read_config(tmp_path)
    except GptkitError as e:
        assert "config.json" in str(e) and "\n" not in str(e)


@FAST
@given(blob=st.binary(max_size=64) | st.sampled_from(NASTY))
def test_hf_config_with_any_bytes(tmp_path, blob):
    (tmp_path / "config.json").write_bytes(blob)
    with pytest.raises(GptkitError, match="config.json"):
        read_config(tmp_path)


# --- weights a model directory must not load silently (issue 17 items 2 and 3) -------------------


def _gpt2_dir(tmp_path):
    import torch

    torch.manual_seed(0)
    model = GPT(preset("tiny", block_order="pre_ln", vocab_size=50, n_ctx=16))
    model.save_pretrained(tmp_path)
    return model


def test_untied_lm_head_is_refused_not_dropped(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    _gpt2_dir(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    # the same as tied: loads
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    load_pretrained(tmp_path)
    # its own head: refused (gptkit's head is the embedding; dropping it changes every logit)
    state["lm_head.weight"] = torch.randn_like(state["lm_head.weight"])
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(GptkitError, match="tie_word_embeddings false and lm_head.weight differs"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, bad, capsys):
    from safetensors.torch import load_file, save_file

    from gptkit.cli import main
    from gptkit.tokenizer import train_from_texts

    _gpt2_dir(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["transformer.h.1.mlp.c_fc.weight"][3, 4] = bad
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(GptkitError, match=r"h\.1\.mlp\.c_fc\.weight .* non-finite"):
        load_pretrained(tmp_path)
    train_from_texts(["a b c d e f g"] * 3, vocab_size=50, min_frequency=1).save(tmp_path)
    assert main(["generate", str(tmp_path), "a b", "--max-new-tokens", "3", "--device", "cpu"]) == 2  # was 0, silent
    assert "non-finite" in capsys.readouterr().err
