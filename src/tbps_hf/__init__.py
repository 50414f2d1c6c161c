"""tbps-hf: text-based person search on the Hugging Face stack.

Importing the package makes every method (the packages under ``tbps_hf.models``) known to ``AutoConfig``,
``AutoModel`` and ``AutoProcessor``, so ``AutoModel.from_pretrained(folder)`` works without ``trust_remote_code``.
The methods are imported on transformers' first Auto lookup (or any attribute below), not by ``import tbps_hf``
itself, which keeps the ``tbps`` command fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._auto_registration import install as _install_auto_registration

try:
    __version__ = version("tbps-hf")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_install_auto_registration()

# public name → module that defines it (imported on first access, PEP 562)
_LAZY = {
    "TBPSConfig": "tbps_hf.configuration_utils",
    "TBPSPreTrainedModel": "tbps_hf.modeling_utils",
    "METHODS": "tbps_hf.models",
    "MethodInfo": "tbps_hf.models",
    "discover": "tbps_hf.models",
    "get_method": "tbps_hf.models",
    "load_all": "tbps_hf.models",
    "method_names": "tbps_hf.models",
    "register_method": "tbps_hf.models",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tbps_hf' has no attribute {name!r}")
    if name == "METHODS":  # the full registry, not the part imported so far
        from ._auto_registration import register_now

        register_now()
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["__version__", *_LAZY]
