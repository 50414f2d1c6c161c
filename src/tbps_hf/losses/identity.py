"""Identity (ID) classification loss with a classifier shared by the image and text modalities.

Used by PCC (Park et al., ECCV'24, Eq. 7-8: ``p = softmax(e W_ID)``, one ``W_ID`` per embedding, shared between
the two modalities so both are pushed towards the same identity prototypes) and reusable by CFAM.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SharedIdentityClassifier(nn.Module):
    r"""
    Bias-free linear identity classifiers, one per embedding *slot*, applied to both modalities.

    Args:
        hidden_size (`int`): embedding width ``d``.
        num_identities (`int`): number of training identities ``c``.
        num_slots (`int`, defaults to 1): independent classifiers, e.g. one for the global embedding and one per
            coarse / fine embedding (PCC). Slot ``k`` of an image and slot ``k`` of a text share classifier ``k``.
        bias (`bool`, defaults to `False`): Eq. 7 of PCC has no bias (``e W_ID``).

    Input ``[N, d]`` (one slot) or ``[N, K, d]`` (``K == num_slots``) → logits ``[N, c]`` or ``[N, K, c]``.
    """

    def __init__(self, hidden_size: int, num_identities: int, num_slots: int = 1, bias: bool = False):
        super().__init__()
        if num_identities < 1:
            raise ValueError(f"num_identities must be >= 1 to build an identity classifier, got {num_identities}")
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.num_identities = num_identities
        self.num_slots = num_slots
        self.weight = nn.Parameter(torch.empty(num_slots, hidden_size, num_identities))
        self.bias = nn.Parameter(torch.zeros(num_slots, num_identities)) if bias else None
        nn.init.normal_(self.weight, std=0.001)

    def forward(self, embeds: torch.Tensor, slot_offset: int = 0) -> torch.Tensor:
        """Logits of ``embeds`` ``[N, d]`` or ``[N, K, d]``, using classifiers ``slot_offset .. slot_offset+K-1``."""
        squeeze = embeds.dim() == 2
        if squeeze:
            embeds = embeds.unsqueeze(1)
        k = embeds.shape[1]
        if slot_offset < 0 or slot_offset + k > self.num_slots:
            raise ValueError(f"slots {slot_offset}..{slot_offset + k - 1} out of range for {self.num_slots} classifiers")
        weight = self.weight[slot_offset : slot_offset + k]
        logits = torch.einsum("nkd,kdc->nkc", embeds, weight.to(embeds.dtype))
        if self.bias is not None:
            logits = logits + self.bias[slot_offset : slot_offset + k].to(logits.dtype)
        return logits.squeeze(1) if squeeze else logits


def identity_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""
    Cross-entropy ``-y log p`` (PCC Eq. 7) averaged over the batch and over slots.

    Args:
        logits: ``[N, c]`` or ``[N, K, c]``.
        labels: ``[N]`` contiguous identity labels in ``0 .. c-1``.
    """
    if logits.dim() == 2:
        logits = logits.unsqueeze(1)
    n, k, c = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape [{n}], got {tuple(labels.shape)}")
    if k == 0:
        return logits.new_zeros(())
    if labels.numel() and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in 0..{c - 1} (num_identities={c}); got {labels.min()}..{labels.max()}")
    return F.cross_entropy(logits.reshape(n * k, c).float(), labels.repeat_interleave(k))


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    r"""
    Entropy of ``softmax(logits)`` over the last dimension divided by ``log(c)``, in [0, 1] (PCC Eq. 11: the
    *commonality* of an embedding; 1 = uniform over identities, 0 = one identity).
    """
    c = logits.shape[-1]
    if c < 2:
        raise ValueError("normalized entropy needs at least 2 classes")
    log_p = F.log_softmax(logits.float(), dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return (entropy / math.log(c)).clamp(0.0, 1.0)


__all__ = ["SharedIdentityClassifier", "identity_classification_loss", "normalized_entropy"]
