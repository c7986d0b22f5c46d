"""The text side of generation, kept apart from the engine: it only ever sees a `decode(ids) -> str`.

Incremental detokenisation: a token is not always a whole character (a byte-level BPE token can end
inside a UTF-8 sequence, which decodes to U+FFFD), and stop strings can span tokens. So each step we
decode the row's whole id list, emit only the new suffix, and hold back (a) a trailing replacement
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
    string was hit (the text then ends just before it); `finish()` returns what was held back."""

    CONTEXT_TOKENS = 4

    def __init__(self, decode: Decode, stops: Sequence[str] = (), context: Sequence[int] = ()) -> None:
        self.stops = StopStrings(stops)
        self._context = list(context)[-self.CONTEXT_TOKENS :]
        self._context_text = decode(self._context) if self._context else ""
        self._decode = decode
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False
        self.n_tokens_at_stop: int | None = None

    def decode(self, ids: list[int]) -> str:
        """The text `ids` add after the prompt context."""
        if not self._context:
            return self._decode(ids)
        full = self._decode(self._context + ids)
        if full.startswith(self._context_text):
            return full[len(self._context_text) :]
        return self._decode(ids)

    def _advance(self, visible: str) -> str:
        # Decoders can re-space earlier text when a word completes; we cannot take back what was
        # shown, so only ever emit what extends the shown text.
        delta = visible[len(self.emitted) :] if len(visible) > len(self.emitted) else ""
        if delta:
            self.emitted = visible
        return delta

    def push(self, token: int) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.ids.append(token)
        full = self.decode(self.ids)
        cut = self.stops.find(full)
        if cut is not None:
            self.stopped = True
            self.n_tokens_at_stop = len(self.ids)
            return self._advance(full[:cut]), True
        safe = self.stops.safe_length(full)
        while safe > 0 and full[safe - 1] == REPLACEMENT:
            safe -= 1
        return self._advance(full[:safe]), False

    @property
    def text(self) -> str:
        """The full text so far (cut before a stop string if one was hit)."""
        full = self.decode(self.ids)
        cut = self.stops.find(full)
        return full if cut is None else full[:cut]

    def finish(self) -> str:
        """Everything not yet emitted (held-back tail), once the row is over."""
        return self._advance(self.text)


def token_pieces(decode: Decode, ids: list[int], context: Sequence[int] = ()) -> list[str]:
    """The text each token adds, in order, so that the pieces join to the completion's text (used for
    the per-token `tokens` of OpenAI log-probabilities). A token that ends inside a character adds ""
    and the token completing it adds the whole character."""
    stream = TextStream(decode, context=context)
    pieces, shown = [], ""
    for i in range(1, len(ids) + 1):
        text = stream.decode(ids[:i])
        if i < len(ids):
            text = text.rstrip(REPLACEMENT)
        pieces.append(text[len(shown) :] if len(text) > len(shown) else "")
        shown = text if len(text) > len(shown) else shown
    return pieces
