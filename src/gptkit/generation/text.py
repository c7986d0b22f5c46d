"""The text side of generation, kept apart from the engine: it only ever sees a `decode(ids) -> str`.

Incremental detokenisation: a token is not always a whole character (a byte-level BPE token can end
inside a UTF-8 sequence, which decodes to U+FFFD), and stop strings can span tokens. So each step we
decode the row's open tail of ids (the text before it is final: `TextStream`), emit only the new
suffix, and hold back (a) a trailing replacement
character, which the next token may complete, and (b) any tail that could still grow into a stop
string, which must never reach the reader.

Context: whether a completion starts with a space can depend on the prompt (a GPT-1 BPE token ends a
word with `</w>`, so the space after the prompt's last word only appears once a next word follows).
So the completion is decoded after the last few prompt tokens, and the text is what that adds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[list[int]], str]
REPLACEMENT = "\ufffd"


class StopStrings:
    """Finds the first stop string in a text, and how much of a text is safe to show."""

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]

    def find(self, text: str) -> int | None:
        """Index where the earliest stop string begins, or None."""
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def safe_length(self, text: str) -> int:
        """Length of the prefix that cannot become part of a stop string whatever comes next."""
        held = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), held, -1):
                if text.endswith(s[:k]):
                    held = k
                    break
        return len(text) - held


class TextStream:
    """One generated row as text: `push(token)` returns the newly safe text and whether a stop
    string was hit (the text then ends just before it); `finish()` returns what was held back.

    Constant work per token: ids whose text can no longer change are committed (their text kept, never
    decoded again), and each step decodes only the uncommitted tail after a few context ids and
    searches for stop strings only where a new one can end. A tail is committed once it is
    `COMMIT_TOKENS` long, keeping its last `TAIL_TOKENS` open, and only when decoding its two parts
    apart gives the same text as decoding them together (so a decoder's spacing or a character split
    across tokens at the seam cannot differ from decoding the whole row)."""

    CONTEXT_TOKENS = 4
    TAIL_TOKENS = 16
    COMMIT_TOKENS = 64

    def __init__(self, decode: Decode, stops: Sequence[str] = (), context: Sequence[int] = ()) -> None:
        self.stops = StopStrings(stops)
        self._context = list(context)[-self.CONTEXT_TOKENS :]
        self._context_text = decode(self._context) if self._context else ""
        self._decode = decode
        self.ids: list[int] = []
        self.stopped = False
        self.n_tokens_at_stop: int | None = None
        self._start = 0  # ids[:_start] are committed
        self._committed: list[str] = []  # their text, in chunks
        self._committed_len = 0
        self._committed_end = ""  # the committed text's last characters, for a stop string across the seam
        self._tail = ""  # the text of ids[_start:]
        self._emitted: list[str] = []
        self._emitted_len = 0
        self._stop_at: int | None = None  # where the text ends once a stop string was hit
        self._keep_end = max((len(s) for s in self.stops.stops), default=1) - 1

    def decode(self, ids: list[int]) -> str:
        """The text `ids` add after the prompt context."""
        return self._decode_after(self._context, ids)

    def _decode_after(self, context: list[int], ids: list[int]) -> str:
        if not context:
            return self._decode(ids)
        context_text = self._context_text if context is self._context else self._decode(context)
        full = self._decode(context + ids)
        if full.startswith(context_text):
            return full[len(context_text) :]
        return self._decode(ids)

    def _context_before(self, i: int) -> list[int]:
        """The ids decoded before ids[i:] so that its first token is spaced as in the whole row."""
        if i == 0:
            return self._context
        return (self._context + self.ids[max(0, i - self.CONTEXT_TOKENS) : i])[-self.CONTEXT_TOKENS :]

    @property
    def emitted(self) -> str:
        """The text shown so far."""
        return "".join(self._emitted)

    def _full(self) -> str:
        return "".join(self._committed) + self._tail

    def _window(self) -> tuple[str, int]:
        """The end of the text, from far enough back to hold any stop string that reaches the
        uncommitted tail, and the window's offset in the whole text."""
        return self._committed_end + self._tail, self._committed_len - len(self._committed_end)

    def _maybe_commit(self) -> None:
        open_ = len(self.ids) - self._start
        if open_ < self.COMMIT_TOKENS or open_ % self.TAIL_TOKENS:
            return
        split = len(self.ids) - self.TAIL_TOKENS
        head = self._decode_after(self._context_before(self._start), self.ids[self._start : split])
        rest = self._decode_after(self._context_before(split), self.ids[split:])
        if head + rest != self._tail or head.endswith(REPLACEMENT):
            return  # not additive at this seam yet: try again TAIL_TOKENS later
        self._committed.append(head)
        self._committed_len += len(head)
        self._committed_end = (self._committed_end + head)[-self._keep_end :] if self._keep_end else ""
        self._start, self._tail = split, rest

    def _advance(self, end: int) -> str:
        # Decoders can re-space earlier text when a word completes; we cannot take back what was
        # shown, so only ever emit what extends the shown text.
        if end <= self._emitted_len:
            return ""
        window, offset = self._window()
        if self._emitted_len >= offset:
            delta = window[self._emitted_len - offset : end - offset]
        else:  # held back further than the window reaches (a very long stop string): rare, whole text
            delta = self._full()[self._emitted_len : end]
        self._emitted.append(delta)
        self._emitted_len = end
        return delta

    def push(self, token: int) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.ids.append(token)
        self._tail = self._decode_after(self._context_before(self._start), self.ids[self._start :])
        window, offset = self._window()
        cut = self.stops.find(window)
        if cut is not None:
            self.stopped = True
            self.n_tokens_at_stop = len(self.ids)
            self._stop_at = offset + cut
            return self._advance(self._stop_at), True
        safe = self.stops.safe_length(window)
        while safe > 0 and window[safe - 1] == REPLACEMENT:
            safe -= 1
        delta = self._advance(offset + safe)
        self._maybe_commit()  # after the search: committing leaves the text as it is
        return delta, False

    @property
    def holds_back(self) -> bool:
        """Whether text decoded so far is not shown yet (a character still unfinished, or what could
        begin a stop string): `finish()` would return it."""
        end = self._committed_len + len(self._tail) if self._stop_at is None else self._stop_at
        return end > self._emitted_len

    @property
    def text(self) -> str:
        """The full text so far (cut before a stop string if one was hit)."""
        full = self._full()
        return full if self._stop_at is None else full[: self._stop_at]

    def finish(self) -> str:
        """Everything not yet emitted (held-back tail), once the row is over."""
        end = self._committed_len + len(self._tail) if self._stop_at is None else self._stop_at
        return self._advance(end)


def token_pieces(decode: Decode, ids: list[int], context: Sequence[int] = ()) -> list[str]:
    """The text each token adds, in order, so that the pieces join to the completion's text (used for
    the per-token `tokens` of OpenAI log-probabilities). A token that ends inside a character adds ""
    and the token completing it adds the whole character."""
    stream = TextStream(decode, context=context)
    pieces = [stream.push(token)[0] for token in ids]
    if pieces:
        pieces[-1] += stream.finish()
    return pieces
