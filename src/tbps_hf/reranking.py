"""Two-stage retrieval for cross-encoders (LAIP): first-stage top-k, re-ranked by the model's `rerank`.

`rerank_similarity` returns a full `[T, I]` score matrix that the metric core, the retrieval grid and the demo use
like any similarity:

- each query's top-k first-stage candidates (descending first-stage score, ties: lower gallery index first — the
  metric core's order) get the model's re-rank score (LAIP: the ITM probability, `config.rerank_range` = [0, 1]),
  floored at `CANDIDATE_FLOOR`;
- every other image ranks below every candidate, in first-stage order: its score is
  `(lowest candidate score of the row) × (1 − 1e-3) × s'`, where `s'` is its first-stage score normalized to
  [0, 1] with `model.similarity_range`. Scores stay in [0, 1], so mSD is computed with the re-rank range.

RaSa instead fills non-candidates with -100 (outside any range mSD could normalize); APTM adds 0.002·ITC.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

CANDIDATE_FLOOR = 1e-6


def check_rerank_k(k: int, num_gallery: int) -> int:
    """`k` clamped to the gallery size (with a warning); `k < 1` is an error."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"rerank_k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"rerank_k must be >= 1 (candidates re-ranked per query), got {k}")
    if k > num_gallery:
        logger.warning("rerank_k %d exceeds the gallery (%d images): re-ranking all of them", k, num_gallery)
        return num_gallery
    return k


def first_stage_candidates(first_stage: torch.Tensor, k: int) -> torch.Tensor:
    """`[T, k]` gallery indices of each row's k best first-stage scores (stable: ties → lower index first)."""
    return torch.argsort(-first_stage.float(), dim=1, stable=True)[:, :k]


def merge_scores(
    first_stage: torch.Tensor,
    candidates: torch.Tensor,
    candidate_scores: torch.Tensor,
    first_stage_range: tuple[float, float] = (-1.0, 1.0),
) -> torch.Tensor:
    """The final `[T, I]` matrix from first-stage scores, the candidates `[T, k]` and their re-rank scores `[T, k]`
    in [0, 1] (see the module docstring)."""
    lo, hi = (float(v) for v in first_stage_range)
    normalized = ((first_stage.float() - lo) / max(hi - lo, 1e-12)).clamp(0.0, 1.0)
    scores = candidate_scores.float().to(first_stage.device).clamp(CANDIDATE_FLOOR, 1.0)
    lowest = scores.min(dim=1, keepdim=True).values
    final = lowest * (1.0 - 1e-3) * normalized
    return final.scatter(1, candidates.to(first_stage.device), scores)


@torch.no_grad()
def rerank_similarity(model, text_inputs, image_features, first_stage: torch.Tensor | None = None, k: int | None = None):
    """Two-stage scores `[T, I]` of a cross-encoder.

    Args:
        model: a model with `config.is_cross_encoder`, `similarity` and `rerank(text, images, candidates [T, k])`.
        text_inputs: the queries' features (`model.get_text_features`) or tokenized inputs.
        image_features: the gallery's features (`model.get_image_features`).
        first_stage: `[T, I]` first-stage scores (default: `model.similarity(text_inputs, image_features)`).
        k: candidates per query (default `model.config.rerank_k`); clamped to the gallery, `< 1` refused.

    Returns:
        `[T, I]` float32 scores in `model.config.rerank_range` (candidates: re-rank score; others below, in
        first-stage order).
    """
    if not getattr(model.config, "is_cross_encoder", False):
        raise ValueError(f"{type(model).__name__} is not a cross-encoder (config.is_cross_encoder is false)")
    if first_stage is None:
        first_stage = model.similarity(text_inputs, image_features)
    k = check_rerank_k(int(model.config.rerank_k) if k is None else k, first_stage.shape[1])
    candidates = first_stage_candidates(first_stage, k)
    scores = model.rerank(text_inputs, image_features, candidates)
    return merge_scores(first_stage, candidates, scores, tuple(model.similarity_range))


__all__ = ["rerank_similarity", "merge_scores", "first_stage_candidates", "check_rerank_k", "CANDIDATE_FLOOR"]
