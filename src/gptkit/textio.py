"""Reading text inputs as bounded, validated pieces: the streaming layer under corpus preparation and
tokenizer training.

Every input is read in fixed-size binary chunks and decoded incrementally, so invalid UTF-8 is
reported with its byte offset and no file, however large or however long its lines, is held in
memory at once. Long documents are cut into pieces only just before a single whitespace character
that sits between two non-space characters: both the `gpt1` and the byte-level pre-tokenisers start a
new word there, so encoding the pieces separately gives the same ids as encoding the whole document.

Invalid UTF-8 is reported in one wording wherever it is found (`invalid_utf8`): the input, the line
when it is known, the byte offset, the bad byte and what to do. `decode_utf8` checks bytes read whole
the same way (a prompt on standard input or in an argument: gptkit.tokenizer.inputs; a task file:
gptkit.tasks.readers).
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import GptkitError

CHUNK_BYTES = 1 << 20
MAX_PIECE_CHARS = 1 << 20

_SAFE_NEWLINE = re.compile(r"(?<=\S)\n(?=\S)")
_SAFE_SPACE = re.compile(r"(?<=\S)\s(?=\S)")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")


@dataclass(frozen=True)
class Piece:
    """Part of one document. `last` marks the document's final piece; `advance` is the number of bytes
    of the input file (as stored on disk) read since the previous piece, for progress reporting."""

    text: str
    last: bool
    advance: int


def is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(raw file, decompressed stream): the raw file's position measures progress through a .gz."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise GptkitError(f"{path}: cannot open ({e.strerror})") from None
    if path.name.lower().endswith(".gz"):
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    return raw, raw


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _looks_utf16(head: bytes) -> bool:
    """A UTF-16 byte-order mark, or ASCII text with a zero byte before or after every character."""
    return head[:2] in UTF16_BOMS or (len(head) >= 4 and (head[1:4:2] == b"\0\0" or head[0:4:2] == b"\0\0"))


def line_ends(data: bytes) -> int:
    """Line ends in `data` as text readers count them: \n, \r\n and a lone \r each end one."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def invalid_utf8(what: str, offset: int, reason: str, *, byte: int | None = None, line: int | None = None,
                 head: bytes = b"", compressed: bool = False) -> GptkitError:
    """The one wording of invalid UTF-8 in any input. `offset` counts bytes of the decompressed data
    when the input is a .gz (`compressed`); `head` (the input's first bytes) tells UTF-16 apart."""
    where = what if line is None else f"{what}, line {line}"
    inside = " in the decompressed data" if compressed else ""
    bad = "" if byte is None else f"byte 0x{byte:02x}: "
    hint = "it looks like UTF-16: convert it to UTF-8" if _looks_utf16(head) else "convert it to UTF-8"
    return GptkitError(f"{where}: invalid UTF-8 at byte offset {offset}{inside} ({bad}{reason}); {hint}")


