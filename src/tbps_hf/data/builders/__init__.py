"""Benchmark builders, one module per benchmark (the module name is the builder's cache name)."""

from .base import BadImageError, TBPSBenchmarkBuilder, TBPSBuilderConfig
from .cuhk_pedes import CuhkPedes
from .icfg_pedes import IcfgPedes
from .rstpreid import Rstpreid
from .ufine3c import Ufine3c
from .ufine6926 import Ufine6926

BUILDERS: dict[str, type[TBPSBenchmarkBuilder]] = {
    cls.DATASET_NAME: cls for cls in (CuhkPedes, IcfgPedes, Rstpreid, Ufine6926, Ufine3c)
}

__all__ = [
    "BUILDERS", "BadImageError", "CuhkPedes", "IcfgPedes", "Rstpreid", "TBPSBenchmarkBuilder", "TBPSBuilderConfig",
    "Ufine3c", "Ufine6926",
]
