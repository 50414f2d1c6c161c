"""Register tbps-hf's methods with transformers' Auto classes the first time transformers looks one up.

``import tbps_hf`` must make ``AutoModel.from_pretrained(folder)`` work, yet must not import torch and transformers
(seconds) so that ``tbps --help`` stays under a second. transformers keeps externally registered classes in the
plain dict ``_extra_content`` of each Auto mapping (``AutoConfig.register`` writes there); we give the three
mappings we register into (config, model, processor) a dict that imports ``tbps_hf.models`` — whose packages call
``register_method`` — on its first read. When transformers' Auto modules are not imported yet, a meta-path hook
swaps the dict in right after they load.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading

# module → attribute holding the Auto mapping we register into
_MAPPINGS = {
    "transformers.models.auto.configuration_auto": "CONFIG_MAPPING",
    "transformers.models.auto.modeling_auto": "MODEL_MAPPING",
    "transformers.models.auto.processing_auto": "PROCESSOR_MAPPING",
}
_lock = threading.RLock()
_pending = True


def register_now() -> None:
    """Import every method package (each registers itself). Idempotent."""
    global _pending
    with _lock:
        if not _pending:
            return
        _pending = False
        from .models import discover

        discover()


class _RegisteringDict(dict):
    """``_extra_content`` that registers the methods before its first read (writes are registrations)."""

    def _ready(self):
        if _pending:
            register_now()
        return self

    def __contains__(self, key):
        return dict.__contains__(self._ready(), key)

    def __getitem__(self, key):
        return dict.__getitem__(self._ready(), key)

    def __iter__(self):
        return dict.__iter__(self._ready())

    def __len__(self):
        return dict.__len__(self._ready())

    def get(self, key, default=None):
        return dict.get(self._ready(), key, default)

    def keys(self):
        return dict.keys(self._ready())

    def values(self):
        return dict.values(self._ready())

    def items(self):
        return dict.items(self._ready())


def _wrap(module) -> None:
    mapping = getattr(module, _MAPPINGS[module.__name__], None)
    if mapping is not None and not isinstance(mapping._extra_content, _RegisteringDict):
        mapping._extra_content = _RegisteringDict(mapping._extra_content)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps the Auto mappings as soon as their modules have run."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _MAPPINGS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _WrappingLoader(spec.loader)
                return spec
        return None


class _WrappingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _wrap(module)

    def __getattr__(self, name):  # get_source, is_package, … of the wrapped loader
        return getattr(self.loader, name)


def install() -> None:
    """Make the Auto classes register tbps-hf's methods on first lookup (now, for the modules already imported)."""
    for name in _MAPPINGS:
        if name in sys.modules:
            _wrap(sys.modules[name])
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
