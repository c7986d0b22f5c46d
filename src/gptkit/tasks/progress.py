"""Progress bars for long scoring runs (evaluation, prediction, zero-shot)."""

from __future__ import annotations


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr, shown only when asked and stderr is a terminal."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", file=sys.stderr, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))
