"""A bound on request bodies: a larger one is answered 413 in OpenAI's error shape before it is parsed.

Without it a client could send a body of any size, which the server would read, parse and tokenize
in full before checking anything. The bound applies to the bytes as they arrive: a declared
Content-Length over the limit is refused without reading the body, and a chunked body as soon as its
running total passes the limit.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .protocol import error_body

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
"""8 MiB: far above what a request that fits the model needs (128 prompts of GPT-1's 512 tokens are
about half a MiB of JSON, as token ids or as English text), and a bound on what one request can make
the server read and parse."""

TOO_LARGE_CODE = "request_too_large"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes the limit (the app answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this server's limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware refusing HTTP request bodies over `limit` bytes."""

    def __init__(self, app: Any, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {limit}")
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received, started = 0, False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            # The app's handler for HTTP exceptions normally answers it; this is for a framework
            # version that lets it through instead.
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        body = error_body(BodyTooLarge(self.limit).detail, code=TOO_LARGE_CODE)
        await JSONResponse(body, 413)(scope, receive, send)
