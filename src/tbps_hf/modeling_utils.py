"""Model base shared by every tbps-hf method: the retrieval interface and helpers for structured features."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

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
      learning rates (``config.lr_multipliers``).
    - ``get_image_attention_maps(pixel_values) -> [I, h, w] | None``: where the image side looks, on the patch /
      feature grid (each map sums to 1); ``None`` when a configuration has no such map.
    """

    main_input_name = "pixel_values"
    # layers subclass GradientCheckpointingLayer; attention runs through `TBPSAttention` (eager or SDPA)
    supports_gradient_checkpointing = True
    _supports_sdpa = True

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
        """One group per learning-rate factor (``config.lr_multipliers``) and weight-decay choice
        (``_no_weight_decay``), named after the ``lr_multipliers`` keys it gathers (``"default"`` for parameters no
        key matches; ``/no_decay`` appended without weight decay); frozen parameters are left out."""
        groups: dict[tuple[float, bool], dict] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            key, factor = self.config.lr_multiplier(name)
            no_decay = self._no_weight_decay(name, param)
            group = groups.setdefault(
                (factor, no_decay),
                {"keys": [], "params": [], "lr": learning_rate * factor, "weight_decay": 0.0 if no_decay else weight_decay},
            )
            if key not in group["keys"]:
                group["keys"].append(key)
            group["params"].append(param)
        for (_, no_decay), group in groups.items():
            group["name"] = "+".join(group.pop("keys")) + ("/no_decay" if no_decay else "")
        return list(groups.values())

    def _no_weight_decay(self, name: str, param: torch.nn.Parameter) -> bool:
        """Whether a parameter is left out of weight decay (default: none is)."""
        return False

    def get_image_attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """`[I, h, w]` attention over the image grid (each map sums to 1), or None (the default)."""
        return None

    # -- pretrained starts ---------------------------------------------------------------------------------------

    # the preset `from_backbones` starts from when given neither a config nor a preset
    backbone_preset: str | None = None

    @classmethod
    def from_backbones(cls, config=None, preset: str | None = None, **kwargs) -> "TBPSPreTrainedModel":
        """A model whose towers come from pretrained checkpoints and whose new layers are freshly initialized.

        Args:
            config: the config to start from (copied); or
            preset: a preset name (default ``backbone_preset``), with config overrides as further keyword
                arguments.
            **kwargs: keyword names that are the method's backbone roles (``MethodInfo.backbone_roles``: IVT
                ``vit`` / ``bert``, PCC ``image`` / ``text``, CFAM ``clip``) give a checkpoint each — a hub id, a
                local folder or an already loaded module; roles not given fall back to
                ``config.backbone_checkpoints``. Other names override config fields (with ``preset`` only).

        Tower sizes come from the checkpoints, not from the preset.
        """
        from .models import backbone_roles_of

        roles = backbone_roles_of(cls)
        given = {role: kwargs.pop(role) for role in roles if kwargs.get(role) is not None}
        for role in roles:
            kwargs.pop(role, None)
        if config is None:
            config = cls.config_class.from_preset(preset or cls.backbone_preset, **kwargs)
        elif kwargs or preset is not None:
            raise ValueError(
                f"from_backbones: pass either config or a preset with overrides, not both (got {sorted(kwargs)})"
            )
        else:
            config = copy.deepcopy(config)
        checkpoints = {**(config.backbone_checkpoints or {}), **given}
        return cls._from_backbone_checkpoints(config, checkpoints)

    @classmethod
    def _from_backbone_checkpoints(cls, config, checkpoints: dict[str, Any]) -> "TBPSPreTrainedModel":
        """Load ``checkpoints`` (role → name or module) into a model for ``config``; methods implement it."""
        raise NotImplementedError(f"{cls.__name__} has no pretrained backbones")

    # Training hooks (docs/architecture.md → "Training hooks on the model"); the loop calls them on the unwrapped
    # model. The defaults do nothing: a method overrides what it needs.
    def set_training_progress(self, global_step: int, total_steps: int, epoch: float) -> None:
        """Called before every optimizer step (``global_step`` = steps already done); stage schedules and ramps
        are pure functions of these numbers, so a resumed run continues exactly."""

    def training_state_dict(self) -> dict[str, torch.Tensor]:
        """State restored on resume that ``save_pretrained`` does not ship (e.g. LAIP's queues)."""
        return {}

    def load_training_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no training state but got keys {sorted(state)}")

    def find_unused_parameters(self) -> bool:
        """Whether DDP must look for parameters without gradients (a switch turned a loss off)."""
        return False