def _compressed(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _refuse_utf16(path: Path, head: bytes) -> None:
    """UTF-16 without a byte-order mark decodes as "valid" UTF-8 full of NULs; refuse it by name."""
    if _looks_utf16(head):
        reason = "a UTF-16 byte-order mark" if head[:2] in UTF16_BOMS else "zero bytes between characters"
        raise invalid_utf8(str(path), 0, reason, line=1, head=head, compressed=_compressed(path))


def iter_decoded(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[str, int]]:
    """Decoded text chunks of a file, each with the raw-file position after it."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed = 0  # decompressed bytes handed to the decoder so far
    lines = 1  # the line the next byte is on
    after_cr = False  # the previous chunk ended in \r: a \n starting this one ends the same line
    raw, stream = _open(path)
    with raw, stream:
        while True:
            try:
                data = stream.read(chunk_bytes)
            except (OSError, EOFError, zlib.error) as e:
                raise GptkitError(f"{path}: cannot read: {e}") from None
            if consumed == 0:
                _refuse_utf16(path, data[:4])
            held = decoder.getstate()[0]  # the start of a character cut by the previous chunk's end
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                buf = held + data  # what e.start counts in; held bytes are never line ends
                line = lines + line_ends(buf[: e.start]) - (after_cr and buf[:1] == b"\n" and e.start > 0)
                raise invalid_utf8(str(path), consumed - len(held) + e.start, e.reason, byte=buf[e.start], line=line,
                                   head=data[:4] if consumed == 0 else b"", compressed=_compressed(path)) from None
            if consumed == 0 and text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark (spreadsheet and Windows exports) is not text
            consumed += len(data)
            lines += line_ends(data) - (after_cr and data[:1] == b"\n")
            after_cr = data.endswith(b"\r")
            if text or not data:
                yield text, raw.tell()
            if not data:
                return


def split_safe(buf: str, max_chars: int) -> int:
    """Where to cut a too-long `buf` (see the module docstring): preferably at a line break in the
    second half of the window, else at the last safe space, else (one giant word) a hard cut."""
    window = buf[: max_chars + 1]  # one extra character so the (?=\S) look-ahead sees the edge

    def last(pattern: re.Pattern) -> int:
        cut = 0
        for m in pattern.finditer(window, 1):
            cut = m.start()
        return cut

    newline = last(_SAFE_NEWLINE)
    cut = newline if newline >= max_chars // 2 else max(newline, last(_SAFE_SPACE))
    return cut if cut > 0 else max_chars


def iter_file_pieces(path: Path, doc_split: str = "file", max_chars: int = MAX_PIECE_CHARS,
                     chunk_bytes: int = CHUNK_BYTES) -> Iterator[Piece]:
    """Pieces of a plain-text file: one document per file, or per blank-line-separated block."""
    if doc_split not in ("file", "blank-line"):
        raise ValueError(f"doc_split must be 'file' or 'blank-line', not {doc_split!r}")
    buf = ""
    reported = 0  # raw position already accounted for by yielded pieces
    pos = 0
    in_doc = False  # a piece of the current document has been yielded
    at_start = True
    for text, pos in iter_decoded(path, chunk_bytes):
        buf += text
        if at_start and doc_split == "blank-line":
            buf = buf.lstrip()
            at_start = not buf
        if doc_split == "blank-line":
            start = 0  # one scan and one final slice per chunk: many short documents stay linear
            for m in _BLANK_LINE.finditer(buf):
                if m.end() >= len(buf):
                    break  # the blank run may go on in the next chunk
                doc = buf[start: m.start()]
                if doc.strip() or in_doc:
                    yield Piece(doc, True, pos - reported)
                    reported = pos
                in_doc = False
                start = m.end()
            buf = buf[start:]
        while len(buf) > max_chars:
            cut = split_safe(buf, max_chars)
            head, buf = buf[:cut], buf[cut:]
            yield Piece(head, False, pos - reported)
            reported, in_doc = pos, True
    if doc_split == "blank-line":
        buf = buf.rstrip()
    if buf.strip() or in_doc:
        yield Piece(buf, True, pos - reported)
    elif pos > reported:
        yield Piece("", False, pos - reported)  # nothing left but whitespace: progress only


def iter_jsonl_pieces(path: Path, text_field: str = "text", max_chars: int = MAX_PIECE_CHARS) -> Iterator[Piece]:
    """Pieces of a JSON-lines file whose objects carry the document in `text_field`."""
    raw, stream = _open(path)
    offset = 0
    reported = 0
    with raw, stream:
        lineno = 0
        while True:
            try:
                line = stream.readline()
            except (OSError, EOFError, zlib.error) as e:
                raise GptkitError(f"{path}: cannot read: {e}") from None
            if not line:
                break
            lineno += 1
            if lineno == 1:
                _refuse_utf16(path, line[:4])
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise invalid_utf8(str(path), offset + e.start, e.reason, byte=line[e.start], line=lineno,
                                   head=line[:4] if lineno == 1 else b"", compressed=_compressed(path)) from None
            offset += len(line)
            if lineno == 1 and decoded.startswith("\ufeff"):
                decoded = decoded[1:]
            if not decoded.strip():
                continue
            text = _field(path, lineno, decoded, text_field)
            if not text.strip():
                continue
            while len(text) > max_chars:
                cut = split_safe(text, max_chars)
                yield Piece(text[:cut], False, raw.tell() - reported)
                reported = raw.tell()
                text = text[cut:]
            yield Piece(text, True, raw.tell() - reported)
            reported = raw.tell()
        if raw.tell() > reported:
            yield Piece("", False, raw.tell() - reported)


def _field(path: Path, lineno: int, line: str, field: str) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        # Some of the parser's messages end in "at" ("Invalid control character at"): one "at" here.
        raise GptkitError(f"{path}:{lineno}: malformed JSON ({e.msg.removesuffix(' at')} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise GptkitError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    if field not in obj:
        found = ", ".join(sorted(map(str, obj))) or "none"
        raise GptkitError(f"{path}:{lineno}: no {field!r} field (fields found: {found}); choose one with --text-field")
    value = obj[field]
    if not isinstance(value, str):
        raise GptkitError(f"{path}:{lineno}: field {field!r} is {type(value).__name__}, expected a string")
    bad = _lone_surrogate(value)
    if bad is not None:
        raise GptkitError(f"{path}:{lineno}: field {field!r} holds an unpaired surrogate (U+{ord(value[bad]):04X}) at "
                          f"character {bad}: a JSON escape that is not valid Unicode text")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(text: str) -> int | None:
    """Index of a lone surrogate (JSON allows "\\ud800"; no tokenizer can take it), or None."""
    m = _SURROGATE.search(text)
    return m.start() if m else None


def utf8_error(data: bytes, what: str, count_lines: bool = False) -> GptkitError | None:
    """The error for the first invalid UTF-8 byte of `data` (with its line if `count_lines`), or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = line_ends(data[: e.start]) + 1 if count_lines else None
        return invalid_utf8(what, e.start, e.reason, byte=data[e.start], line=line, head=data[:4])
    return None


def decode_utf8(data: bytes, what: str, count_lines: bool = False) -> str:
    """`data` as UTF-8 text; otherwise the GptkitError of `utf8_error`."""
    error = utf8_error(data, what, count_lines)
    if error is not None:
        raise error
    return data.decode("utf-8")
