"""The retrieval metrics from feature blocks, without materializing the [Q, G] similarity matrix."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..modeling_utils import Features, features_length, slice_features
from .core import ArrayLike, _run


def _dot(text_block: torch.Tensor, image_block: torch.Tensor) -> torch.Tensor:
    return text_block @ image_block.t()


def streaming_retrieval_metrics(
    text_features: Features,
    image_features: Features,
    query_ids: ArrayLike,
    gallery_ids: ArrayLike,
    similarity_fn: Callable[[Features, Features], torch.Tensor] | None = None,
    query_block_size: int = 1024,
    gallery_block_size: int = 4096,
    ks: Sequence[int] = (1, 5, 10),
    similarity_range: Sequence[float] = (-1.0, 1.0),
    return_per_query: bool = False,
    progress: bool = False,
    slice_fn: Callable[[Features, slice | torch.Tensor], Features] | None = None,
    length_fn: Callable[[Features], int] | None = None,
) -> dict[str, Any]:
    """Same result as ``retrieval_metrics(similarity_fn(text_features, image_features), ...)``, computed in blocks.

    Memory is O(query_block_size x gallery_block_size) per worker plus the features; every gallery block is scored
    once per query block. With the default ``similarity_fn`` query blocks are processed by ``torch.get_num_threads()``
    worker threads with one intra-op thread each; a given ``similarity_fn`` is called from the calling thread only. The positive pairs of a query block are scored once more (a ``[q, ≤ gallery_block_size]`` call)
    so each positive's score is read from one place (see ``core._QueryBlockState``).

    Args:
        text_features: ``[Q, ...]`` query features (a tensor, or a structure that ``slice_fn`` can slice).
        image_features: ``[G, ...]`` gallery features.
        query_ids, gallery_ids: identities, ``[Q]`` and ``[G]``.
        similarity_fn: ``(text_block, image_block) -> [q, g]``; default: dot product of ``[N, d]`` tensors (pass
            normalized features for cosine, or ``model.similarity``).
        query_block_size, gallery_block_size: block shape.
        ks, similarity_range, return_per_query: as in ``retrieval_metrics``.
        progress: show a tqdm bar over query blocks.
        slice_fn, length_fn: how to slice / measure structured features (default:
            ``tbps_hf.modeling_utils.slice_features`` / ``features_length``).
    """
    # a caller's similarity_fn (e.g. a model) is only ever called from this thread; the default dot product is
    # called from parallel workers, one intra-op thread each (see core._run)
    parallel = similarity_fn is None
    similarity_fn = similarity_fn or _dot
    slice_fn = slice_fn or slice_features
    length_fn = length_fn or features_length
    if query_block_size < 1 or gallery_block_size < 1:
        raise ValueError(f"block sizes must be >= 1, got {query_block_size} and {gallery_block_size}")
    num_queries, num_gallery = length_fn(text_features), length_fn(image_features)
    cache = threading.local()  # query blocks may be folded in parallel worker threads (default similarity_fn)

    def text_block(rows: np.ndarray) -> Features:
        if getattr(cache, "rows", None) is not rows:  # one slice per query block, reused for every gallery block
            cache.rows, cache.text = rows, slice_fn(text_features, torch.from_numpy(rows))
        return cache.text

    def score(rows: np.ndarray, images: Features, what: str) -> torch.Tensor:
        with torch.no_grad():
            out = similarity_fn(text_block(rows), images)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ValueError(f"similarity_fn must return a 2-D tensor, got {type(out).__name__} for the {what}")
        out = out.detach().cpu()
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        return out

    def get_block(rows: np.ndarray, g0: int, g1: int) -> torch.Tensor:
        block = score(rows, slice_fn(image_features, slice(g0, g1)), f"gallery block [{g0}:{g1}]")
        if tuple(block.shape) != (len(rows), g1 - g0):
            raise ValueError(f"similarity_fn returned shape {tuple(block.shape)}, expected {(len(rows), g1 - g0)}")
        return block.contiguous()

    def get_positive_scores(rows: np.ndarray, pos_idx: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        unique, inverse = np.unique(pos_idx[valid], return_inverse=True)
        flat = torch.zeros(int(valid.sum()), dtype=torch.float64)
        r_all = np.nonzero(valid)[0]
        for u0 in range(0, len(unique), gallery_block_size):
            cols = unique[u0 : u0 + gallery_block_size]
            block = score(rows, slice_fn(image_features, torch.from_numpy(cols)), "positive pairs")
            flat = flat.to(block.dtype)
            sel = np.nonzero((inverse >= u0) & (inverse < u0 + len(cols)))[0]
            flat[sel] = block[torch.from_numpy(r_all[sel]), torch.from_numpy(inverse[sel] - u0)]
        out = torch.zeros(pos_idx.shape, dtype=flat.dtype)
        out[torch.from_numpy(valid)] = flat
        return out

    return _run(
        get_block, get_positive_scores, query_ids, gallery_ids, num_queries, num_gallery, ks, similarity_range,
        query_block_size, gallery_block_size, return_per_query, check_blocks=True, name="similarity_fn output",
        progress=progress, parallel=parallel,
    )  # fmt: skip
