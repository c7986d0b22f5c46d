"""Self-describing token shards: a 64-byte header, then the tokens as little-endian uint16 or uint32.

Header layout (little-endian):
    offset 0   8s   magic b"GPTKSHRD"
    offset 8   u32  format version (1)
    offset 12  u32  bytes per token: 2 (uint16) or 4 (uint32)
    offset 16  u64  token count
    offset 24  u64  vocabulary size the ids were written for
    offset 32  u32  CRC-32 of the token bytes (checked on every read)
    offset 36  u32  CRC-32 of header bytes 0..35
    offset 40  zero padding to 64 (keeps the tokens 64-byte aligned for the memmap)

uint16 is used whenever the vocabulary fits (ids < 65536), halving disk and page-cache use.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_writer
from ..errors import GptkitError

MAGIC = b"GPTKSHRD"
VERSION = 1
HEADER_BYTES = 64
_FIELDS = struct.Struct("<8sIIQQI")  # everything the header CRC covers
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest token dtype that holds every id below vocab_size."""
    return _DTYPES[2] if vocab_size <= 1 << 16 else _DTYPES[4]


def _header(count: int, itemsize: int, vocab_size: int, data_crc: int) -> bytes:
    fields = _FIELDS.pack(MAGIC, VERSION, itemsize, count, vocab_size, data_crc)
    head = fields + struct.pack("<I", zlib.crc32(fields))
    return head + bytes(HEADER_BYTES - len(head))


def write_shard(path: str | Path, tokens: np.ndarray, vocab_size: int) -> None:
    """Write `tokens` (ids < vocab_size) as a shard, atomically: temp file, fsync, rename."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one-dimensional, got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{tokens.min()}, {tokens.max()}]")
    data = np.ascontiguousarray(tokens, dtype=dtype_for(vocab_size))
    head = _header(data.size, data.itemsize, vocab_size, zlib.crc32(memoryview(data).cast("B")))
    with atomic_writer(path) as f:
        f.write(head)
        f.write(memoryview(data).cast("B"))


def read_header(path: str | Path) -> dict:
    """The checked header fields of a shard; any inconsistency is a GptkitError naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as e:
        raise GptkitError(f"{path}: cannot read token shard ({e.strerror})") from None
    if len(head) < HEADER_BYTES:
        raise GptkitError(f"{path}: not a token shard: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, itemsize, count, vocab_size, data_crc = _FIELDS.unpack_from(head)
    if magic != MAGIC:
        raise GptkitError(f"{path}: not a gptkit token shard (bad magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise GptkitError(f"{path}: token shard format version {version} is not supported (this gptkit reads {VERSION})")
    (head_crc,) = struct.unpack_from("<I", head, _FIELDS.size)
    if head_crc != zlib.crc32(head[: _FIELDS.size]):
        raise GptkitError(f"{path}: token shard header is corrupt (checksum mismatch)")
    if itemsize not in _DTYPES:
        raise GptkitError(f"{path}: token shard has an unknown dtype code {itemsize}")
    expected = HEADER_BYTES + count * itemsize
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise GptkitError(f"{path}: token shard is {state}: {size} bytes, header promises {expected} ({count} tokens)")
    return {"version": version, "dtype": _DTYPES[itemsize], "count": count, "vocab_size": vocab_size, "data_crc": data_crc}


def read_shard(path: str | Path, *, verify: bool = True) -> np.ndarray:
    """The tokens of a shard as a read-only memmap (no copy: pages load as they are touched).

    verify (the default): one pass over the tokens first, checking the data checksum and that every
    id is below the vocabulary size the header names, so a corrupt shard is an error naming the file
    here and not an IndexError deep inside a training step."""
    header = read_header(path)
    if header["count"] == 0:
        empty = np.empty(0, dtype=header["dtype"])
        empty.flags.writeable = False
        return empty
    tokens = np.memmap(path, dtype=header["dtype"], mode="r", offset=HEADER_BYTES, shape=(header["count"],))
    if verify:
        _verify(Path(path), tokens, header)
    return tokens


def verify_shard(path: str | Path) -> None:
    """Check a shard completely: header, data checksum and token ids (what read_shard does)."""
    read_shard(path, verify=True)


def _verify(path: Path, tokens: np.ndarray, header: dict) -> None:
    crc, top = 0, 0
    for start in range(0, tokens.size, _CHUNK):  # in pieces: a shard may be larger than memory
        chunk = np.ascontiguousarray(tokens[start : start + _CHUNK])
        crc = zlib.crc32(memoryview(chunk).cast("B"), crc)
        top = max(top, int(chunk.max()))
    if crc != header["data_crc"]:
        raise GptkitError(f"{path}: token shard data is corrupt (checksum mismatch)")
    if top >= header["vocab_size"]:
        raise GptkitError(f"{path}: token shard holds id {top}, outside its vocabulary of {header['vocab_size']}")


_CHUNK = 1 << 24
