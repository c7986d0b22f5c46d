"""Token shards: round trip, dtype choice, and refusal of damaged files with the file named."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptkit.data import read_shard, verify_shard, write_shard
from gptkit.data.shards import HEADER_BYTES, _header, read_header
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
    with pytest.raises(GptkitError, match=r"train_00000\.bin: token shard data is corrupt"):
        read_shard(shard)  # issue 17 item 10: the checksum is checked on every read
    assert read_shard(shard, verify=False).size == 1000  # (a caller that checked it already may skip it)
    with pytest.raises(GptkitError, match="data is corrupt"):
        verify_shard(shard)


def forged_shard(path, tokens, header_vocab):
    """A shard whose ids do not fit the vocabulary its (self-consistent) header names: what a bug
    in another writer, or a hand-made file, produces. Its checksums are right."""
    import zlib

    data = np.ascontiguousarray(tokens, dtype=np.uint16)
    path.write_bytes(_header(data.size, 2, header_vocab, zlib.crc32(data.tobytes())) + data.tobytes())
    return path


def test_ids_beyond_the_vocabulary_are_refused_on_read(tmp_path):
    path = forged_shard(tmp_path / "val_00000.bin", [1, 2, 300, 4], 300)
    with pytest.raises(GptkitError, match=r"val_00000\.bin: token shard holds id 300, outside its vocabulary of 300"):
        read_shard(path)


def test_pretrain_names_a_bad_validation_shard(tmp_path, capsys):
    """The issue's case: a validation shard with ids >= vocab was an IndexError traceback."""
    import json

    from gptkit.cli import main
    from test_pretrain import args, make_corpus

    corpus = make_corpus(tmp_path / "data", 40)
    meta = json.loads((corpus / "meta.json").read_text())
    val = corpus / meta["splits"]["val"]["shards"][0]
    tokens = read_shard(val).astype(np.int64)
    tokens[3] = meta["vocab_size"] + 5
    forged_shard(val, tokens, meta["vocab_size"])
    assert main(args(corpus, tmp_path / "run", "--steps", "2")) == 2
    err = capsys.readouterr().err
    assert f"{val}: token shard holds id {meta['vocab_size'] + 5}" in err and "\n" not in err.strip()
    assert not (tmp_path / "run").exists()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, HEADER_BYTES + 2 * 40 + 8), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, HEADER_BYTES + 2 * 40 + 8)),
       tail=st.binary(max_size=8))
def test_fuzzed_shards_read_or_fail_with_a_gptkit_error(tmp_path, edits, cut, tail):
    """Property: any damage to a shard (byte edits, truncation, extra bytes) is read back exactly or
    refused with gptkit's own error, never another exception."""
    path = tmp_path / "fuzz.bin"
    write_shard(path, np.arange(40) % 30, 30)
    data = bytearray(path.read_bytes())
    for at, value in edits:
        if at < len(data):
            data[at] = value
    data = data[:cut] if cut is not None else data
    path.write_bytes(bytes(data) + tail)
    try:
        tokens = read_shard(path)
    except GptkitError:
        return
    assert int(tokens.max(initial=0)) < read_header(path)["vocab_size"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_random_bytes_are_not_a_shard(tmp_path, blob):
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    try:
        read_shard(path)
    except GptkitError:
        pass


def test_missing_shard(tmp_path):
    with pytest.raises(GptkitError, match="nothing.bin: cannot read token shard"):
        read_shard(tmp_path / "nothing.bin")
