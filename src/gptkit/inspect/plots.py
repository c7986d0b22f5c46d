"""PNG pictures: attention heatmaps, the causal/padding mask, the next-token bar chart.

matplotlib is an optional dependency (`pip install gptkit[plot]`): it is imported inside the drawing
functions with the non-interactive Agg backend, so importing `gptkit.inspect` never needs it. Masked
(future or padding) cells are drawn grey and hatched, never just the colour of 0, so "not allowed to
look" and "allowed but ignored" read differently.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gptkit.errors import GptkitError
from gptkit.inspect.output import write_output

MASKED_FACE = "#d9d9d9"
MASKED_EDGE = "#9a9a9a"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise GptkitError("drawing PNGs needs matplotlib: pip install 'gptkit[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Render to memory, then write atomically: a failed draw leaves no half-written PNG."""
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return write_output(path, buf.getvalue())


def _label_size(n: int) -> float:
    return max(4.0, min(10.0, 260.0 / max(n, 1)))


def _hatch_masked(ax, allowed: np.ndarray) -> None:
    """Cover every cell where `allowed` is False with one hatched grey collection."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    rows, cols = np.nonzero(~allowed)
    if rows.size == 0:
        return
    cells = [Rectangle((c - 0.5, r - 0.5), 1, 1) for r, c in zip(rows, cols)]
    ax.add_collection(
        PatchCollection(cells, facecolor=MASKED_FACE, edgecolor=MASKED_EDGE, hatch="///", linewidth=0.0)
    )


def _heatmap(ax, probs: np.ndarray, allowed: np.ndarray, tokens: Sequence[str], title: str, vmax: float):
    T = probs.shape[0]
    image = ax.imshow(np.where(allowed, probs, np.nan), cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
    _hatch_masked(ax, allowed)
    size = _label_size(T)
    ax.set_xticks(range(T), labels=list(tokens), rotation=90, fontsize=size)
    ax.set_yticks(range(T), labels=list(tokens), fontsize=size)
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(T - 0.5, -0.5)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title, fontsize=10)
    return image


def plot_attention(
    probs: np.ndarray,
    tokens: Sequence[str],
    path: str | Path,
    *,
    titles: Sequence[str] | None = None,
    suptitle: str = "",
) -> Path:
    """Heatmap(s) of attention probabilities with the tokens on both axes.

    probs: (T, T) for one head or the mean, or (n, T, T) for a grid of heads. Cells above the diagonal
    (keys in the query's future) are hatched grey: the causal mask forbids them.
    """
    plt = _pyplot()
    probs = np.asarray(probs, dtype=np.float64)
    grid = probs[None] if probs.ndim == 2 else probs
    n, T, _ = grid.shape
    allowed = np.tril(np.ones((T, T), dtype=bool))
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    side = max(4.0, min(11.0, 2.5 + 0.22 * T))
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), squeeze=False, layout="constrained")
    vmax = float(grid.max()) if grid.size else 1.0
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        title = titles[k] if titles is not None else ""
        image = _heatmap(ax, grid[k], allowed, tokens, title, vmax=vmax or 1.0)
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        bar.set_label("attention probability (hatched grey: masked future)")
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def plot_masks(panels: Sequence[tuple[str, np.ndarray, Sequence[str]]], path: str | Path) -> Path:
    """Boolean masks side by side: (title, (n, n) allowed matrix, axis labels) per panel."""
    from matplotlib.colors import ListedColormap

    plt = _pyplot()
    n = panels[0][1].shape[0]
    side = max(4.0, min(9.0, 2.5 + 0.3 * n))
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels), side), squeeze=False, layout="constrained")
    for ax, (title, allowed, labels) in zip(axes.flat, panels):
        allowed = np.asarray(allowed, dtype=bool)
        ax.imshow(np.where(allowed, 1.0, np.nan), cmap=ListedColormap(["#2b8cbe"]), vmin=0, vmax=1)
        _hatch_masked(ax, allowed)
        size = _label_size(n)
        ax.set_xticks(range(n), labels=list(labels), rotation=90, fontsize=size)
        ax.set_yticks(range(n), labels=list(labels), fontsize=size)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_xlabel("key position j")
        ax.set_ylabel("query position i")
        ax.set_title(title, fontsize=10)
    fig.suptitle("blue: query i may attend to key j;  hatched grey: masked (score set to -inf, probability 0)")
    return _save(fig, path)


def plot_next_tokens(tokens: Sequence[str], probs: Sequence[float], path: str | Path, *, title: str = "") -> Path:
    """Horizontal bar chart of the top-k next tokens, most probable at the top."""
    plt = _pyplot()
    k = len(tokens)
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.4 * k + 1)))
    y = np.arange(k)
    ax.barh(y, probs, color="#2b8cbe")
    ax.set_yticks(y, labels=[repr(t) for t in tokens])
    ax.invert_yaxis()
    for yi, p in zip(y, probs):
        ax.text(p, yi, f" {p:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, min(1.0, max(probs, default=1.0) * 1.2 + 1e-9))
    ax.set_xlabel("probability of being the next token")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
