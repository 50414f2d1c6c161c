"""Configuration of PCC (Park et al., "Improving Text-based Person Search via Part-level Cross-modal
Correspondence", ECCV 2024)."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ...configuration_utils import TBPSConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGE_BACKBONES = ("resnet", "vit", "clip_vision_model")
TEXT_BACKBONES = ("bert", "clip_text_model")

@strict(accept_kwargs=True)
class PCCConfig(TBPSConfig):
    r"""
    Configuration of [`PCCModel`]. Besides the [`TBPSConfig`] fields (`image_size`, `vocab_size`,
    `max_text_length`, `num_identities`, …):

    vision_config (`PreTrainedConfig` or `dict` with `model_type`): the image tower's transformers config (a
        sub-config), `model_type` ∈ {"resnet", "vit", "clip_vision_model"} (`ResNetModel` / `ViTModel` /
        `CLIPVisionModel`). Called `image_config` in the first release (still read, with a deprecation warning).
    text_config (`PreTrainedConfig` or `dict` with `model_type`): the text tower's, `model_type` ∈ {"bert",
        "clip_text_model"}. Its `vocab_size` is always taken from the top-level `vocab_size`.
    hidden_size (`int`): width `d` shared by g, C, F: backbone features are projected to it by one linear layer
        per modality (the paper writes V and T with the same `d` but does not say how ResNet's 2048 channels meet
        BERT's 768; a frozen BERT also needs a trainable layer for g_t to learn at all).
    num_attention_heads (`int`): heads `n` of the encoder MHSA and decoder MHA (`d_h = d / n`).
    attention_dropout (`float`): dropout on the attention weights of the encoders / decoder.
    num_coarse_tokens (`int`): `D`, shared learnable decoder tokens → coarse embeddings (§4.1: 4).
    num_fine_parts (`int`): `P`, horizontal stripes of the image / text tokens → fine embeddings (§4.1: 4).
    margin (`float`): `α` of the ranking losses (Eq. 9) and of CMR (Eq. 12). The paper does not give a value;
        0.2 is the VSE++ value it cites ([12]).
    use_coarse (`bool`): coarse embeddings in the losses and the similarity (Table 2 "Coarse"). When off but
        `use_fine` is on, the decoder with the D tokens still runs: its attention gives the foreground map.
    use_fine (`bool`): fine embeddings (Table 2 "Fine").
    use_cmr (`bool`): CMR on the fine embeddings (Table 2 "CMR"); off = the plain hardest-negative ranking loss.
    cmr_on_coarse (`bool`): CMR instead of the plain ranking loss on the coarse embeddings too (Table 3).
    share_decoder (`bool`): one decoder and one set of D tokens for both modalities (the paper); off = separate
        decoders and tokens per modality (Table 4 "Separated Decoder").
    freeze_text_backbone (`bool`): the text backbone is not fine-tuned (§4.1); it then runs in eval mode.
    lr_multipliers: see [`TBPSConfig`]; the paper presets have `{"image_backbone": 0.1, "text_backbone": 0.1}`
        (§4.1: image backbone at 0.1x; the text factor only matters when the text backbone is trained).
    ranking_reduction (`str`): "sum" over the batch as written in Eq. 9/12, or "mean".
    initializer_range (`float`): std of the normal init of the new layers.
    embedding_batch_norm (`bool`): not in the paper (off by default): a BatchNorm1d per modality on every embedding
        (g, C, F) before the losses and the similarity. Max-pooled ReLU features of a randomly initialized backbone
        share one dominant direction (cosine ~0.98 between any two samples), from which the hardest-negative
        ranking loss does not escape; centering across the batch removes it. For training from scratch.

    The similarity is a sum of `1 + D + P` cosines (Eq. 14), so `similarity_range` is derived:
    `(-n, n)` with `n = 1 + D·use_coarse + P·use_fine`.
    """

    model_type = "pcc"

    # Presets: presets/{rn50-bert,vit-b16-bert,clip-vit-b16}.json (the paper's backbones and §4.1 recipe) and
    # presets/tiny.json (CPU); the measurements behind the tiny preset are in docs/benchmarks.md ("Preset notes").
    deprecated_fields: ClassVar[dict[str, str]] = {
        "image_config": "vision_config",
        "image_backbone_lr_scale": "lr_multipliers",
        "text_backbone_lr_scale": "lr_multipliers",
    }

    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    hidden_size: int = 768
    num_attention_heads: int = 12
    attention_dropout: float | int = 0.0
    num_coarse_tokens: int = 4
    num_fine_parts: int = 4
    margin: float | int = 0.2
    use_coarse: bool = True
    use_fine: bool = True
    use_cmr: bool = True
    cmr_on_coarse: bool = False
    share_decoder: bool = True
    freeze_text_backbone: bool = True
    ranking_reduction: str = "sum"
    initializer_range: float = 0.02
    embedding_batch_norm: bool = False

    def __post_init__(self, **kwargs):
        if self.vision_config is None and "image_config" not in kwargs:
            self.vision_config = self.preset_data("rn50-bert")["config"]["vision_config"]
        if self.text_config is None:
            self.text_config = self.preset_data("rn50-bert")["config"]["text_config"]
        self.text_config = _tower_config(self.text_config, "text_config", TEXT_BACKBONES)
        if self.vision_config is not None:
            self.vision_config = _tower_config(self.vision_config, "vision_config", IMAGE_BACKBONES)
        self.text_config.vocab_size = self.vocab_size
        # Eq. 14 sums 1 + D + P cosines; keep the declared range in step with the ablation switches.
        n = 1 + self.num_coarse_tokens * bool(self.use_coarse) + self.num_fine_parts * bool(self.use_fine)
        kwargs.pop("similarity_range", None)
        self.similarity_range = (-float(n), float(n))
        super().__post_init__(**kwargs)

    def _rename_deprecated(self, old: str, new: str, value: Any) -> None:
        if old == "image_config":
            self.vision_config = _tower_config(value, "image_config", IMAGE_BACKBONES)
        elif float(value) != 1.0:  # image_ / text_backbone_lr_scale
            self.lr_multipliers = {**(self.lr_multipliers or {}), old.replace("_lr_scale", ""): float(value)}

    def validate_backbones(self):
        for name, allowed in (("vision_config", IMAGE_BACKBONES), ("text_config", TEXT_BACKBONES)):
            if getattr(self, name).model_type not in allowed:
                raise ValueError(f"{name} model_type must be one of {allowed}, got {getattr(self, name).model_type!r}")

    def validate_heads_and_parts(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_coarse_tokens < 1 or self.num_fine_parts < 1:
            raise ValueError("num_coarse_tokens and num_fine_parts must be >= 1")
        if self.ranking_reduction not in ("sum", "mean"):
            raise ValueError(f"ranking_reduction must be 'sum' or 'mean', got {self.ranking_reduction!r}")

    def to_dict(self) -> dict[str, Any]:
        self.text_config.vocab_size = self.vocab_size  # the caller may set vocab_size after training a tokenizer
        return super().to_dict()

    def backbone_config(self, which: str):
        """A copy of the ``"image"`` or ``"text"`` tower's transformers config (text: ``vocab_size`` from here)."""
        tower = copy.deepcopy(self.vision_config if which == "image" else self.text_config)
        if which == "text":
            tower.vocab_size = self.vocab_size
        return tower

    @property
    def num_embeddings(self) -> int:
        """Embedding slots per sample: 1 global + D coarse + P fine (all built, even when a switch is off)."""
        return 1 + self.num_coarse_tokens + self.num_fine_parts


def _tower_config(value: Any, name: str, allowed: tuple[str, ...]) -> PreTrainedConfig:
    """A tower's transformers config from a config object or a dict with `model_type` (presets, config.json)."""
    if isinstance(value, PreTrainedConfig):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict (or a transformers config), got {type(value).__name__}")
    values = dict(value)
    model_type = values.pop("model_type", None)
    values.pop("transformers_version", None)
    if model_type not in allowed:
        raise ValueError(f"{name} model_type must be one of {allowed}, got {model_type!r}")
    return CONFIG_MAPPING[model_type](**values)


__all__ = ["PCCConfig"]
