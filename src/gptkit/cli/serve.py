"""`gptkit serve MODEL_DIR`: an OpenAI-compatible HTTP server (needs the `serve` extra)."""

from __future__ import annotations

import argparse
import logging


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model directory over an OpenAI-compatible HTTP API",
        description="POST /v1/completions (OpenAI format, streaming with stream=true), GET /v1/models, "
        "POST /v1/classify (fine-tuned task models), GET /health.",
    )
    p.add_argument("model_dir", help="a model directory (or a fine-tuned task model directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond this get 503 (default 64)")
    p.add_argument("--max-batch", type=int, default=8, help="rows generated together (default 8)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import GptkitError

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise GptkitError("serving needs FastAPI and uvicorn: pip install 'gptkit[serve]'") from None
    from ..serve import load_app

    if args.max_queue < 1 or args.max_batch < 1:
        raise GptkitError("--max-queue and --max-batch must be >= 1")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "binding %s: the server has no authentication; anyone who can reach this address can use it", args.host
        )
    app = load_app(args.model_dir, max_queue=args.max_queue, max_batch=args.max_batch, device=args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
