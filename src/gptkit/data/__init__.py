"""Corpus data: self-describing token shards, corpus directories, and preparing them from text."""

from .corpus import Corpus, load_corpus
from .shards import dtype_for, read_shard, verify_shard, write_shard

__all__ = ["Corpus", "dtype_for", "load_corpus", "read_shard", "verify_shard", "write_shard"]
