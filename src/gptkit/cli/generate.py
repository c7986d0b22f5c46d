"""`gptkit generate MODEL_DIR [PROMPT]`: continue a prompt, streaming text to stdout as it is made."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="continue a prompt with a model directory, streaming text as it is produced",
        description="Continue PROMPT (or --file, or standard input) with the model in MODEL_DIR. "
        "Text is streamed to stdout token by token; --json prints ids, text and log-probabilities instead.",
    )
    # The top-level parser (gptkit.cli.build_parser) makes plain parsers: this one takes the class
    # that lets "MODEL_DIR --max-new-tokens 3 PROMPT" work (the class adds no state of its own).
    p.add_argument("model_dir", help="a model directory (config.json + model.safetensors + tokenizer)")
    p.add_argument("prompt", nargs="?", help="the prompt text (default: --file, else standard input)")
    p.add_argument("--file", type=Path, help="read the prompt from this file")
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate per sample (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 means greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text appears (not printed); repeatable")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples of the prompt (default 1)")
    p.add_argument("--logprobs", type=int, default=0, metavar="N",
                   help="with --json: also the N most likely alternatives of each token")
    p.add_argument("--json", action="store_true", help="print one JSON object (ids, text, log-probs) at the end")
    p.add_argument("--no-cache", action="store_true", help="re-run the whole context every step (slow; for checks)")
    p.add_argument("--window-stride", type=int, default=None,
                   help="past the context window, drop this many tokens and re-prefill (default n_ctx // 4)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="weights (and KV cache) for decoding: bf16 reads half the bytes per token, so it decodes "
                        "up to ~2x faster where memory bandwidth is the limit; results differ slightly (default fp32)")
    p.set_defaults(func=run)


FIELD_FLAGS = {"top_logprobs": "--logprobs"}
"""GenerationConfig fields whose flag is not the field's name with dashes."""


def config_error_in_flags(message: str) -> str:
    """A GenerationConfig error ("GenerationConfig.top_logprobs must be >= 0") in the flags the user
    typed ("--logprobs must be >= 0"); the rest of the message (n_ctx=64) is left as it is."""
    return re.sub(r"GenerationConfig\.(\w+)",
                  lambda m: FIELD_FLAGS.get(m.group(1), "--" + m.group(1).replace("_", "-")), message)


def read_prompt(args: argparse.Namespace) -> str:
    from ..errors import GptkitError
    from ..tokenizer.inputs import argument_text, read_stdin_text

    if args.prompt is not None and args.file is not None:
        raise GptkitError("give the prompt as an argument or with --file, not both")
    if args.prompt is not None:
        return argument_text(args.prompt, "the PROMPT argument")
    if args.file is not None:
        try:
            return args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise GptkitError(f"{args.file}: cannot read the prompt: {e}") from None
    if sys.stdin.isatty():
        raise GptkitError("no prompt: give PROMPT, --file F, or pipe text on standard input")
    return read_stdin_text()


def run(args: argparse.Namespace) -> int:
    from ..errors import GptkitError
    from ..generation import GenerationConfig, TextStream, stream_generate
    from ..generation.bundle import load_bundle
    from ..generation.engine import TokenEvent
    from ..tokenizer.inputs import argument_text

    prompt = read_prompt(args)
    stops = [argument_text(stop, f"--stop {i + 1}") if len(args.stop) > 1 else argument_text(stop, "--stop")
             for i, stop in enumerate(args.stop)]
    bundle = load_bundle(args.model_dir, device=args.device)
    if args.dtype == "bf16":
        import torch

        from ..training.precision import emulated_bf16_warning

        warning = emulated_bf16_warning(next(bundle.model.parameters()).device)
        if warning:
            log.warning("%s", warning)
        bundle.model.to(torch.bfloat16)
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop_ids=bundle.stop_ids,
        num_samples=args.num_samples,
        use_cache=not args.no_cache,
        window_stride=args.window_stride,
        top_logprobs=args.logprobs,
    )
    try:
        config.validate(bundle.model.config.n_ctx)
    except ValueError as e:
        raise GptkitError(config_error_in_flags(str(e))) from None

    prompt_ids = bundle.encode_prompt(prompt)
    streams = [TextStream(bundle.decode, stops, context=prompt_ids) for _ in range(args.num_samples)]
    samples = [{"ids": [], "logprobs": [], "top_logprobs": [], "finish_reason": None} for _ in streams]
    live = not args.json and args.num_samples == 1  # several samples print whole, as each finishes

    def hit_stop(row: int, _ids: list[int]) -> bool:
        return streams[row].stopped

    out = sys.stdout
    for event in stream_generate(bundle.model, [prompt_ids], config, should_stop=hit_stop):
        s, stream = samples[event.row], streams[event.row]
        if isinstance(event, TokenEvent):
            delta, _ = stream.push(event.token)
            s["ids"].append(event.token)
            s["logprobs"].append(event.logprob)
            s["top_logprobs"].append([[t, lp] for t, lp in event.top])
            if live and delta:
                out.write(delta)
                out.flush()
            continue
        s["finish_reason"] = event.reason
        tail = stream.finish()
        if live:
            out.write(tail + "\n")
        elif not args.json:
            out.write(f"=== sample {event.row + 1} ({event.reason}) ===\n{stream.text}\n")
        out.flush()

    if args.json:
        result = {
            "prompt": prompt,
            "prompt_ids": prompt_ids,
            "samples": [
                {
                    "text": stream.text,  # as it continues the prompt (it may start with a space)
                    "ids": s["ids"],
                    "tokens": [bundle.tokenizer.id_to_token(i) for i in s["ids"]],
                    "logprobs": s["logprobs"],
                    **({"top_logprobs": s["top_logprobs"]} if args.logprobs else {}),
                    "finish_reason": s["finish_reason"],
                }
                for s, stream in zip(samples, streams)
            ],
        }
        print(json.dumps(result, ensure_ascii=False))
    return 0
