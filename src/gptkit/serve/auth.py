"""An optional API key: every /v1 request must carry `Authorization: Bearer KEY`, the header the
openai client sends from its `api_key`. /health stays open for probes and load balancers."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .protocol import error_body


def require_api_key(app: FastAPI, api_key: str) -> None:
    expected = f"Bearer {api_key}".encode()

    @app.middleware("http")
    async def _check_key(request: Request, call_next):
        if request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):  # constant time: no timing oracle on the key
                message = ("Incorrect API key provided." if given else
                           "Missing API key: send it as 'Authorization: Bearer KEY'.")
                return JSONResponse(error_body(message, code="invalid_api_key"), 401)
        return await call_next(request)
