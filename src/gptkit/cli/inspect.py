"""`gptkit inspect attention|mask|trace|next`: look inside a model (see docs/inspect.md)."""

from __future__ import annotations

import argparse
import json
import logging


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="attention maps, the causal mask, a traced forward pass, next-token odds")
    sub = p.add_subparsers(dest="inspect_command", metavar="WHAT", required=True)

    a = sub.add_parser("attention", help="attention probabilities as text, a heatmap PNG and/or an HTML page")
    _model_args(a)
    a.add_argument("--layer", type=int, default=0, help="block index (negative counts from the end; default 0)")
    which = a.add_mutually_exclusive_group()
    which.add_argument("--head", type=int, default=None, help="one head (default 0)")
    which.add_argument("--all-heads", action="store_true", help="a grid with every head of the layer")
    which.add_argument("--mean", action="store_true", help="the mean over the layer's heads")
    a.add_argument("--out", metavar="FILE.png", help="write a heatmap PNG")
    a.add_argument("--html", metavar="FILE.html", help="write one self-contained page with every layer and head")
    a.set_defaults(func=run_attention)

    m = sub.add_parser("mask", help="the causal mask (and a left-padded row's mask) as text and a PNG")
    m.add_argument("--n", type=int, default=8, help="sequence length (default 8)")
    m.add_argument("--pad", type=int, default=None, help="also show a batch row with this many left-padding tokens")
    m.add_argument("--out", metavar="FILE.png", help="write the picture")
    m.set_defaults(func=run_mask)

    t = sub.add_parser("trace", help="every step of one forward pass with shapes and statistics")
    _model_args(t)
    t.add_argument("--layers", metavar="SPEC", help="blocks to expand, e.g. '0' or '0,5-7' (default all)")
    t.add_argument("--top-k", type=int, default=5, help="next tokens to list (default 5)")
    t.add_argument("--json", action="store_true", help="print JSON for tools instead of a table")
    t.set_defaults(func=run_trace)

    n = sub.add_parser("next", help="the top-k next-token distribution as text and a bar chart PNG")
    _model_args(n)
    n.add_argument("--top-k", type=int, default=10, help="how many tokens (default 10)")
    n.add_argument("--out", metavar="FILE.png", help="write a bar chart")
    n.add_argument("--json", action="store_true", help="print JSON instead of a table")
    n.set_defaults(func=run_next)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model directory holding config.json, model.safetensors and the tokenizer")
    p.add_argument("text", help="the text to run through the model ('-' reads standard input)")
    p.add_argument("--tokenizer", metavar="PATH", help="read the tokenizer from here instead of the model directory")


def _open(args: argparse.Namespace):
    from gptkit.inspect.labels import display_tokens
    from gptkit.inspect.loading import encode_prompt
    from gptkit.interop.loading import load_model_and_tokenizer
    from gptkit.tokenizer.inputs import argument_text, read_stdin_text

    text = read_stdin_text() if args.text == "-" else argument_text(args.text, "the TEXT argument")
    model, tok = load_model_and_tokenizer(args.model, args.tokenizer)
    ids = encode_prompt(tok, text, model.config)
    return model, tok, ids, display_tokens(ids[0].tolist(), tok.id_to_token)


def _check_positive(name: str, value: int) -> None:
    from gptkit.errors import GptkitError

    if value < 1:
        raise GptkitError(f"{name} must be at least 1, got {value}")


# --- attention ----------------------------------------------------------------------------------


def run_attention(args: argparse.Namespace) -> int:
    from gptkit.errors import GptkitError
    from gptkit.inspect.attention import attention_maps

    model, _tok, ids, tokens = _open(args)
    cfg = model.config
    if not -cfg.n_layer <= args.layer < cfg.n_layer:
        raise GptkitError(f"--layer {args.layer}: the model has {cfg.n_layer} layers (0..{cfg.n_layer - 1})")
    layer = args.layer % cfg.n_layer
    head = 0 if args.head is None else args.head
    if not args.all_heads and not args.mean and not 0 <= head < cfg.n_head:
        raise GptkitError(f"--head {head}: the model has {cfg.n_head} heads per layer (0..{cfg.n_head - 1})")
    maps = attention_maps(model, ids).numpy()  # (L, nh, T, T)
    if args.all_heads:
        selected, titles = maps[layer], [f"layer {layer} head {h}" for h in range(cfg.n_head)]
    elif args.mean:
        selected, titles = maps[layer].mean(axis=0, keepdims=True), [f"layer {layer}, mean of {cfg.n_head} heads"]
    else:
        selected, titles = maps[layer, head : head + 1], [f"layer {layer} head {head}"]

    for title, probs in zip(titles, selected):
        print(format_attention(title, probs, tokens))
    if args.out:
        from gptkit.inspect.plots import plot_attention

        plot_attention(selected, tokens, args.out, titles=titles, suptitle=f"attention of {args.model}")
        print(f"wrote {args.out}")
    if args.html:
        from gptkit.inspect.output import write_output
        from gptkit.inspect.page import attention_page

        head_choice = "mean" if args.mean or args.all_heads else head
        page = attention_page(maps, tokens, title=f"attention of {args.model}", layer=layer, head=head_choice)
        data = page.encode("utf-8")
        if len(data) > 20_000_000:
            logging.getLogger(__name__).warning(
                "%s is %.0f MB (%d layers x %d heads x %d tokens squared): a browser may be slow to open it; "
                "a shorter text keeps it small", args.html, len(data) / 1e6, cfg.n_layer, cfg.n_head, len(tokens))
        write_output(args.html, data)
        print(f"wrote {args.html}")
    return 0


