"""Configuration base shared by every tbps-hf method.

Each method's config (``IVTConfig``, ``PCCConfig``, ``CFAMConfig`` …) subclasses :class:`TBPSConfig`. Its presets
are data beside the model, one JSON file per preset in ``models/<method>/presets/<name>.json`` (as open_clip's model
configs), each with the architecture (``"config"``) and the paper's training recipe (``"training"``); a method
defined outside the package may list them in the ``presets`` class variable instead. Checks live in ``validate_*``
methods, so they run when a config is built *and* when it is saved.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import sys
import warnings
from pathlib import Path
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
        (0 when unused or not yet known; the training script sets it from the dataset). With 0 the model is built
        without its identity classifier, and the loss that needs it says so when asked for.
    similarity_range (`tuple[float, float]`): the range of ``model.similarity`` (used to normalize scores for mSD).
    tokenizer_name (`str`, *optional*): a hub id / folder of the pretrained tokenizer the text tower expects;
        ``None`` means "train a WordPiece tokenizer on the training captions" (from-scratch presets).
    image_mean / image_std (`tuple[float, float, float]`): pixel normalization of the image tower.
    backbone_checkpoints (`dict[str, str]`, *optional*): pretrained checkpoint per backbone role (the keyword names
        of ``from_backbones``, e.g. IVT ``{"vit": ..., "bert": ...}``): hub ids or local folders. ``None`` in the
        ``tiny`` presets (random init).
    lr_multipliers (`dict[str, float]`, *optional*): learning-rate factor per parameter group, read by
        ``optimizer_param_groups``: keys are module-name prefixes (``"image_backbone"``) or ``fnmatch`` patterns of
        parameter names (``"*.bias"``, ``"*"``); the first key that matches a parameter wins, unmatched ones get 1.
    preset (`str`, *optional*): the preset this config was built from; selects its training recipe.
    training_defaults (`dict`): the paper's optimizer and schedule for the preset, read by the training loop
        (``model.config.training_defaults``) when the user does not override them. It comes from the preset file and
        is not written to ``config.json`` (a saved model finds it again through ``preset``). Keys: ``optimizer``
        ("adam" | "adamw" | "sgd"), ``learning_rate``, ``weight_decay``, ``lr_scheduler_type`` (a
        ``transformers.get_scheduler`` name or "multistep"), ``warmup_epochs``, ``milestones`` (epochs, for
        "multistep"), ``gamma``, ``num_train_epochs``, ``per_device_train_batch_size``, ``images_per_identity``.
    """

    # Presets of a method defined outside the package (name → {"config": {...}, "training": {...}}); the package's
    # methods keep theirs in presets/*.json beside the config module.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # Renamed fields of earlier releases: old name → new name (a saved config.json may still use the old one).
    deprecated_fields: ClassVar[dict[str, str]] = {}

    image_size: list[int] | tuple[int, int] = (384, 128)
    vocab_size: int = 30522
    max_text_length: int = 100
    num_identities: int = 0
    similarity_range: list[float] | tuple[float, float] = (-1.0, 1.0)
    tokenizer_name: str | None = None
    image_mean: list[float] | tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: list[float] | tuple[float, float, float] = (0.5, 0.5, 0.5)
    backbone_checkpoints: dict | None = None
    lr_multipliers: dict | None = None
    preset: str | None = None
    training_defaults: dict | None = None

    def __post_init__(self, **kwargs):
        for old, new in self.deprecated_fields.items():
            if old in kwargs:
                warnings.warn(
                    f"{type(self).__name__}: {old!r} is deprecated and will be removed in the next release; it is read "
                    f"as {new!r}",
                    FutureWarning,
                    stacklevel=3,
                )
                self._rename_deprecated(old, new, kwargs.pop(old))
        # JSON round trips turn tuples into lists; keep one canonical type.
        self.image_size = tuple(int(v) for v in self.image_size)
        self.similarity_range = tuple(float(v) for v in self.similarity_range)
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        if self.training_defaults is None and self.preset in self.preset_names():
            self.training_defaults = self.preset_data(self.preset).get("training")
        super().__post_init__(**kwargs)
        self.check()

    def _rename_deprecated(self, old: str, new: str, value: Any) -> None:
        """Store the value of a deprecated field under its new name (methods override for non-trivial mappings)."""
        setattr(self, new, value)

    # ------------------------------------------------------------------ validation
    def validate_image_size(self):
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"image_size must be (height, width) with positive values, got {self.image_size}")

    def validate_tbps_fields(self):
        if self.max_text_length < 2:
            raise ValueError(f"max_text_length must be >= 2 (special tokens included), got {self.max_text_length}")
        if self.num_identities < 0:
            raise ValueError(f"num_identities must be >= 0, got {self.num_identities}")
        if self.backbone_checkpoints is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.backbone_checkpoints.items()
        ):
            raise ValueError(f"backbone_checkpoints must map role names to checkpoint names, got {self.backbone_checkpoints}")
        for key, factor in (self.lr_multipliers or {}).items():
            if not isinstance(factor, (int, float)) or factor < 0:
                raise ValueError(f"lr_multipliers[{key!r}] must be a number >= 0, got {factor!r}")

    def check(self) -> None:
        """Run this config's ``validate_*`` checks, raising ``ValueError`` (``save_pretrained`` runs them again
        through ``validate()``, so a config changed after it was built cannot be saved broken)."""
        for name in sorted(dir(type(self))):
            if name.startswith("validate_") and not hasattr(PreTrainedConfig, name):
                getattr(self, name)()

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("training_defaults", None)  # the recipe lives in the preset file, not in config.json
        return output

    # ------------------------------------------------------------------ learning rates
    def lr_multiplier(self, parameter_name: str) -> tuple[str, float]:
        """``(key, factor)``: the ``lr_multipliers`` entry that sets a parameter's learning-rate factor
        (``("default", 1.0)`` when none matches)."""
        for key, factor in (self.lr_multipliers or {}).items():
            prefix = key if key.endswith(".") else key + "."
            if parameter_name.startswith(prefix) or fnmatch.fnmatchcase(parameter_name, key):
                return key, float(factor)
        return "default", 1.0

    # ------------------------------------------------------------------ presets
    @classmethod
    def _preset_dir(cls) -> Path | None:
        module = sys.modules.get(cls.__module__)
        folder = Path(module.__file__).parent / "presets" if module is not None and getattr(module, "__file__", None) else None
        return folder if folder is not None and folder.is_dir() else None

    @classmethod
    def preset_names(cls) -> list[str]:
        folder = cls._preset_dir()
        names = set(cls.presets) | ({p.stem for p in folder.glob("*.json")} if folder else set())
        return sorted(names)

    @classmethod
    def preset_data(cls, name: str) -> dict[str, Any]:
        """``{"config": {...}, "training": {...}}`` of a preset, as a fresh copy (changing it changes nothing else)."""
        folder = cls._preset_dir()
        if folder is not None and (folder / f"{name}.json").is_file():
            return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        if name in cls.presets:
            data = copy.deepcopy(cls.presets[name])
            if "config" not in data:  # the first release's layout: config fields with training_defaults inside
                data = {"config": data, "training": data.pop("training_defaults", None)}
            return data
        raise ValueError(
            f"Unknown preset {name!r} for {cls.model_type!r}; valid presets: {', '.join(cls.preset_names())}"
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TBPSConfig":
        """Build the config of a named preset (``"tiny"`` or one of the paper's), with optional overrides of any
        field. ``training_defaults`` given here update the preset's recipe key by key."""
        data = cls.preset_data(name)
        values = dict(data.get("config", {}))
        training = data.get("training")
        if overrides.get("training_defaults") is not None:
            training = {**(training or {}), **overrides.pop("training_defaults")}
        values.update(overrides)
        values.setdefault("preset", name)
        values["training_defaults"] = training
        return cls(**values)
