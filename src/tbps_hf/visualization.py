"""Retrieval grid: one row per query — the caption, then its top-k gallery crops with true matches marked."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MATCH_COLOR = "#1a9e3a"  # green border: same person as the query
MISS_COLOR = "#d62728"  # red border: another person


def retrieval_grid(
    queries: Sequence[str],
    gallery_images: Sequence[Any],
    topk_indices: np.ndarray,
    matches: np.ndarray,
    path: str | os.PathLike,
    max_queries: int = 8,
    k: int = 10,
    scores: np.ndarray | None = None,
    text_width: int = 32,
    dpi: int = 100,
) -> Path:
    """Write a PNG grid of retrieval results.

    Args:
        queries: ``Q`` query captions (one row each; the first ``max_queries`` are drawn).
        gallery_images: the gallery (PIL images or paths, indexable), addressed by ``topk_indices``.
        topk_indices: int ``[Q, >=k]`` gallery positions in rank order.
        matches: bool ``[Q, >=k]``, True where the retrieved image shows the query's person (green border; red
            otherwise).
        path: output PNG file.
        scores: optional ``[Q, >=k]`` similarities printed under each thumbnail.
        text_width: characters per line when wrapping captions.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless; no display on servers
    import matplotlib.pyplot as plt

    from .retrieval import load_image

    topk_indices = np.asarray(topk_indices)
    matches = np.asarray(matches, dtype=bool)
    if topk_indices.ndim != 2 or matches.shape != topk_indices.shape:
        raise ValueError(
            f"topk_indices and matches must both be [Q, k]; got {topk_indices.shape} and {matches.shape}"
        )
    if len(queries) != topk_indices.shape[0]:
        raise ValueError(f"Got {len(queries)} queries but {topk_indices.shape[0]} rows of topk_indices")
    num_rows = min(max_queries, len(queries))
    k = min(k, topk_indices.shape[1])
    if num_rows < 1 or k < 1:
        raise ValueError("retrieval_grid needs at least one query and k >= 1")

    text_cols = 2.6  # the caption column is as wide as ~2.6 thumbnails
    fig_w, row_h = 1.0 * k + text_cols + 0.3, 2.3
    fig = plt.figure(figsize=(fig_w, row_h * num_rows + 0.4), dpi=dpi)
    grid = fig.add_gridspec(num_rows, k + 1, width_ratios=[text_cols] + [1.0] * k, wspace=0.08, hspace=0.25)
    for r in range(num_rows):
        ax = fig.add_subplot(grid[r, 0])
        ax.axis("off")
        caption = "\n".join(textwrap.wrap(str(queries[r]), text_width)[:9])
        ax.text(0.0, 0.5, caption, va="center", ha="left", fontsize=8, wrap=False, transform=ax.transAxes)
        for c in range(k):
            ax = fig.add_subplot(grid[r, c + 1])
            image = load_image(gallery_images[int(topk_indices[r, c])])
            ax.imshow(np.asarray(image), aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            color = MATCH_COLOR if matches[r, c] else MISS_COLOR
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(4)
            label = f"#{c + 1}" if scores is None else f"#{c + 1} {float(scores[r, c]):.2f}"
            ax.set_xlabel(label, fontsize=7, color=color)
    fig.suptitle("Top-%d retrievals (green: same person, red: different person)" % k, fontsize=10, y=0.995)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["retrieval_grid"]
