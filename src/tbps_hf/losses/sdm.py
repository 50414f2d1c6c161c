"""Similarity distribution matching (SDM; Jiang & Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for
Text-to-Image Person Retrieval", CVPR 2023, Eq. 1-4).

For a batch of N image–text pairs with identities y, the true matching distribution of image i over the N texts is
q_ij = 1[y_i = y_j] / Σ_k 1[y_i = y_k]; the predicted one is p_ij = softmax_j(s · sim_ij). SDM is
KL(p_i2t ‖ q) + KL(p_t2i ‖ q), each averaged over the rows. It works on any [N, N] similarity matrix, so CFAM uses it
both on the global cosine similarities and on its local (mean per-query cosine) similarities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sdm_loss(
    similarity: torch.Tensor,
    person_ids: torch.Tensor,
    logit_scale: float | torch.Tensor,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """
    SDM loss on a precomputed similarity matrix.

    Args:
        similarity (`torch.Tensor` of shape `[N, N]`): `similarity[i, j]` between image i and text j (pairs i are
            aligned: image i and text i come from the same training pair).
        person_ids (`torch.Tensor` of shape `[N]`): identity of each pair.
        logit_scale (`float` or scalar tensor): the inverse temperature s (IRRA: 1 / 0.02 = 50).
        epsilon (`float`): added to q before the log (its zero entries), as in IRRA.

    Returns:
        Scalar tensor: mean over images of KL(p_i2t ‖ q) + mean over texts of KL(p_t2i ‖ q).
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square [N, N] matrix, got shape {tuple(similarity.shape)}")
    person_ids = person_ids.reshape(-1)
    if person_ids.shape[0] != similarity.shape[0]:
        raise ValueError(
            f"person_ids has {person_ids.shape[0]} entries but the similarity matrix is {tuple(similarity.shape)}"
        )
    labels = (person_ids[:, None] == person_ids[None, :]).to(similarity.dtype)
    target = labels / labels.sum(dim=1, keepdim=True)
    log_target = torch.log(target + epsilon)

    logits_i2t = logit_scale * similarity
    logits_t2i = logits_i2t.t()  # the label matrix is symmetric, so the same target serves both directions
    loss = similarity.new_zeros(())
    for logits in (logits_i2t, logits_t2i):
        log_p = F.log_softmax(logits, dim=1)
        loss = loss + (log_p.exp() * (log_p - log_target)).sum(dim=1).mean()
    return loss


def sdm_loss_from_embeddings(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    person_ids: torch.Tensor,
    logit_scale: float | torch.Tensor,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """SDM on the cosine similarity of `image_embeds` `[N, d]` and `text_embeds` `[N, d]` (IRRA's global loss)."""
    similarity = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).t()
    return sdm_loss(similarity, person_ids, logit_scale, epsilon)


__all__ = ["sdm_loss", "sdm_loss_from_embeddings"]
