"""Text typed on a command line or piped to a command, checked before it reaches a tokenizer.

Python hands over argument bytes that are not UTF-8 as lone surrogates (U+DC80..U+DCFF,
"surrogateescape"), and so does sys.stdin under some locales; the `tokenizers` library refuses such a
str with "TypeError: TextInputSequence must be str". These functions refuse the bytes by byte offset
instead, as a file's are (gptkit.textio).
"""

from __future__ import annotations

import os
import re
import sys

from ..errors import GptkitError
from ..textio import decode_utf8

_SURROGATE = re.compile("[\ud800-\udfff]")


def argument_text(value: str, what: str) -> str:
    """A command-line argument as text; `what` names it in the error ("the PROMPT argument").
    Bytes that only the locale could not read (UTF-8 under an ASCII locale) are read as the UTF-8
    they are."""
    bad = _SURROGATE.search(value)
    if bad is None:
        return value
    try:
        data = os.fsencode(value)  # the argument's bytes as they were given
    except UnicodeEncodeError:  # a surrogate the escape did not make (a str passed in-process)
        raise GptkitError(f"{what}: an unpaired surrogate (U+{ord(bad.group()):04X}) at character {bad.start()} "
                          "is not text") from None
    return decode_utf8(data, what)


def read_stdin_text() -> str:
    """Standard input as text, read as bytes and checked as UTF-8: the text layer of sys.stdin would
    hand invalid bytes over as surrogates, or raise without saying where."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream with no bytes under it (an embedding application, a test)
        return argument_text(sys.stdin.read(), "standard input")
    return decode_utf8(buffer.read(), "standard input")
