"""`gptkit serve MODEL_DIR`: an OpenAI-compatible HTTP server (needs the `serve` extra)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket

API_KEY_ENV = "GPTKIT_API_KEY"
# After SIGTERM the server refuses new work and ends running generations at their next token; this
# bounds the wait for connections that still do not close.
GRACEFUL_SHUTDOWN_S = 3


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
    p.add_argument("--max-tokens-limit", type=int, default=None, metavar="N",
                   help="largest max_tokens a request may ask for (default: the model's context, n_ctx)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' on /v1 requests (default: ${API_KEY_ENV}, "
                   "which keeps the key out of the process list; unset: no key)")
    p.add_argument("--max-body-bytes", type=int, default=None, metavar="N",
                   help="larger request bodies get 413 before they are read (default 8 MiB)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import GptkitError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise GptkitError("serving needs FastAPI and uvicorn: pip install 'gptkit[serve]'") from None
    from ..serve import load_app

    if args.max_queue < 1 or args.max_batch < 1:
        raise GptkitError("--max-queue and --max-batch must be >= 1")
    if args.max_tokens_limit is not None and args.max_tokens_limit < 1:
        raise GptkitError(f"--max-tokens-limit must be >= 1, got {args.max_tokens_limit}")
    if args.max_body_bytes is not None and args.max_body_bytes < 1:
        raise GptkitError(f"--max-body-bytes must be >= 1, got {args.max_body_bytes}")
    if not 0 < args.port < 65536:
        raise GptkitError(f"--port must be in 1..65535, got {args.port}")
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and not api_key.strip():
        raise GptkitError("--api-key is empty")
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logging.getLogger(__name__).warning(
            "binding %s without --api-key (or $%s): anyone who can reach this address can use it",
            args.host, API_KEY_ENV,
        )
    # Bound here, before the model loads: a port in use is one line and status 2, at once (uvicorn
    # would load the model, log the error among its own lines and exit 3).
    with _listen(args.host, args.port) as listener:
        app = load_app(args.model_dir, max_queue=args.max_queue, max_batch=args.max_batch, device=args.device,
                       max_tokens_limit=args.max_tokens_limit, api_key=api_key,
                       **({} if args.max_body_bytes is None else {"max_body_bytes": args.max_body_bytes}))
        return _serve(app, args, listener)


def _serve(app, args: argparse.Namespace, listener: socket.socket) -> int:  # noqa: ANN001 (a FastAPI app)
    """Run uvicorn on `listener` until a signal; the exit status says which (0: a clean stop)."""
    import uvicorn

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)

    class Server(uvicorn.Server):
        """uvicorn's server, plus: the first stop signal also stops the model worker at once, so that a
        running generation (up to max_tokens long) does not hold the shutdown up."""

        def handle_exit(self, sig, frame) -> None:
            app.state.worker.stop()
            super().handle_exit(sig, frame)

    server = Server(config)
    received: list[int] = []
    # uvicorn re-raises the signal that stopped it once it is done, under the handler found here:
    # record it, so that the exit status says how the server ended (SIGINT raises KeyboardInterrupt
    # as usual, which the CLI turns into 130).
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    try:
        server.run(sockets=[listener])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 128 + signal.SIGTERM if received else 0


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6, as the name resolves), or a GptkitError."""
    from ..errors import GptkitError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise GptkitError(f"--host {host}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # as uvicorn does: a restarted server may rebind while the old connections sit in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise GptkitError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    return sock
