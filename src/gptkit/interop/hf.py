"""Hugging Face interchange: the only module where HF names appear.

A model directory is `config.json` + `model.safetensors` in HF's `openai-gpt` layout (post-LN, GPT-1)
or `gpt2` layout (pre-LN + final LayerNorm). The mapping is data (a key map) plus pure functions on
state dicts. HF stores its four projections as "Conv1D" (in, out), the transpose of nn.Linear's
(out, in); `c_proj` is square, so only a logits comparison catches a missing transpose (SPEC 7).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_json
from ..errors import GptkitError
from ..jsonio import field, read_json
from ..model.config import ConfigError, GPTConfig
from ..model.gpt import GPT
from .weights import atomic_save_safetensors, load_safetensors, load_torch_bin

log = logging.getLogger(__name__)

# (gptkit key, openai-gpt key, gpt2 key, stored transposed in HF); {i} is the block index.
TOP_LEVEL_KEYS: list[tuple[str, str | None, str | None]] = [
    ("transformer.tok_emb.weight", "tokens_embed.weight", "wte.weight"),
    ("transformer.pos_emb.weight", "positions_embed.weight", "wpe.weight"),
    ("transformer.ln_f.weight", None, "ln_f.weight"),
    ("transformer.ln_f.bias", None, "ln_f.bias"),
]
BLOCK_KEYS: list[tuple[str, str, bool]] = [
    ("attn.qkv.weight", "attn.c_attn.weight", True),
    ("attn.qkv.bias", "attn.c_attn.bias", False),
    ("attn.proj.weight", "attn.c_proj.weight", True),
    ("attn.proj.bias", "attn.c_proj.bias", False),
    ("ln_attn.weight", "ln_1.weight", False),
    ("ln_attn.bias", "ln_1.bias", False),
    ("mlp.fc.weight", "mlp.c_fc.weight", True),
    ("mlp.fc.bias", "mlp.c_fc.bias", False),
    ("mlp.proj.weight", "mlp.c_proj.weight", True),
    ("mlp.proj.bias", "mlp.c_proj.bias", False),
    ("ln_mlp.weight", "ln_2.weight", False),
    ("ln_mlp.bias", "ln_2.bias", False),
]
# Not weights: causal-mask buffers of old checkpoints, and heads gptkit keeps elsewhere.
# HF's task heads (score, multiple_choice_head) are read by gptkit from head.safetensors, not from here.
IGNORED_HF_KEY = re.compile(r"^(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight|score\.weight|multiple_choice_head\..*)$")

MODEL_TYPES = ("openai-gpt", "gpt2")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hf_model_type(config: GPTConfig) -> str:
    return "gpt2" if config.block_order == "pre_ln" else "openai-gpt"


def key_map(config: GPTConfig, model_type: str) -> list[tuple[str, str, bool]]:
    """(gptkit key, HF key without the `transformer.` prefix, transposed) for every weight."""
    column = 1 if model_type == "openai-gpt" else 2
    rows = [(ours, theirs[column - 1], False) for ours, *theirs in TOP_LEVEL_KEYS if theirs[column - 1] is not None]
    for i in range(config.n_layer):
        rows += [(f"transformer.blocks.{i}.{ours}", f"h.{i}.{theirs}", t) for ours, theirs, t in BLOCK_KEYS]
    return rows


# --- config -------------------------------------------------------------------------------------


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json transformers reads as OpenAIGPTConfig or GPT2Config."""
    common = {
        "vocab_size": config.vocab_size,
        "n_positions": config.n_ctx,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "resid_pdrop": config.resid_pdrop,
        "embd_pdrop": config.embd_pdrop,
        "attn_pdrop": config.attn_pdrop,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_range": config.initializer_range,
        "tie_word_embeddings": True,
    }
    if config.extra:
        common["gptkit"] = config.extra
    if config.block_order == "post_ln":
        if config.inner_dim != 4 * config.n_embd:
            raise GptkitError(
                f"n_inner={config.n_inner} cannot be saved in the openai-gpt format (it fixes the MLP at 4 * n_embd)"
            )
        return {"model_type": "openai-gpt", "architectures": ["OpenAIGPTLMHeadModel"], "afn": config.activation, **common}
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_inner": config.n_inner,
        "activation_function": "gelu_new" if config.activation == "gelu" else "relu",
        **common,
    }


