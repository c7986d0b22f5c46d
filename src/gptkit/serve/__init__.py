"""An OpenAI-compatible HTTP server for gptkit model directories (FastAPI + uvicorn, optional extra
`serve`). One worker thread owns the model; concurrent requests are queued and batched."""

from .app import create_app, load_app

__all__ = ["create_app", "load_app"]
