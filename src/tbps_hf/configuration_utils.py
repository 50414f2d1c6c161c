"""Configuration base shared by every tbps-hf method.

Each method's config (``IVTConfig``, ``PCCConfig``, ``CFAMConfig`` …) subclasses :class:`TBPSConfig` and lists
its presets in the ``presets`` class variable: ``"tiny"`` (CPU tests, seconds) plus the paper's settings.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict(accept_kwargs=True)
class TBPSConfig(PreTrainedConfig):
    r"""
    Fields every tbps-hf config carries (the training and evaluation code reads only these):

    image_size (`tuple[int, int]`): input (height, width) of person crops, e.g. (384, 128).
    vocab_size (`int`): text vocabulary size (a trained WordPiece tokenizer sets it for from-scratch presets).
    max_text_length (`int`): tokens per caption, special tokens included.
    num_identities (`int`): identities of the training set, for methods with identity-classification losses
        (0 when unused or not yet known; the training script sets it from the dataset).
    similarity_range (`tuple[float, float]`): the range of ``model.similarity`` (used to normalize scores for mSD).
    tokenizer_name (`str`, *optional*): a hub id / folder of the pretrained tokenizer the text tower expects;
        ``None`` means "train a WordPiece tokenizer on the training captions" (from-scratch presets).
    image_mean / image_std (`tuple[float, float, float]`): pixel normalization of the image tower.
    training_defaults (`dict`): the paper's optimizer and schedule for this preset, read by ``train.py`` when the
        user does not override them. Keys: ``optimizer`` ("adam" | "adamw" | "sgd"), ``learning_rate``,
        ``weight_decay``, ``lr_scheduler_type`` (a ``transformers.get_scheduler`` name or "multistep"),
        ``warmup_epochs``, ``milestones`` (epochs, for "multistep"), ``gamma``, ``num_train_epochs``,
        ``per_device_train_batch_size``, ``images_per_identity`` (identity-aware sampler).
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    image_size: list[int] | tuple[int, int] = (384, 128)
    vocab_size: int = 30522
    max_text_length: int = 100
    num_identities: int = 0
    similarity_range: list[float] | tuple[float, float] = (-1.0, 1.0)
    tokenizer_name: str | None = None
    image_mean: list[float] | tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: list[float] | tuple[float, float, float] = (0.5, 0.5, 0.5)
    training_defaults: dict | None = None

    def __post_init__(self, **kwargs):
        # JSON round trips turn tuples into lists; keep one canonical type.
        self.image_size = tuple(int(v) for v in self.image_size)
        self.similarity_range = tuple(float(v) for v in self.similarity_range)
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"image_size must be (height, width) with positive values, got {self.image_size}")
        super().__post_init__(**kwargs)

    @classmethod
    def preset_names(cls) -> list[str]:
        return sorted(cls.presets)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TBPSConfig":
        """Build the config of a named preset (``"tiny"`` or one of the paper's), with optional overrides."""
        if name not in cls.presets:
            raise ValueError(
                f"Unknown preset {name!r} for {cls.model_type!r}; valid presets: {', '.join(cls.preset_names())}"
            )
        values = dict(cls.presets[name])
        if "training_defaults" in overrides and values.get("training_defaults"):
            overrides["training_defaults"] = {**values["training_defaults"], **(overrides["training_defaults"] or {})}
        values.update(overrides)
        return cls(**values)
