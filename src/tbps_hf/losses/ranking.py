"""Triplet ranking losses with the hardest in-batch negative (VSE++, Faghri et al. 2018) and PCC's
commonality-based margin ranking (CMR) loss (Park et al., ECCV'24, Eq. 9-12).

Embeddings may carry a slot axis (``[N, K, d]``: e.g. PCC's D coarse or P fine embeddings); slot ``k`` of an image
is compared only with slot ``k`` of a text, each slot gets its own hardest negatives, and slot losses are averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .identity import normalized_entropy


def _as_slots(embeds: torch.Tensor) -> torch.Tensor:
    return embeds.unsqueeze(1) if embeds.dim() == 2 else embeds


def _per_anchor(margin: float | torch.Tensor, n: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a margin (scalar, ``[N]`` or ``[N, K]``) to ``[K, N]``."""
    margin = torch.as_tensor(margin, dtype=like.dtype, device=like.device)
    if margin.dim() == 1:
        margin = margin[:, None]
    return margin.expand(n, k).t()


def hardest_negative_ranking_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    labels: torch.Tensor | None = None,
    margin: float | torch.Tensor = 0.2,
    text_margin: float | torch.Tensor | None = None,
    reduction: str = "sum",
) -> torch.Tensor:
    r"""
    Bidirectional triplet ranking loss with the hardest in-batch negative (PCC Eq. 9):

    ``Σ_k [m_v,k − s(v_k, t_k) + s(v_k, t_h)]_+ + [m_t,k − s(t_k, v_k) + s(t_k, v_h)]_+``

    with ``s`` the cosine similarity, ``t_h`` the most similar text of a *different identity* than ``v_k`` (and
    ``v_h`` likewise). Pairs ``(v_k, t_k)`` are the positives.

    Args:
        image_embeds / text_embeds: ``[N, d]`` or ``[N, K, d]`` (slot ``k`` compared with slot ``k``).
        labels: ``[N]`` identity labels; samples sharing the anchor's identity are never negatives. ``None``: every
            off-diagonal sample is a negative.
        margin: margin of the image-anchored terms: a float, ``[N]`` or ``[N, K]`` (per anchor and slot).
        text_margin: margin of the text-anchored terms (defaults to ``margin``).
        reduction: over the batch, ``"sum"`` (Eq. 9) or ``"mean"``; slots are always averaged.

    An anchor with no negative in the batch contributes 0.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    image_embeds, text_embeds = _as_slots(image_embeds), _as_slots(text_embeds)
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"image and text embeddings differ in shape: {tuple(image_embeds.shape)} vs {tuple(text_embeds.shape)}")
    n, k, _ = image_embeds.shape
    if k == 0 or n == 0:
        return image_embeds.new_zeros(())
    image_embeds = F.normalize(image_embeds.float(), dim=-1)
    text_embeds = F.normalize(text_embeds.float(), dim=-1)
    # sim[k, i, j] = s(v_i, t_j) for slot k
    sim = torch.einsum("ikd,jkd->kij", image_embeds, text_embeds)
    positive = sim.diagonal(dim1=1, dim2=2)  # [K, N]
    if labels is None:
        same = torch.eye(n, dtype=torch.bool, device=sim.device)
    else:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape [{n}], got {tuple(labels.shape)}")
        same = labels[:, None] == labels[None, :]
        same = same | torch.eye(n, dtype=torch.bool, device=sim.device)
    masked = sim.masked_fill(same, float("-inf"))
    hardest_text = masked.max(dim=2).values  # [K, N]: hardest text for each image anchor
    hardest_image = masked.max(dim=1).values  # [K, N]: hardest image for each text anchor
    m_v = _per_anchor(margin, n, k, sim)
    m_t = _per_anchor(margin if text_margin is None else text_margin, n, k, sim)
    loss_v = (m_v - positive + hardest_text).clamp(min=0)
    loss_t = (m_t - positive + hardest_image).clamp(min=0)
    # an anchor without any negative has hardest = -inf, so its hinge is clamped to 0
    loss = loss_v + loss_t
    per_slot = loss.sum(dim=1) if reduction == "sum" else loss.mean(dim=1)
    return per_slot.mean()


def commonality_margins(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""CMR margins ``α · (1 − C(f))`` (PCC Eq. 11-12) from ID logits ``[..., c]``; detached (the margin is a
    per-sample weight, not a path for gradients that would reward flatter identity predictions)."""
    return alpha * (1.0 - normalized_entropy(logits.detach()))


def commonality_margin_ranking_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    image_logits: torch.Tensor,
    text_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    alpha: float = 0.2,
    reduction: str = "sum",
) -> torch.Tensor:
    r"""
    Commonality-based margin ranking loss (PCC Eq. 12): the hardest-negative ranking loss whose margin for anchor
    ``f`` is ``α · (1 − C(f))``, ``C`` the normalized entropy of ``f``'s identity probabilities (Eq. 11).
    Body parts shared by many identities (high entropy) get a small margin.

    Args:
        image_embeds / text_embeds: ``[N, d]`` or ``[N, K, d]``.
        image_logits / text_logits: identity logits of those embeddings, ``[N, c]`` or ``[N, K, c]``.
        labels, reduction: as in :func:`hardest_negative_ranking_loss`.
    """
    return hardest_negative_ranking_loss(
        image_embeds,
        text_embeds,
        labels=labels,
        margin=commonality_margins(image_logits, alpha),
        text_margin=commonality_margins(text_logits, alpha),
        reduction=reduction,
    )


__all__ = ["hardest_negative_ranking_loss", "commonality_margins", "commonality_margin_ranking_loss"]
