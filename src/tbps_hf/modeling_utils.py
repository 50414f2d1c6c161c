"""Model base shared by every tbps-hf method: the retrieval interface and helpers for structured features."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

Features = Any  # a [N, d] tensor, or a ModelOutput / dataclass whose tensor fields all have batch dimension N


class TBPSPreTrainedModel(PreTrainedModel):
    """The interface every method implements (see DESIGN.md → "Interfaces everything hangs on").

    - ``get_text_features(input_ids, attention_mask) -> Features`` (batch first)
    - ``get_image_features(pixel_values) -> Features``
    - ``similarity(text_features, image_features) -> [T, I]`` within ``config.similarity_range``
    - ``index_features(features) -> [N, d]`` vectors whose inner products equal ``similarity`` (for FAISS);
      the default L2-normalizes a tensor, which matches cosine similarity.
    - ``forward(input_ids, attention_mask, pixel_values, person_ids=None, return_loss=True)`` → a ``ModelOutput``
      whose ``loss`` is the paper's total and whose other fields name each term.
    - ``optimizer_param_groups(learning_rate, weight_decay)`` → parameter groups with the paper's per-module
      learning rates (the default: one group of trainable parameters).
    - ``get_image_attention_maps(pixel_values) -> [I, h, w] | None``: where the image side looks, on the patch /
      feature grid (each map sums to 1); ``None`` when a configuration has no such map.
    """

    main_input_name = "pixel_values"
    supports_gradient_checkpointing = False

    @property
    def similarity_range(self) -> tuple[float, float]:
        return tuple(self.config.similarity_range)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Features:
        raise NotImplementedError

    def get_image_features(self, pixel_values: torch.Tensor) -> Features:
        raise NotImplementedError

    def index_features(self, features: Features) -> torch.Tensor:
        if not isinstance(features, torch.Tensor):
            raise NotImplementedError(f"{type(self).__name__} must define index_features for structured features")
        return F.normalize(features.float(), dim=-1)

    def similarity(self, text_features: Features, image_features: Features) -> torch.Tensor:
        """Cosine similarity [T, I] by default (range [-1, 1])."""
        return self.index_features(text_features) @ self.index_features(image_features).t()

    def optimizer_param_groups(self, learning_rate: float, weight_decay: float = 0.0) -> list[dict]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": learning_rate, "weight_decay": weight_decay}]

    def get_image_attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """`[I, h, w]` attention over the image grid (each map sums to 1), or None (the default)."""
        return None


def split_heads(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """`[B, L, heads * d]` → `[B, heads, L, d]`."""
    return states.view(states.shape[0], states.shape[1], num_heads, -1).transpose(1, 2)


def patch_attention_map(to_patches: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Attention `[B, rows * cols]` over the patches (row-major) → `[B, rows, cols]`, renormalized to sum to 1."""
    return (to_patches / to_patches.sum(dim=-1, keepdim=True)).reshape(-1, *grid_size)


def attention_probabilities(query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention weights `[B, heads, Lq, Lk]` from per-head `query [B, heads, Lq, d]` and `key [B, heads,
    Lk, d]` (key_mask `[B, Lk]`, True = may be attended), in float32. The models run fused
    `scaled_dot_product_attention`, which never materializes these; attention maps recompute them."""
    scores = query.float() @ key.float().transpose(-1, -2) / math.sqrt(query.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


def _tensor_fields(features: Features) -> dict[str, torch.Tensor]:
    if dataclasses.is_dataclass(features):
        return {f.name: getattr(features, f.name) for f in dataclasses.fields(features)}
    return dict(features)


def _rebuild(template: Features, values: dict[str, Any]) -> Features:
    if dataclasses.is_dataclass(template):
        return dataclasses.replace(template, **values)
    return type(template)(**values)


def map_features(features: Features, fn) -> Features:
    """Apply ``fn`` to every tensor of ``features`` (a tensor or a structure of batch-first tensors)."""
    if isinstance(features, torch.Tensor):
        return fn(features)
    return _rebuild(
        features, {k: (fn(v) if isinstance(v, torch.Tensor) else v) for k, v in _tensor_fields(features).items()}
    )


def slice_features(features: Features, index: slice | torch.Tensor) -> Features:
    return map_features(features, lambda t: t[index])


def cat_features(chunks: Sequence[Features]) -> Features:
    """Concatenate feature blocks along the batch dimension."""
    first = chunks[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(chunks))
    fields = _tensor_fields(first)
    return _rebuild(
        first,
        {
            k: (torch.cat([_tensor_fields(c)[k] for c in chunks]) if isinstance(v, torch.Tensor) else v)
            for k, v in fields.items()
        },
    )


def features_length(features: Features) -> int:
    if isinstance(features, torch.Tensor):
        return features.shape[0]
    return next(v for v in _tensor_fields(features).values() if isinstance(v, torch.Tensor)).shape[0]
