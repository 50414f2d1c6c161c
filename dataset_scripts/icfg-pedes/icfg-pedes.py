"""Entry for `datasets` versions that still run loading scripts: `load_dataset("dataset_scripts/icfg-pedes", data_dir=...)`.

All logic lives in the package (`pip install tbps-hf`); with `datasets` >= 4 (no loading scripts) use
`tbps_hf.data.load_tbps_dataset("icfg-pedes", data_dir=...)` instead.
"""

from tbps_hf.data.builders.icfg_pedes import IcfgPedes as _IcfgPedes


class IcfgPedes(_IcfgPedes):
    """The package's builder, re-declared here so the script loader finds a builder class in this module."""
