"""The OpenAI completions wire format: request validation and response objects.

Requests are validated by pydantic (unknown fields rejected); every validation failure is answered
with OpenAI's error body `{"error": {"message", "type", "param", "code"}}` so that clients raise their
usual `BadRequestError` with a readable message.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 16
MAX_LOGPROBS = 5


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """POST /v1/completions. Fields OpenAI defines but gptkit does not implement are accepted only at
    their neutral value (e.g. frequency_penalty 0), so a client that sends defaults still works."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]] = ""
    max_tokens: int = Field(16, gt=0)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    seed: int | None = None
    echo: bool = False
    user: str | None = None
    best_of: int | None = None
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0)
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0)
    # gptkit extensions
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float = Field(1.0, gt=0.0)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ClassifyRequest(BaseModel):
    """POST /v1/classify: `input` is one example or a list. A classification example is a string;
    pair tasks take an object with their two fields (e.g. {"premise", "hypothesis"}); multiple choice
    takes {"context", "question" (optional), "choices": [...]}."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    input: str | dict[str, Any] | list[str | dict[str, Any]]


def error_body(message: str, *, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def completion_object(cid: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None,
                      created: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        obj["usage"] = usage
    return obj


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def logprobs_object(tokens: list[str], token_logprobs: list[float], top: list[dict[str, float]] | None,
                    offset0: int) -> dict[str, Any]:
    """OpenAI's legacy completions logprobs: parallel lists, with text offsets into the choice text."""
    offsets, at = [], offset0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}
