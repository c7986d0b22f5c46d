"""A request's prompts as the model and the response see them: ids, the text `echo` shows, and where
each token's text starts in it (OpenAI's `text_offset`); and alternatives as `{text: logprob}`."""

from __future__ import annotations

from typing import Any

from ..generation.bundle import ModelBundle
from ..generation.text import token_pieces
from .protocol import ApiError, CompletionRequest

MAX_ROWS = 128  # prompts x n in one request


class Prompt:
    """One prompt of a request: its ids, the text echo shows, and (for echo) where each token's text
    starts in that text. A string prompt keeps the user's own text (the tokenizer's character offsets
    locate its tokens); a token-id prompt shows its decoded pieces."""

    def __init__(self, ids: list[int], text: str, starts: list[int] | None = None) -> None:
        self.ids, self.text, self.starts = ids, text, starts

    def pieces(self) -> list[str]:
        """Each token's share of `text`: from its start to the next token's start."""
        assert self.starts is not None
        ends = [*self.starts[1:], len(self.text)]
        return [self.text[a : max(a, b)] for a, b in zip(self.starts, ends)]


class PromptReader:
    """Turns a request's `prompt` field (a string or token-id list, or a list of either) into
    Prompts, refusing what the model cannot take."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.n_ctx = bundle.model.config.n_ctx
        self.vocab = bundle.model.config.vocab_size

    def read(self, req: CompletionRequest) -> list[Prompt]:
        p = req.prompt
        if isinstance(p, str):
            items: list[Any] = [p]
        elif p and all(isinstance(x, int) for x in p):
            items = [p]
        else:
            items = list(p)
        if not items:
            raise ApiError(400, "prompt: give at least one prompt", param="prompt")
        prompts = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                prompt = self.from_text(item, with_starts=req.echo)
            else:
                if any(not 0 <= t < self.vocab for t in item):
                    raise ApiError(400, f"prompt[{i}]: token ids must be in [0, {self.vocab})", param="prompt")
                prompt = self.from_ids(list(item) or [self.bundle.tokenizer.eot_id])
            if len(prompt.ids) > self.n_ctx:
                raise ApiError(
                    400,
                    f"This model's maximum context length is {self.n_ctx} tokens, however prompt {i} has "
                    f"{len(prompt.ids)} tokens. Please shorten the prompt.",
                    param="prompt", code="context_length_exceeded",
                )
            prompts.append(prompt)
        if len(prompts) * req.n > MAX_ROWS:
            raise ApiError(400, f"prompts x n is {len(prompts) * req.n}; at most {MAX_ROWS} per request", param="n")
        return prompts

    def from_ids(self, ids: list[int]) -> Prompt:
        pieces = token_pieces(self.bundle.decode, ids)
        starts = [sum(len(x) for x in pieces[:i]) for i in range(len(pieces))]
        return Prompt(ids, "".join(pieces), starts)

    def from_text(self, text: str, *, with_starts: bool) -> Prompt:
        ids = self.bundle.encode_prompt(text)
        if not with_starts:
            return Prompt(ids, text)
        if not text:  # the end-of-text token stands in for an empty prompt and shows nothing
            return Prompt(ids, "", [0])
        located = getattr(self.bundle.tokenizer, "encode_with_starts", None)
        if located is not None:
            same, starts = located(text)
            if same == ids:
                return Prompt(ids, text, starts)
        return self.from_ids(ids)  # a tokenizer without character offsets: show its decoded pieces

    def tops_as_dicts(self, tops: list[tuple[tuple[int, float], ...] | None]) -> list[dict[str, float] | None]:
        """Alternatives as OpenAI's `{token text: logprob}`. Distinct ids can decode to one string
        (byte pieces of one character, specials that show nothing): the likeliest is kept, so that
        "the chosen token is the top one" stays checkable from the dict (lm-eval's is_greedy)."""
        out: list[dict[str, float] | None] = []
        for top in tops:
            if top is None:
                out.append(None)
                continue
            d: dict[str, float] = {}
            for t, lp in sorted(top, key=lambda pair: -pair[1]):
                d.setdefault(self.bundle.decode([t]), lp)
            out.append(d)
        return out
