"""The OpenAI completions wire format: request validation and response objects.

Requests are validated by pydantic (unknown fields rejected); every validation failure is answered
with OpenAI's error body `{"error": {"message", "type", "param", "code"}}` so that clients raise their
usual `BadRequestError` with a readable message.

Validation is strict about JSON types, as OpenAI's API is: `"max_tokens": "5"`, `"stream": "yes"`,
`"n": true` or a prompt of booleans are refused, not coerced (a client's `"stream": "false"` would
otherwise silently switch the response to a stream). The one conversion kept is the lossless one JSON
clients rely on: an integer where a float is expected (`"temperature": 0`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_N = 16
MAX_LOGPROBS = 5
MAX_STOPS = 16
# torch.Generator.manual_seed accepts this range; a larger JSON integer must be a 400, not a 500.
SEED_RANGE = (-(2**63), 2**64 - 1)


def finite(default: float, **bounds: float) -> Any:
    """A float field that refuses NaN and the infinities (Python's JSON parser reads `NaN` and
    `Infinity`, and a NaN passes every `<`/`>` bound)."""
    return Field(default, allow_inf_nan=False, **bounds)


def check_unicode(value: Any, where: str = "") -> Any:
    """Refuse strings holding lone surrogates (JSON's "\ud800" decodes to one): they cannot be
    tokenized nor written back as UTF-8, so they must be a 400 naming the field, not a crash later."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"invalid Unicode{where}: a lone surrogate {value[e.start]!r} at character {e.start}") from None
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_unicode(item, f" in item {i}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_unicode(key, " in a key")
            check_unicode(item, f" in {key!r}" if isinstance(key, str) else "")
    return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """POST /v1/completions. Fields OpenAI defines but gptkit does not implement are accepted only at
    their neutral value (e.g. frequency_penalty 0), so a client that sends defaults still works."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]] = ""
    # 0 is allowed with `echo` (score the prompt, generate nothing); the upper bound is the server's
    # (create_app's max_tokens_limit), checked by the app, which knows it.
    max_tokens: int = Field(16, ge=0)
    temperature: float = finite(1.0, ge=0.0)
    top_p: float = finite(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = Field(None, max_length=MAX_STOPS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    echo: bool = False
    user: str | None = None
    best_of: int | None = None
    frequency_penalty: float = finite(0.0, ge=0.0, le=0.0)
    presence_penalty: float = finite(0.0, ge=0.0, le=0.0)
    # gptkit extensions
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float = finite(1.0, gt=0.0)

    @field_validator("prompt", "stop", "model", "user")
    @classmethod
    def valid_unicode(cls, value: Any) -> Any:
        return check_unicode(value)

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

    @field_validator("model", "input")
    @classmethod
    def valid_unicode(cls, value: Any) -> Any:
        return check_unicode(value)


class ApiError(Exception):
    """A request the server answers with an OpenAI error body and this HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self) -> dict[str, Any]:
        """OpenAI's error body for this error (a stream sends it as its last event)."""
        return error_body(self.message, type_=self.type, param=self.param, code=self.code)


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


def logprobs_object(tokens: list[str], token_logprobs: list[float | None], top: list[dict[str, float] | None] | None,
                    offset0: int, offsets: list[int] | None = None) -> dict[str, Any]:
    """OpenAI's legacy completions logprobs: parallel lists, with text offsets into the choice text
    (by default the tokens are consecutive from `offset0`; pass `offsets` where they are not)."""
    if offsets is None:
        offsets, at = [], offset0
        for t in tokens:
            offsets.append(at)
            at += len(t)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


def join_logprobs(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The prompt's logprobs object followed by the completion's (echo)."""
    return {key: (first[key] or []) + (second[key] or []) if first[key] is not None or second[key] is not None
            else None for key in first}
