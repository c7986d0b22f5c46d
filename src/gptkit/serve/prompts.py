"""A request's prompts as the model and the response see them: ids, the text `echo` shows, and where
each token's text starts in it (OpenAI's `text_offset`); and alternatives as `{text: logprob}`."""

from __future__ import annotations

import json
from typing import Any

from ..errors import GptkitError
from ..generation.bundle import ModelBundle
from ..generation.text import token_pieces
from .protocol import ApiError, CompletionRequest

MAX_ROWS = 128  # prompts x n in one request
PREFIX_CHARS_PER_TOKEN = 32
"""A text prompt longer than n_ctx x this many characters has a prefix of about that length
tokenized first (see PromptReader.tokens_at_least): ordinary text has 2 to 6 characters a token."""
CUT_AT = " \t\n"

# The tokenizer pipelines for which a prefix's tokens are the first tokens of the whole text when it is
# cut before whitespace (see tokens_at_least): their normalisers work character by character (NFKC and
# NFD never join anything to a following space), and their pre-tokenizers always split before a
# whitespace character that follows a non-space, and BPE never merges across such a split.
PREFIX_SAFE_STYLES = ("bytelevel", "gpt1", "openai-gpt")


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
        self.prefix_safe = prefix_safe(bundle.tokenizer)

    def items(self, req: CompletionRequest) -> list[Any]:
        """The request's prompts, untokenized, refused when there are none or too many rows."""
        p = req.prompt
        if isinstance(p, str):
            items: list[Any] = [p]
        elif p and all(isinstance(x, int) for x in p):
            items = [p]
        else:
            items = list(p)
        if not items:
            raise ApiError(400, "prompt: give at least one prompt", param="prompt")
        if len(items) * req.n > MAX_ROWS:
            raise ApiError(400, f"prompts x n is {len(items) * req.n}; at most {MAX_ROWS} per request", param="n")
        return items

    def read(self, items: list[Any], *, echo: bool) -> list[Prompt]:
        """Prompts of `items` (from `items()`); a prompt longer than n_ctx tokens is refused, without
        tokenizing all of a long text. Blocking work: the app runs it on a thread."""
        prompts = []
        for i, item in enumerate(items):
            try:
                prompts.append(self._read_one(i, item, echo))
            except GptkitError as e:  # from the bundle: a special token the model has no row for
                raise ApiError(400, f"prompt[{i}]: {e}", param="prompt") from None
        return prompts

    def _read_one(self, i: int, item: Any, echo: bool) -> Prompt:
        if isinstance(item, str):
            at_least = self.tokens_at_least(item)
            if at_least is not None and at_least > self.n_ctx:
                raise self.too_long(i, f"at least {at_least}")
            prompt = self.from_text(item, with_starts=echo)
        else:
            if len(item) > self.n_ctx:
                raise self.too_long(i, str(len(item)))
            if any(not 0 <= t < self.vocab for t in item):
                raise ApiError(400, f"prompt[{i}]: token ids must be in [0, {self.vocab})", param="prompt")
            prompt = self.from_ids(list(item) or self.bundle.encode_prompt(""))
        if len(prompt.ids) > self.n_ctx:
            raise self.too_long(i, str(len(prompt.ids)))
        return prompt

    def too_long(self, i: int, tokens: str) -> ApiError:
        return ApiError(400, f"This model's maximum context length is {self.n_ctx} tokens, however prompt {i} has "
                        f"{tokens} tokens. Please shorten the prompt.", param="prompt", code="context_length_exceeded")

    def tokens_at_least(self, text: str) -> int | None:
        """For a text longer than n_ctx x PREFIX_CHARS_PER_TOKEN characters, the number of tokens of a
        prefix of about that length, cut just before a whitespace character that follows a
        non-space: with a PREFIX_SAFE_STYLES tokenizer these are exactly the first tokens of the
        whole text, so the text has at least that many. None when the text is short, the tokenizer
        is another one, or no such cut exists near the start (the text is then tokenized whole)."""
        window = self.n_ctx * PREFIX_CHARS_PER_TOKEN
        if len(text) <= window or not self.prefix_safe:
            return None
        cut = next((k for k in range(window, 0, -1) if text[k] in CUT_AT and not text[k - 1].isspace()), None)
        if cut is None:
            return None
        return len(self.bundle.tokenizer.encode(text[:cut]))

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


def prefix_safe(tokenizer: Any) -> bool:
    """Whether `tokenizer` is a gptkit tokenizer whose pipeline is exactly its PREFIX_SAFE_STYLES
    style's (a tokenizer.json from elsewhere can share a style's decoder and differ in the rest), with
    special tokens that neither hold whitespace nor absorb the whitespace around them."""
    style, backend = getattr(tokenizer, "style", None), getattr(tokenizer, "backend", None)
    if style not in PREFIX_SAFE_STYLES or backend is None:
        return False
    from ..tokenizer.styles import empty_tokenizer

    have, want = json.loads(backend.to_str()), json.loads(empty_tokenizer(style).to_str())
    if any(have.get(part) != want.get(part) for part in ("normalizer", "pre_tokenizer")):
        return False
    return all(not any(c.isspace() for c in t["content"]) and not t.get("lstrip") and not t.get("rstrip")
               and not t.get("single_word") for t in have.get("added_tokens") or [])