def config_from_hf(data: dict[str, Any], source: Path) -> GPTConfig:
    """Map an HF config.json (openai-gpt or gpt2) onto GPTConfig; refuse what gptkit cannot run."""
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise GptkitError(f"{source}: unsupported model_type {model_type!r}; gptkit reads {list(MODEL_TYPES)}")
    if model_type == "openai-gpt":
        afn = data.get("afn", "gelu")
        if not isinstance(afn, str) or afn not in ("gelu", "relu"):
            raise GptkitError(f"{source}: field 'afn' is {afn!r}; gptkit supports 'gelu' (tanh form) and 'relu'")
        activation, block_order, n_inner = afn, "post_ln", None
    else:
        fn = data.get("activation_function", "gelu_new")
        names = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}
        if not isinstance(fn, str) or fn not in names:
            raise GptkitError(
                f"{source}: field 'activation_function' is {fn!r}; gptkit supports {sorted(names)}"
            )
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
            if data.get(flag):
                raise GptkitError(f"{source}: field {flag!r} is set; gptkit does not implement it")
        if data.get("scale_attn_weights") is False:
            raise GptkitError(f"{source}: field 'scale_attn_weights' is false; gptkit always scales by 1/sqrt(hs)")
        activation, block_order, n_inner = names[fn], "pre_ln", data.get("n_inner")
    try:
        return GPTConfig(
            vocab_size=data["vocab_size"],
            n_ctx=data.get("n_positions", data.get("n_ctx")),
            n_embd=data["n_embd"],
            n_layer=data["n_layer"],
            n_head=data["n_head"],
            n_inner=n_inner,
            activation=activation,
            block_order=block_order,
            embd_pdrop=data.get("embd_pdrop", 0.1),
            attn_pdrop=data.get("attn_pdrop", 0.1),
            resid_pdrop=data.get("resid_pdrop", 0.1),
            layer_norm_epsilon=data.get("layer_norm_epsilon", 1e-5),
            initializer_range=data.get("initializer_range", 0.02),
            extra=data.get("gptkit", {}) or {},
        )
    except KeyError as e:
        raise GptkitError(f"{source}: missing field {e.args[0]!r}") from None
    except ConfigError as e:
        raise GptkitError(f"{source}: {e}") from None


# --- state dicts (pure functions) -----------------------------------------------------------------


