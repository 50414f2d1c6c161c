"""Retrieval metrics (R@k, mAP, mINP, mSD): a fast dense core, a streaming variant, plots, evaluate modules.

``retrieval_metrics`` works on a ``[Q, G]`` similarity matrix; ``streaming_retrieval_metrics`` on feature blocks
without materializing it. ``load(name)`` returns the installed ``evaluate`` module (``rank_k``, ``map``, ``msd``)
offline from anywhere.
"""

from .core import retrieval_metrics
from .streaming import streaming_retrieval_metrics

METRIC_NAMES = ("rank_k", "map", "msd")


def module_path(name: str) -> str:
    """Folder of the evaluate module ``name`` shipped inside the package (``modules/<name>/<name>.py``)."""
    from pathlib import Path

    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; choose one of {METRIC_NAMES}")
    return str(Path(__file__).resolve().parent / "modules" / name)


def load(name: str, **kwargs):
    """``evaluate.load`` of the packaged metric module ``name`` (works offline, from any working directory)."""
    import evaluate

    return evaluate.load(module_path(name), **kwargs)


__all__ = ["retrieval_metrics", "streaming_retrieval_metrics", "load", "module_path", "METRIC_NAMES"]
