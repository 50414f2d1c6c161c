"""Method registry: each method's package registers itself with the Auto classes on import."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from transformers import AutoConfig, AutoModel, AutoProcessor


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    model_class: type
    processor_class: type


METHODS: dict[str, Method] = {}

# Modules under tbps_hf.models that define a method; each calls `register_method` when imported.
METHOD_MODULES: tuple[str, ...] = ("cfam", "pcc", "ivt")


def register_method(name: str, config_class: type, model_class: type, processor_class: type) -> None:
    """Register a method with `AutoConfig` / `AutoModel` / `AutoProcessor` (no `trust_remote_code` needed)."""
    if name in METHODS:
        return
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoProcessor.register(config_class, processor_class, exist_ok=True)
    METHODS[name] = Method(name, config_class, model_class, processor_class)


def load_all() -> dict[str, Method]:
    for module in METHOD_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return METHODS


def get_method(name: str) -> Method:
    load_all()
    if name not in METHODS:
        raise ValueError(f"Unknown model {name!r}; valid models: {', '.join(sorted(METHODS)) or '(none registered)'}")
    return METHODS[name]
