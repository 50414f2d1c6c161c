"""ProcPEDES: procedurally rendered pedestrians with exact attribute labels, the embedded default TBPS dataset.

``load_procpedes(cache_dir=None, **options) -> DatasetDict`` builds (once, cached by options) and loads the splits
``train``, ``test`` and ``test_3c``. See ``docs/procpedes.md``.
"""

from .attributes import ATTRIBUTE_KEYS, VIEWS, attribute_difference, visible_attributes
from .captions import ATTRIBUTE_VOCABULARY, GRANULARITIES, STYLES, sample_fine_captions, write_caption

__all__ = [
    "ATTRIBUTE_KEYS",
    "ATTRIBUTE_VOCABULARY",
    "GRANULARITIES",
    "STYLES",
    "VIEWS",
    "ProcPedesBuilder",
    "ProcPedesConfig",
    "attribute_difference",
    "load_procpedes",
    "sample_fine_captions",
    "visible_attributes",
    "write_caption",
]


def __getattr__(name):
    # The builder imports `datasets`; keep `sample_fine_captions` importable without paying for it.
    if name in ("load_procpedes", "ProcPedesBuilder", "ProcPedesConfig", "DEFAULT_OPTIONS"):
        from . import builder

        return getattr(builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