def to_hf_state_dict(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """gptkit state dict -> HF head-model state dict (`transformer.` prefix, Conv1D layout)."""
    out = {}
    for ours, theirs, transposed in key_map(config, hf_model_type(config)):
        tensor = state[ours]
        out[f"transformer.{theirs}"] = tensor.t().contiguous() if transposed else tensor
    return out


def from_hf_state_dict(
    state: dict[str, torch.Tensor], config: GPTConfig, model_type: str, source: Path | str = "state dict"
) -> dict[str, torch.Tensor]:
    """HF state dict (with or without the `transformer.` prefix) -> gptkit state dict.

    Mask buffers and the tied `lm_head.weight` are dropped; a missing or unexpected tensor, or one of
    the wrong shape, is an error naming it."""
    plain = {}
    for key, tensor in state.items():
        key = key.removeprefix("transformer.")
        if IGNORED_HF_KEY.match(key):
            continue
        plain[key] = tensor
    out, missing = {}, []
    for ours, theirs, transposed in key_map(config, model_type):
        if theirs not in plain:
            missing.append(theirs)
            continue
        tensor = plain.pop(theirs)
        out[ours] = tensor.t().contiguous() if transposed else tensor
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise GptkitError(f"{source}: missing tensor(s) {shown}")
    if plain:
        log.warning("%s: ignoring %d tensor(s) gptkit does not use: %s", source, len(plain), ", ".join(sorted(plain)[:5]))
    return out


# --- directories ----------------------------------------------------------------------------------


def read_config(directory: Path) -> tuple[GPTConfig, str]:
    """A model directory's config.json as a GPTConfig, and its model_type."""
    data, path = _config_json(directory)
    return config_from_hf(data, path), data["model_type"]


def _config_json(directory: Path) -> tuple[dict[str, Any], Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise GptkitError(f"{directory}: no such model directory")
    path = directory / "config.json"
    if not path.is_file():
        raise GptkitError(f"{directory}: no config.json (not a model directory)")
    return read_json(path), path


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    for name in WEIGHT_FILES:
        path = Path(directory) / name
        if path.is_file():
            loader = load_safetensors if name.endswith(".safetensors") else load_torch_bin
            return loader(path), path
    index = Path(directory) / "model.safetensors.index.json"
    if index.is_file():
        weight_map = field(read_json(index), "weight_map", dict, index)
        if not all(isinstance(f, str) and f and "/" not in f and f not in (".", "..") for f in weight_map.values()):
            raise GptkitError(f"{index}: field 'weight_map' must map tensor names to file names in the directory")
        files = sorted(set(weight_map.values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_safetensors(Path(directory) / name))
        return state, index
    raise GptkitError(f"{directory}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def load_state(directory: str | Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """A model directory's config and its weights as a gptkit state dict, every tensor checked: its
    shape against the config, its dtype floating point, its values finite, the LM head tied (gptkit's
    only kind)."""
    directory = Path(directory)
    data, path = _config_json(directory)
    config, model_type = config_from_hf(data, path), data["model_type"]
    raw, source = read_weights(directory)
    _check_tied_head(data, raw, source)
    state = from_hf_state_dict(raw, config, model_type, source)
    for key, tensor in state.items():
        expected = _expected_shape(config, key)
        if tuple(tensor.shape) != expected:
            raise GptkitError(f"{source}: tensor for {key} has shape {tuple(tensor.shape)}, config implies {expected}")
        if not tensor.is_floating_point():
            # A header that says I32 over float bytes keeps the file's size: loaded, the integers
            # would be copied into the float weights as values (a resume then trains on garbage).
            raise GptkitError(f"{source}: tensor {_hf_name(config, model_type, key)} ({key}) has dtype "
                              f"{str(tensor.dtype).removeprefix('torch.')}; model weights are floating point")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise GptkitError(f"{source}: tensor {_hf_name(config, model_type, key)} ({key}) holds {bad} non-finite "
                              f"value(s) (NaN or inf); the weights are corrupt")
    return config, state


def load_pretrained(directory: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> GPT:
    """Build a GPT from an HF `openai-gpt` / `gpt2` directory (or one gptkit wrote)."""
    config, state = load_state(directory)
    with torch.device("meta"):
        model = GPT(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.to(device=device, dtype=dtype)
    return model.eval()


def load_weights_into(model: GPT, directory: str | Path) -> None:
    """Load a model directory's weights into an existing GPT of the same config (resume)."""
    config, state = load_state(directory)
    if config != model.config:  # (not comparing `extra`, free-form metadata)
        raise GptkitError(f"{directory}: its config.json describes another model than the one being trained")
    model.load_state_dict(state, strict=True)


def _check_tied_head(data: dict[str, Any], raw: dict[str, torch.Tensor], source: Path) -> None:
    """gptkit's LM head is the token embedding (SPEC: tied). A file that declares an untied head with
    its own `lm_head.weight` would silently lose it, so it is refused."""
    if data.get("tie_word_embeddings", True) is not False:
        return
    head = raw.get("lm_head.weight")
    emb = raw.get("transformer.wte.weight", raw.get("wte.weight", raw.get("transformer.tokens_embed.weight",
                                                                           raw.get("tokens_embed.weight"))))
    if head is None or (emb is not None and head.shape == emb.shape and torch.equal(head, emb)):
        return
    raise GptkitError(f"{source}: config.json sets tie_word_embeddings false and lm_head.weight differs from the "
                      f"token embedding; gptkit's LM head is tied to the embedding (GPT-1), so this model cannot be "
                      f"loaded without changing its output")


def _hf_name(config: GPTConfig, model_type: str, key: str) -> str:
    return next((theirs for ours, theirs, _ in key_map(config, model_type) if ours == key), key)


def save_pretrained(model: GPT, directory: str | Path, *, head: dict[str, torch.Tensor] | None = None,
                    head_config: dict[str, Any] | None = None) -> Path:
    """Write config.json and model.safetensors (atomically, each file) that transformers loads.

    `head` / `head_config`: a task head under transformers' names and its config keys
    (`interop.heads`), so the directory is also e.g. an OpenAIGPTForSequenceClassification."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {**to_hf_state_dict(model.state_dict(), model.config), **(head or {})}
    atomic_save_safetensors(state, directory / "model.safetensors", metadata={"format": "pt"})
    atomic_write_json(directory / "config.json", {**config_to_hf(model.config), **(head_config or {})})
    return directory


def _expected_shape(config: GPTConfig, key: str) -> tuple[int, ...]:
    C, F, V = config.n_embd, config.inner_dim, config.vocab_size
    shapes = {
        "transformer.tok_emb.weight": (V, C),
        "transformer.pos_emb.weight": (config.n_ctx, C),
        "attn.qkv.weight": (3 * C, C),
        "attn.qkv.bias": (3 * C,),
        "attn.proj.weight": (C, C),
        "mlp.fc.weight": (F, C),
        "mlp.fc.bias": (F,),
        "mlp.proj.weight": (C, F),
    }
    if key in shapes:
        return shapes[key]
    suffix = key.split(".", 3)[-1] if key.startswith("transformer.blocks.") else key
    return shapes.get(suffix, (C,))