def split_heads(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """`[B, L, heads * d]` → `[B, heads, L, d]`."""
    return states.view(states.shape[0], states.shape[1], num_heads, -1).transpose(1, 2)


def patch_attention_map(to_patches: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Attention `[B, rows * cols]` over the patches (row-major) → `[B, rows, cols]`, renormalized to sum to 1."""
    return (to_patches / to_patches.sum(dim=-1, keepdim=True)).reshape(-1, *grid_size)


# ------------------------------------------------------------------------------------------------ attention, once


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention written out (transformers' eager signature): per-head `query [B, h, Lq, d]`, `key` /
    `value [B, h, Lk, d]`, `attention_mask` bool `[B, 1, 1 | Lq, Lk]` (True = may be attended) → (output
    `[B, Lq, h, d]`, weights `[B, h, Lq, Lk]` before dropout). The softmax runs in float32."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = (query @ key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1, dtype=torch.float32)
    output = F.dropout(weights, p=dropout, training=module.training).to(value.dtype) @ value
    return output.transpose(1, 2).contiguous(), weights


class TBPSAttention(nn.Module):
    """Multi-head (self or cross) attention on transformers' attention interface, shared by every method.

    q/k/v/out projections are plain `nn.Linear` modules named as in CLIP (PEFT LoRA targets them by name). The kernel
    is `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]` ("sdpa" by default), or the eager one above for
    `"eager"` and whenever the weights are asked for (`output_attentions=True`: attention maps come from the model's
    own forward, never a replay). `float32_logits` runs q·k and the softmax in float32 even under autocast (PCC:
    un-normalized backbone features overflow float16).
    """

    def __init__(
        self,
        config,
        hidden_size: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = True,
        float32_logits: bool = False,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} attention heads")
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.float32_logits = float32_logits
        self.is_causal = False
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        hidden_states `[B, Lq, D]`; key_value_states `[B, Lk, D]` (self-attention when None); key_mask `[B, Lk]`
        (1 / True where the key may be attended) → (output `[B, Lq, D]`, weights `[B, heads, Lq, Lk]` or None).
        """
        memory = hidden_states if key_value_states is None else key_value_states
        query = split_heads(self.q_proj(hidden_states), self.num_heads)
        key = split_heads(self.k_proj(memory), self.num_heads)
        value = split_heads(self.v_proj(memory), self.num_heads)
        mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
        implementation = getattr(self.config, "_attn_implementation", None) or "sdpa"
        if output_attentions or implementation == "eager":
            attention = eager_attention_forward
        else:
            attention = ALL_ATTENTION_FUNCTIONS[implementation]
        dropout = self.dropout if self.training else 0.0
        if self.float32_logits:
            with torch.autocast(device_type=query.device.type, enabled=False):
                output, weights = attention(
                    self, query.float(), key.float(), value.float(), mask, scaling=self.scaling, dropout=dropout
                )
            output = output.to(value.dtype)
        else:
            output, weights = attention(self, query, key, value, mask, scaling=self.scaling, dropout=dropout)
        output = self.out_proj(output.reshape(*hidden_states.shape[:-1], -1))
        return output, (weights if output_attentions else None)


def resize_position_table(
    table: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Resize a table of learned 2-D position embeddings to another patch grid.

    table: `[P + h*w, d]` or `[1, P + h*w, d]` with `P = num_prefix_tokens` rows (class token) kept as they are;
    old_grid: `(h, w)` of the table (default: square). Returns the same layout on `new_grid` `(rows, cols)`
    (unchanged when the grids agree). The interpolation runs in float32.
    """
    batched = table.dim() == 3
    rows2d = table[0] if batched else table
    prefix, grid = rows2d[:num_prefix_tokens], rows2d[num_prefix_tokens:]
    if old_grid is None:
        side = int(math.isqrt(grid.shape[0]))
        if side * side != grid.shape[0]:
            raise ValueError(f"position embeddings of {grid.shape[0]} patches are not a square grid")
        old_grid = (side, side)
    new_grid = tuple(int(v) for v in new_grid)
    if tuple(old_grid) == new_grid:
        return table.clone()
    image = grid.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=new_grid, mode=mode, align_corners=False)
    grid = image.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(table.dtype)
    resized = torch.cat([prefix, grid], dim=0)
    return resized.unsqueeze(0) if batched else resized


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
