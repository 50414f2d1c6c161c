"""PNG plots of per-query results: CMC curves and the distribution of per-query SD (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_cmc(first_positive_ranks, path, max_rank: int = 50, title: str | None = None, label: str | None = None) -> str:
    """Cumulative match characteristic: % of queries whose first positive is at rank ≤ r, for r = 1..max_rank.

    Args:
        first_positive_ranks: ``[Q]`` 1-based ranks (``per_query["first_positive_rank"]``), or a dict
            ``label -> ranks`` to compare several curves.
        path: where to write the PNG.
    Returns:
        ``path`` as a string.
    """
    curves = first_positive_ranks if isinstance(first_positive_ranks, Mapping) else {label: first_positive_ranks}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    r = np.arange(1, max_rank + 1)
    for name, ranks in curves.items():
        ranks = np.asarray(ranks).reshape(-1)
        if ranks.size == 0:
            raise ValueError(f"plot_cmc: no ranks for curve {name!r}")
        cmc = (ranks[None, :] <= r[:, None]).mean(1) * 100
        ax.plot(r, cmc, label=None if name is None else f"{name} (R@1 {cmc[0]:.1f})")
    ax.set(xlabel="rank", ylabel="matching rate (%)", xlim=(1, max_rank), ylim=(0, 100.5), title=title or "CMC")
    ax.grid(alpha=0.3)
    if any(name is not None for name in curves):
        ax.legend(loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def plot_sd_distribution(sd, path, title: str | None = None) -> str:
    """Histogram of per-query SD (``per_query["sd"]``, fractions in [0, 1]) with its mean (= mSD / 100)."""
    sd = np.asarray(sd, dtype=np.float64).reshape(-1)
    if sd.size == 0:
        raise ValueError("plot_sd_distribution: sd is empty")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.hist(sd, bins=40, range=(0.0, 1.0), color="tab:blue", alpha=0.8)
    ax.axvline(sd.mean(), color="tab:red", linestyle="--", label=f"mSD = {sd.mean() * 100:.2f}")
    ax.set(xlabel="per-query SD", ylabel="queries", title=title or "Similarity distribution (SD) per query")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)
