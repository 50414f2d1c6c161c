"""Pretrained starts: build a fresh paper preset from the checkpoints its config names.

Every config has ``backbone_checkpoints`` (role → hub id or local folder, ``None`` in ``tiny`` presets); the roles
are the keyword names of ``XModel.from_backbones`` (IVT ``vit`` / ``bert``, PCC ``image`` / ``text``, CFAM ``clip``).
The training loop calls, in this order::

    checkpoints = check_backbones(config, overrides)          # before any data work: fail fast, one clear line
    config = prepare_config(method, config, overrides)        # tokenizer_name ← the text checkpoint
    processor = method.processor_class.from_config(config, captions=...)
    model = build_model(method, config, overrides, init_backbones)

A checkpoint "can be had" when it is a local folder holding a ``config.json`` (or a local file, for roles that take
an original-layout checkpoint), a hub id whose ``config.json`` is in the local hub cache, or — unless
``HF_HUB_OFFLINE`` is set — a hub id the hub answers for.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import TBPSUserError


class BackboneUnavailableError(TBPSUserError, ValueError):
    """A pretrained checkpoint named by the config or ``--backbone_checkpoints`` cannot be had."""


class BackboneRoleError(TBPSUserError, ValueError):
    """``--backbone_checkpoints`` names a role the method does not have (or gives it no checkpoint)."""


# The role whose checkpoint carries the tokenizer, in order of preference (a CLIP checkpoint carries both towers;
# LAIP's `albef` role names no tokenizer, so its config's `tokenizer_name` stays).
TEXT_ROLES: tuple[str, ...] = ("text", "bert", "clip")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def backbone_roles(method: Any) -> tuple[str, ...]:
    """The ``from_backbones`` roles of ``method`` (a registry entry: ``MethodInfo.backbone_roles``)."""
    return tuple(method.info.backbone_roles)


def resolve_backbones(method: Any, config: Any, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The checkpoints to load: ``config.backbone_checkpoints`` with ``overrides`` replacing or adding entries.

    Raises `BackboneRoleError` for an override role the method does not have, listing the valid ones.
    """
    roles = backbone_roles(method)
    merged = dict(getattr(config, "backbone_checkpoints", None) or {})
    for role, value in (overrides or {}).items():
        if role not in roles:
            raise BackboneRoleError(
                f"--backbone_checkpoints: {method.name} has no backbone role {role!r}; valid roles: {', '.join(roles)}"
            )
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise BackboneRoleError(f"--backbone_checkpoints: role {role!r} needs a hub id or a local folder, got {value!r}")
        merged[role] = str(value)
    return merged


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _looks_local(name: str) -> bool:
    # hub ids are "name" or "org/name"; anything else (./x, /x, a/b/c, a file name) can only be a path
    return name.startswith((".", "/", "~")) or not _HUB_ID.match(name)


