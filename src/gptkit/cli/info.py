"""`gptkit info MODEL_DIR_OR_PRESET`: parameter count by part, FLOPs per token, config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="parameter count by part, FLOPs per token, and config of a model")
    p.add_argument("model", help="a model directory (HF openai-gpt/gpt2 or gptkit) or a preset name (gpt1, small, tiny, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--forward", action="store_true", help="also run one forward pass on random ids and time it")
    p.set_defaults(func=run)


def load_model_or_preset(spec: str):
    """A preset name builds a fresh model; anything else is read as a model directory."""
    from ..errors import GptkitError
    from ..interop.hf import load_pretrained
    from ..model import GPT, PRESETS

    if spec in PRESETS:
        return GPT.from_preset(spec)
    if not Path(spec).exists():
        raise GptkitError(f"{spec}: neither a model directory nor a preset ({', '.join(sorted(PRESETS))})")
    return load_pretrained(spec)


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..model import parameter_breakdown, training_flops_per_token

    model = load_model_or_preset(args.model).eval()
    config = model.config
    parts = parameter_breakdown(model)
    flops = training_flops_per_token(config, model.num_parameters())
    report = {"config": config.to_dict(), "parameters": parts, "training_flops_per_token": flops,
              "forward_flops_per_token": flops // 3}
    if args.forward:
        ids = torch.randint(0, config.vocab_size, (1, min(64, config.n_ctx)))
        with torch.no_grad():
            start = time.perf_counter()
            logits = model(ids)
            report["forward"] = {"input_shape": list(ids.shape), "logits_shape": list(logits.shape),
                                 "seconds": round(time.perf_counter() - start, 4)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model: {args.model}")
    print("config:")
    for key, value in config.to_dict().items():
        print(f"  {key:<20} {value}")
    print("parameters:")
    for part, n in parts.items():
        print(f"  {part:<20} {n:>14,}")
    print("  (the LM head is tied to the token embedding and adds no parameters)")
    print(f"training FLOPs/token  {flops:,}  (6 x params without positions + 12 x n_layer x n_embd x n_ctx)")
    if "forward" in report:
        f = report["forward"]
        print(f"forward: ids {tuple(f['input_shape'])} -> logits {tuple(f['logits_shape'])} in {f['seconds']} s")
    return 0
