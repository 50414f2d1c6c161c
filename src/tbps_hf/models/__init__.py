"""Method registry: the one place any code (CLI help, quickstart, model cards, benchmarks, tests) learns which
methods exist and what they are.

A method is a sub-package of ``tbps_hf.models`` whose ``__init__.py`` calls :func:`register_method` with its config,
model and processor classes and a :class:`MethodInfo`; :func:`discover` imports every sub-package, so adding a
method is adding its folder (no list to edit). :func:`method_names` lists the folders without importing them (the
CLI's help stays fast). A method defined elsewhere (a plug-in, a test) registers the same way.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["METHODS", "Method", "MethodInfo", "discover", "get_method", "load_all", "method_names", "register_method"]


@dataclass(frozen=True)
class MethodInfo:
    """What a method is, for people and tools (model cards, CLI help, mSD's score normalization).

    title: short display name ("IVT"). paper: full title, venue and year. citation: BibTeX.
    architecture: one line describing the model. similarity_range: the range of ``model.similarity`` for its
    paper presets. backbone_roles: keyword names of ``from_backbones`` (the keys of
    ``config.backbone_checkpoints``). is_cross_encoder: scores need a joint pass (two-stage retrieval with
    ``rerank``). loss_terms: the ``loss_<term>`` fields a training forward fills with the defaults of the
    ``tiny`` preset. backbone_hints: role → how to obtain a checkpoint that is not on the hub as such (added to
    the error when it cannot be had).
    """

    title: str
    paper: str = ""
    citation: str = ""
    architecture: str = ""
    similarity_range: tuple[float, float] = (-1.0, 1.0)
    backbone_roles: tuple[str, ...] = ()
    is_cross_encoder: bool = False
    loss_terms: tuple[str, ...] = ()
    backbone_hints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    model_class: type
    processor_class: type
    info: MethodInfo = field(default_factory=lambda: MethodInfo(title=""))

    @property
    def presets(self) -> list[str]:
        return self.config_class.preset_names()

    @property
    def title(self) -> str:
        return self.info.title or self.name.upper()

    @property
    def backbone_roles(self) -> tuple[str, ...]:
        return self.info.backbone_roles

    @property
    def is_cross_encoder(self) -> bool:
        return self.info.is_cross_encoder


METHODS: dict[str, Method] = {}


def register_method(
    name: str, config_class: type, model_class: type, processor_class: type, info: MethodInfo | None = None
) -> Method:
    """Register a method with `AutoConfig` / `AutoModel` / `AutoProcessor` (no `trust_remote_code` needed) and
    the registry. Registering the same name again replaces the entry (a reloaded module keeps working)."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoProcessor.register(config_class, processor_class, exist_ok=True)
    method = Method(name, config_class, model_class, processor_class, info or MethodInfo(title=name.upper()))
    METHODS[name] = method
    return method


def _packaged_names() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_")]


def method_names() -> list[str]:
    """Names of every method: the sub-packages of ``tbps_hf.models`` (found without importing them) and any method
    registered from elsewhere."""
    return sorted(set(_packaged_names()) | set(METHODS))


def discover() -> dict[str, Method]:
    """Import every method package under ``tbps_hf.models`` (each registers itself); returns `METHODS`."""
    for name in _packaged_names():
        importlib.import_module(f"{__name__}.{name}")
    return METHODS


load_all = discover  # the name of the first release


def get_method(name: str) -> Method:
    """The registry entry of ``name``; an unknown name raises a ValueError listing the valid ones."""
    if name not in METHODS and name in _packaged_names():
        importlib.import_module(f"{__name__}.{name}")
    if name not in METHODS:
        raise ValueError(f"Unknown model {name!r}; valid models: {', '.join(method_names()) or '(none registered)'}")
    return METHODS[name]


def backbone_roles_of(model_class: type) -> tuple[str, ...]:
    """The backbone roles of the registered method whose model class is (a base of) ``model_class``."""
    discover()
    for method in METHODS.values():
        if issubclass(model_class, method.model_class):
            return method.info.backbone_roles
    return ()


def method_for_config(config) -> Method:
    """The registry entry whose config class ``config`` is (or derives from)."""
    discover()
    for method in METHODS.values():
        if type(config) is method.config_class:
            return method
    for method in METHODS.values():
        if isinstance(config, method.config_class):
            return method
    raise ValueError(f"no registered method uses config class {type(config).__name__}")