def _cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def _unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot be loaded, or ``None`` when it can."""
    path = Path(name).expanduser()
    if path.is_file():
        return None  # an original-layout checkpoint file (LAIP's ALBEF .pth); its converter reads it
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"the folder {path} has no config.json"
    if _looks_local(name):
        return f"no such folder {path}"
    if _cached(name, "config.json"):
        return None
    if _offline():
        return "no such local folder, and not in the local hub cache (HF_HUB_OFFLINE is set)"
    try:
        from huggingface_hub import file_exists

        if file_exists(name, "config.json"):
            return None
        return "the hub has no such model (or it has no config.json)"
    except Exception as err:  # noqa: BLE001 - any network failure means "cannot be had"; say which
        return f"the hub cannot be reached ({type(err).__name__})"


def check_backbones(config: Any, overrides: Mapping[str, str] | None = None, method: Any = None) -> dict[str, str]:
    """Check that every checkpoint the run would load can be had, before any data work.

    Returns the resolved role → checkpoint mapping (empty for presets without ``backbone_checkpoints``).
    Raises `BackboneUnavailableError` naming the role, the id, and the two ways out.
    """
    if method is None:
        from .models import method_for_config

        method = method_for_config(config)
    checkpoints = resolve_backbones(method, config, overrides)
    for role, name in checkpoints.items():
        reason = _unavailable_reason(name)
        if reason is not None:
            hint = dict(getattr(method.info, "backbone_hints", None) or {}).get(role)
            raise BackboneUnavailableError(
                f"{method.name} backbone {role!r} = {name!r} cannot be loaded: {reason}. "
                + (f"{hint}; then p" if hint else "P")
                + f"oint it at a local folder with --backbone_checkpoints '{{\"{role}\": \"/path/to/{role}\"}}', "
                "or train from random weights with --init_backbones false"
            )
    # the processor needs the tokenizer too: the text checkpoint's, else the config's (checked the same way)
    tokenizer = text_checkpoint(checkpoints) or (getattr(config, "tokenizer_name", None) if checkpoints else None)
    if tokenizer and not _has_tokenizer(tokenizer):
        raise BackboneUnavailableError(
            f"{method.name}: the tokenizer {tokenizer!r} cannot be loaded (no tokenizer files there or in the local hub "
            "cache). Use a text checkpoint folder that holds its tokenizer, or set --config_overrides "
            "'{\"tokenizer_name\": \"/path/to/tokenizer\"}'"
        )
    return checkpoints


def _has_tokenizer(name: str) -> bool:
    path = Path(name).expanduser()
    if path.is_dir():
        return any((path / f).is_file() for f in _TOKENIZER_FILES)
    if path.exists() or _looks_local(name):
        return False
    return any(_cached(name, f) for f in _TOKENIZER_FILES) or not _offline()


def text_checkpoint(checkpoints: Mapping[str, str]) -> str | None:
    """The checkpoint whose tokenizer the processor uses: the text role's, when it ships a tokenizer."""
    for role in TEXT_ROLES:
        if role in checkpoints and _has_tokenizer(checkpoints[role]):
            return checkpoints[role]
    return None


def prepare_config(method: Any, config: Any, overrides: Mapping[str, str] | None = None, init_backbones: bool = True):
    """A copy of ``config`` ready for a pretrained start: ``backbone_checkpoints`` holds the resolved mapping and
    ``tokenizer_name`` the text checkpoint (so the processor built from it tokenizes as the text tower expects).

    With ``init_backbones=False`` the config is returned unchanged apart from ``backbone_checkpoints = None``
    (the model will not come from them, and its card must not say so).
    """
    config = copy.deepcopy(config)
    checkpoints = resolve_backbones(method, config, overrides)
    if not init_backbones:
        if hasattr(config, "backbone_checkpoints"):
            config.backbone_checkpoints = None
        return config
    if hasattr(config, "backbone_checkpoints") or checkpoints:
        config.backbone_checkpoints = checkpoints or None
    tokenizer = text_checkpoint(checkpoints)
    if tokenizer is not None:
        config.tokenizer_name = tokenizer
    return config


def build_model(method: Any, config: Any, overrides: Mapping[str, str] | None = None, init_backbones: bool = True):
    """A fresh model for ``config``: towers from its backbone checkpoints (``overrides`` replace entries), the
    method's new layers freshly initialized.

    - no checkpoints (``tiny`` presets): ``method.model_class(config)``, random init, no warning;
    - ``init_backbones=False``: random init on purpose, with a warning naming what is skipped;
    - otherwise every checkpoint is checked (`check_backbones`) and ``from_backbones(config=..., **checkpoints)``
      loads them; tower sizes come from the checkpoints.
    """
    checkpoints = resolve_backbones(method, config, overrides)
    config = prepare_config(method, config, overrides, init_backbones=init_backbones)
    if not checkpoints:
        return method.model_class(config)
    if not init_backbones:
        warnings.warn(
            f"{method.name}: --init_backbones false: training from random weights instead of the pretrained "
            f"{', '.join(f'{r}={n}' for r, n in checkpoints.items())}; expect far lower accuracy than the paper's",
            UserWarning,
            stacklevel=2,
        )
        return method.model_class(config)
    check_backbones(config, method=method)
    return method.model_class.from_backbones(config=config, **checkpoints)


__all__ = [
    "BackboneRoleError",
    "BackboneUnavailableError",
    "backbone_roles",
    "build_model",
    "check_backbones",
    "prepare_config",
    "resolve_backbones",
    "text_checkpoint",
]
