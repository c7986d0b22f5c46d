"""Token shards: round trip, dtype choice, and refusal of damaged files with the file named."""

from __future__ import annotations

import numpy as np
import pytest

from gptkit.data import read_shard, verify_shard, write_shard
from gptkit.data.shards import HEADER_BYTES, read_header
from gptkit.errors import GptkitError


@pytest.mark.parametrize("vocab_size,dtype", [(40481, np.uint16), (65536, np.uint16), (65537, np.uint32), (100_000, np.uint32)])
def test_round_trip_and_dtype(tmp_path, vocab_size, dtype):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab_size, size=10_001)
    tokens[:2] = [0, vocab_size - 1]
    path = tmp_path / "s.bin"
    write_shard(path, tokens, vocab_size)
    back = read_shard(path)
    assert back.dtype == dtype and back.shape == tokens.shape
    np.testing.assert_array_equal(back.astype(np.int64), tokens)
    assert not back.flags.writeable
    assert path.stat().st_size == HEADER_BYTES + tokens.size * np.dtype(dtype).itemsize
    header = read_header(path)
    assert header["count"] == tokens.size and header["vocab_size"] == vocab_size
    verify_shard(path)
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_empty_shard(tmp_path):
    write_shard(tmp_path / "e.bin", np.empty(0, dtype=np.int64), 50)
    assert read_shard(tmp_path / "e.bin").size == 0


def test_ids_out_of_range_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        write_shard(tmp_path / "x.bin", np.array([1, 10]), 10)
    assert not (tmp_path / "x.bin").exists()


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "train_00000.bin"
    write_shard(path, np.arange(1000) % 300, 300)
    return path


def test_bad_magic_names_the_file(shard):
    data = bytearray(shard.read_bytes())
    data[:8] = b"NOTASHRD"
    shard.write_bytes(bytes(data))
    with pytest.raises(GptkitError, match=r"train_00000\.bin: not a gptkit token shard \(bad magic"):
        read_shard(shard)


def test_truncated_shard_names_the_file(shard):
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(GptkitError, match=r"train_00000\.bin: token shard is truncated"):
        read_shard(shard)


def test_shard_shorter_than_header(shard):
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(GptkitError, match=r"train_00000\.bin: not a token shard: 20 bytes"):
        read_shard(shard)


def test_trailing_bytes_are_refused(shard):
    shard.write_bytes(shard.read_bytes() + b"\0\0")
    with pytest.raises(GptkitError, match="longer than its header says"):
        read_shard(shard)


def test_corrupt_header_field_fails_the_header_checksum(shard):
    data = bytearray(shard.read_bytes())
    data[24] ^= 0x01  # vocab_size
    shard.write_bytes(bytes(data))
    with pytest.raises(GptkitError, match="header is corrupt"):
        read_shard(shard)


def test_unsupported_version(shard):
    data = bytearray(shard.read_bytes())
    data[8] = 9
    shard.write_bytes(bytes(data))
    with pytest.raises(GptkitError, match="version 9 is not supported"):
        read_shard(shard)


def test_verify_detects_flipped_token(shard):
    data = bytearray(shard.read_bytes())
    data[HEADER_BYTES + 10] ^= 0xFF
    shard.write_bytes(bytes(data))
    read_shard(shard)  # the header is intact: a plain read does not look at every token
    with pytest.raises(GptkitError, match="data is corrupt"):
        verify_shard(shard)


def test_missing_shard(tmp_path):
    with pytest.raises(GptkitError, match="nothing.bin: cannot read token shard"):
        read_shard(tmp_path / "nothing.bin")
