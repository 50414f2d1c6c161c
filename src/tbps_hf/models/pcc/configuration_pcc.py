"""Configuration of PCC (Park et al., "Improving Text-based Person Search via Part-level Cross-modal
Correspondence", ECCV 2024)."""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ...configuration_utils import TBPSConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGE_BACKBONES = ("resnet", "vit", "clip_vision_model")
TEXT_BACKBONES = ("bert", "clip_text_model")

# §4.1: Adam, lr 5e-4 decayed x0.1 at epochs 20/40/50/55 of 60, mini-batch 32. The paper names no sampler, so
# batches are plain random pairs (images_per_identity=1) and no weight decay.
_PAPER_SCHEDULE = dict(
    optimizer="adam",
    learning_rate=5e-4,
    weight_decay=0.0,
    lr_scheduler_type="multistep",
    warmup_epochs=0,
    milestones=[20, 40, 50, 55],
    gamma=0.1,
    num_train_epochs=60,
    per_device_train_batch_size=32,
    images_per_identity=1,
)


@strict(accept_kwargs=True)
class PCCConfig(TBPSConfig):
    r"""
    Configuration of [`PCCModel`]. Besides the [`TBPSConfig`] fields (`image_size`, `vocab_size`,
    `max_text_length`, `num_identities`, …):

    image_config (`dict`): config of the image backbone as a dict with `model_type` ∈ {"resnet", "vit",
        "clip_vision_model"} (the transformers config of `ResNetModel` / `ViTModel` / `CLIPVisionModel`).
    text_config (`dict`): config of the text backbone, `model_type` ∈ {"bert", "clip_text_model"}. Its
        `vocab_size` is always taken from the top-level `vocab_size`.
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
    image_backbone_lr_scale / text_backbone_lr_scale (`float`): backbone learning rate = scale x base rate
        (§4.1: image backbone 0.1; the text scale only matters when the text backbone is trained).
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

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # §3.1 / §4.1: ImageNet ResNet-50 + uncased BERT (frozen), 384x128 crops, D = P = 4.
        "rn50-bert": dict(
            image_config={
                "model_type": "resnet",
                "embedding_size": 64,
                "hidden_sizes": [256, 512, 1024, 2048],
                "depths": [3, 4, 6, 3],
                "layer_type": "bottleneck",
            },
            text_config={"model_type": "bert"},  # bert-base-uncased shape
            image_size=(384, 128),
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
            vocab_size=30522,
            max_text_length=100,
            tokenizer_name="google-bert/bert-base-uncased",
            hidden_size=768,
            num_attention_heads=12,
            training_defaults=_PAPER_SCHEDULE,
        ),
        # Table 1 lower half: ViT-B/16 (ImageNet) + BERT, same recipe; position embeddings are interpolated from
        # the 224x224 checkpoint grid to 24x8.
        "vit-b16-bert": dict(
            image_config={
                "model_type": "vit",
                "image_size": 224,
                "patch_size": 16,
                "hidden_size": 768,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "intermediate_size": 3072,
            },
            text_config={"model_type": "bert"},
            image_size=(384, 128),
            vocab_size=30522,
            max_text_length=100,
            tokenizer_name="google-bert/bert-base-uncased",
            hidden_size=768,
            num_attention_heads=12,
            training_defaults=_PAPER_SCHEDULE,
        ),
        # Table 5: CLIP ViT-B/16 image and text towers ("same hyperparameters in all experiments": text frozen).
        "clip-vit-b16": dict(
            image_config={
                "model_type": "clip_vision_model",
                "image_size": 224,
                "patch_size": 16,
                "hidden_size": 768,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "intermediate_size": 3072,
                "projection_dim": 512,
            },
            text_config={
                "model_type": "clip_text_model",
                "hidden_size": 512,
                "num_hidden_layers": 12,
                "num_attention_heads": 8,
                "intermediate_size": 2048,
                "max_position_embeddings": 77,
                "projection_dim": 512,
            },
            image_size=(384, 128),
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
            vocab_size=49408,
            max_text_length=77,
            tokenizer_name="openai/clip-vit-base-patch16",
            hidden_size=512,
            num_attention_heads=8,
            training_defaults=_PAPER_SCHEDULE,
        ),
        # CPU preset for tests and the quickstart: a 2-stage ResNet (8x4 feature grid on 64x32 crops) and a
        # 2-layer BERT, random init. The text tower is TRAINED here (freeze_text_backbone=False): a frozen random
        # BERT carries no language, whereas the paper freezes a pretrained one. Backbones learn at the full rate.
        # Ranking losses are averaged over the batch: with Eq. 9's sum (64 anchors) the ranking gradient swamps
        # the ID loss and, from random init, the ID loss did not move in 100 steps on ProcPEDES (measured).
        # embedding_batch_norm: from random init every embedding points the same way (cosine ~0.98 between any two
        # samples) and the hardest-negative ranking losses sat at 2α with R@1 at chance (1 %, 240 steps, measured);
        # batch-normalizing g / C / F centers them: 500 steps (lr 1e-3) → test R@1 85.9, R@5 99.3, mAP 84.8.
        # All loss terms of Eq. 13 stay on.
        "tiny": dict(
            image_config={
                "model_type": "resnet",
                "embedding_size": 32,
                "hidden_sizes": [64, 128],
                "depths": [1, 1],
                "layer_type": "basic",
            },
            text_config={
                "model_type": "bert",
                "hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 256,
                "max_position_embeddings": 64,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            },
            image_size=(64, 32),
            vocab_size=1000,
            max_text_length=48,
            tokenizer_name=None,
            hidden_size=128,
            num_attention_heads=4,
            freeze_text_backbone=False,
            image_backbone_lr_scale=1.0,
            text_backbone_lr_scale=1.0,
            ranking_reduction="mean",
            embedding_batch_norm=True,
            training_defaults=dict(
                optimizer="adam",
                learning_rate=1e-3,
                weight_decay=0.0,
                lr_scheduler_type="multistep",
                warmup_epochs=0,
                milestones=[20, 27],
                gamma=0.1,
                num_train_epochs=30,
                per_device_train_batch_size=64,
                images_per_identity=2,
            ),
        ),
    }

    image_config: dict | None = None
    text_config: dict | None = None
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
    image_backbone_lr_scale: float | int = 0.1
    text_backbone_lr_scale: float | int = 0.1
    ranking_reduction: str = "sum"
    initializer_range: float = 0.02
    embedding_batch_norm: bool = False

    def __post_init__(self, **kwargs):
        if self.image_config is None:
            self.image_config = dict(self.presets["rn50-bert"]["image_config"])
        if self.text_config is None:
            self.text_config = dict(self.presets["rn50-bert"]["text_config"])
        self.image_config = _plain_dict(self.image_config, "image_config")
        self.text_config = _plain_dict(self.text_config, "text_config")
        if self.image_config.get("model_type") not in IMAGE_BACKBONES:
            raise ValueError(
                f"image_config['model_type'] must be one of {IMAGE_BACKBONES}, got {self.image_config.get('model_type')!r}"
            )
        if self.text_config.get("model_type") not in TEXT_BACKBONES:
            raise ValueError(
                f"text_config['model_type'] must be one of {TEXT_BACKBONES}, got {self.text_config.get('model_type')!r}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_coarse_tokens < 1 or self.num_fine_parts < 1:
            raise ValueError("num_coarse_tokens and num_fine_parts must be >= 1")
        if self.ranking_reduction not in ("sum", "mean"):
            raise ValueError(f"ranking_reduction must be 'sum' or 'mean', got {self.ranking_reduction!r}")
        # Eq. 14 sums 1 + D + P cosines; keep the declared range in step with the ablation switches.
        n = 1 + self.num_coarse_tokens * bool(self.use_coarse) + self.num_fine_parts * bool(self.use_fine)
        kwargs.pop("similarity_range", None)
        self.similarity_range = (-float(n), float(n))
        super().__post_init__(**kwargs)

    def backbone_config(self, which: str):
        """The transformers config of the ``"image"`` or ``"text"`` backbone (text: ``vocab_size`` from here)."""
        values = dict(self.image_config if which == "image" else self.text_config)
        model_type = values.pop("model_type")
        values.pop("transformers_version", None)
        if which == "text":
            values["vocab_size"] = self.vocab_size
        return CONFIG_MAPPING[model_type](**values)

    @property
    def num_embeddings(self) -> int:
        """Embedding slots per sample: 1 global + D coarse + P fine (all built, even when a switch is off)."""
        return 1 + self.num_coarse_tokens + self.num_fine_parts


def _plain_dict(value: Any, name: str) -> dict:
    if hasattr(value, "to_diff_dict"):  # a transformers config object
        value = {**value.to_diff_dict(), "model_type": value.model_type}
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict (or a transformers config), got {type(value).__name__}")
    return dict(value)


__all__ = ["PCCConfig"]