def format_attention(title: str, probs, tokens: list[str], top: int = 3) -> str:
    """Short inputs as a matrix (rows = queries, '.' = masked future); each query's top keys always."""
    T = len(tokens)
    lines = [f"{title}: row = query, column = key, '.' = masked (future)"]
    if T <= 16:
        width = max(6, *(len(t) for t in tokens))
        lines.append(" " * (width + 1) + " ".join(f"{t[:5]:>5}" for t in tokens))
        for i, t in enumerate(tokens):
            cells = " ".join(f"{probs[i, j]:5.2f}" if j <= i else f"{'.':>5}" for j in range(T))
            lines.append(f"{t:>{width}} {cells}")
    lines.append("strongest keys per query:")
    for i, t in enumerate(tokens):
        order = sorted(range(i + 1), key=lambda j: -probs[i, j])[:top]
        lines.append(f"  {i:>3} {t!r:<14} -> " + ", ".join(f"{tokens[j]!r} {probs[i, j]:.2f}" for j in order))
    return "\n".join(lines)


# --- mask ---------------------------------------------------------------------------------------


def run_mask(args: argparse.Namespace) -> int:
    from gptkit.errors import GptkitError
    from gptkit.inspect.attention import causal_mask, padded_mask

    _check_positive("--n", args.n)
    if args.n > 512:
        raise GptkitError(f"--n {args.n}: at most 512 positions can be drawn readably")
    panels = [("causal mask: query i sees keys j <= i", causal_mask(args.n).numpy(), [str(i) for i in range(args.n)])]
    if args.pad is not None:
        if not 0 <= args.pad < args.n:
            raise GptkitError(f"--pad {args.pad}: must be between 0 and n-1 = {args.n - 1}")
        labels = [f"pad{i}" if i < args.pad else str(i) for i in range(args.n)]
        panels.append(
            (f"with {args.pad} left-padding tokens: real tokens skip the padding", padded_mask(args.n, args.pad).numpy(), labels)
        )
    for title, allowed, labels in panels:
        print(title)
        print(format_mask(allowed, labels))
        print()
    print("1 = may attend (score kept); . = masked (score set to -inf, so its probability is exactly 0)")
    if args.pad:
        print("a padding query keeps only itself, so its softmax row is never empty (no NaN)")
    if args.out:
        from gptkit.inspect.plots import plot_masks

        plot_masks(panels, args.out)
        print(f"wrote {args.out}")
    return 0


def format_mask(allowed, labels: list[str]) -> str:
    width = max(len(s) for s in labels)
    col = max(2, width) + 1
    head = " " * (width + 1) + "".join(f"{s:>{col}}" for s in labels)
    rows = [head]
    for i, s in enumerate(labels):
        rows.append(f"{s:>{width}} " + "".join(f"{'1' if allowed[i, j] else '.':>{col}}" for j in range(len(labels))))
    return "\n".join(rows)


# --- trace --------------------------------------------------------------------------------------


def parse_layers(spec: str, n_layer: int) -> set[int]:
    """'0,2-4' -> {0, 2, 3, 4}; every index must exist in the model."""
    from gptkit.errors import GptkitError

    chosen: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                chosen.update(range(lo, hi + 1))
            else:
                chosen.add(int(part))
        except ValueError:
            raise GptkitError(f"--layers {spec!r}: expected indices and ranges like '0,2-4'") from None
    bad = sorted(i for i in chosen if not 0 <= i < n_layer)
    if bad or not chosen:
        raise GptkitError(f"--layers {spec!r}: the model has layers 0..{n_layer - 1}")
    return chosen


def run_trace(args: argparse.Namespace) -> int:
    from gptkit.inspect.trace import format_trace, trace_forward

    _check_positive("--top-k", args.top_k)
    model, tok, ids, _tokens = _open(args)
    layers = parse_layers(args.layers, model.config.n_layer) if args.layers else None
    trace = trace_forward(model, ids, layers=layers, top_k=args.top_k, id_to_token=tok.id_to_token)
    if args.json:
        print(json.dumps(trace.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_trace(trace))
    return 0


# --- next ---------------------------------------------------------------------------------------


def run_next(args: argparse.Namespace) -> int:
    from gptkit.inspect.labels import display_token
    from gptkit.inspect.next_token import next_token_distribution

    _check_positive("--top-k", args.top_k)
    model, tok, ids, tokens = _open(args)
    top = next_token_distribution(model, ids, args.top_k)
    labels = [display_token(tok.id_to_token(t.id)) for t in top]
    if args.json:
        rows = [{"rank": r, "id": t.id, "token": lab, "prob": t.prob} for r, (t, lab) in enumerate(zip(top, labels), 1)]
        print(json.dumps({"tokens": tokens, "next": rows}, indent=2, ensure_ascii=False))
    else:
        print(f"after {len(tokens)} tokens ending {' '.join(tokens[-5:])!r}, the next token is:")
        for rank, (t, lab) in enumerate(zip(top, labels), 1):
            bar = "#" * max(1, round(40 * t.prob)) if t.prob >= 0.0125 else ""
            print(f"  {rank:>3}. {lab!r:<18} id {t.id:<7} p={t.prob:.4f} {bar}")
        print(f"  (top {len(top)} cover {sum(t.prob for t in top):.1%} of the probability)")
    if args.out:
        from gptkit.inspect.plots import plot_next_tokens

        plot_next_tokens(labels, [t.prob for t in top], args.out, title=f"next token after: {' '.join(tokens[-8:])}")
        print(f"wrote {args.out}")
    return 0
