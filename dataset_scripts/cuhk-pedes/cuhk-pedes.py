"""Entry for `datasets` versions that still run loading scripts: `load_dataset("dataset_scripts/cuhk-pedes", data_dir=...)`.

All logic lives in the package (`pip install tbps-hf`); with `datasets` >= 4 (no loading scripts) use
`tbps_hf.data.load_tbps_dataset("cuhk-pedes", data_dir=...)` instead.
"""

from tbps_hf.data.builders.cuhk_pedes import CuhkPedes as _CuhkPedes


class CuhkPedes(_CuhkPedes):
    """The package's builder, re-declared here so the script loader finds a builder class in this module."""
