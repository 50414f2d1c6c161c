"""Cross-modal projection matching (CMPM) loss (Zhang & Lu, "Deep Cross-Modal Projection Learning for Image-Text
Matching", ECCV 2018), as used by IVT (``papers/ivt.txt`` Eq. 5-7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cmpm_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float = 1e-8,
    text_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""CMPM in both directions.

    For image i and text j, the matching probability is the softmax over the batch of the scalar projection of one
    feature onto the other's unit vector, ``p_ij = softmax_j(x_i · z_j / ||z_j||)``; the target is the
    label-normalized matching distribution ``q_ij = y_ij / Σ_k y_ik`` (``y_ij = 1`` when the identities match); the
    loss is ``mean_i Σ_j p_ij (log p_ij − log(q_ij + ε))``, i.e. KL(p‖q) with an ε so unmatched pairs stay finite.

    Args:
        image_embeds (`torch.Tensor` of shape `[B_i, d]`): image features (not normalized).
        text_embeds (`torch.Tensor` of shape `[B_t, d]`): text features (not normalized).
        labels (`torch.Tensor` of shape `[B_i]`): identity labels of the images.
        epsilon (`float`): the ε of Eq. 5.
        text_labels (`torch.Tensor` of shape `[B_t]`, *optional*): identity labels of the texts; defaults to
            `labels` (paired batches).

    Returns:
        `(loss_i2t, loss_t2i)`: two scalar tensors (image→text and text→image).
    """
    if image_embeds.dim() != 2 or text_embeds.dim() != 2 or image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(
            f"cmpm_loss expects image_embeds [B_i, d] and text_embeds [B_t, d], got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )
    text_labels = labels if text_labels is None else text_labels
    if labels.shape[0] != image_embeds.shape[0] or text_labels.shape[0] != text_embeds.shape[0]:
        raise ValueError(
            f"cmpm_loss: {labels.shape[0]} image labels for {image_embeds.shape[0]} images and "
            f"{text_labels.shape[0]} text labels for {text_embeds.shape[0]} texts"
        )
    image_embeds = image_embeds.float()
    text_embeds = text_embeds.float()
    match = (labels.view(-1, 1) == text_labels.view(1, -1)).float()  # [B_i, B_t]

    image_proj_text = image_embeds @ F.normalize(text_embeds, dim=-1).t()  # [B_i, B_t]
    text_proj_image = text_embeds @ F.normalize(image_embeds, dim=-1).t()  # [B_t, B_i]

    def _direction(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target / target.sum(dim=1, keepdim=True).clamp_min(1.0)
        log_p = F.log_softmax(logits, dim=1)
        return (log_p.exp() * (log_p - torch.log(target + epsilon))).sum(dim=1).mean()

    return _direction(image_proj_text, match), _direction(text_proj_image, match.t())
