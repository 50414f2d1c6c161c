"""Entry for `datasets` versions that still run loading scripts: `load_dataset("dataset_scripts/ufine3c", data_dir=...)`.

All logic lives in the package (`pip install tbps-hf`); with `datasets` >= 4 (no loading scripts) use
`tbps_hf.data.load_tbps_dataset("ufine3c", data_dir=...)` instead.
"""

from tbps_hf.data.builders.ufine3c import Ufine3c as _Ufine3c


class Ufine3c(_Ufine3c):
    """The package's builder, re-declared here so the script loader finds a builder class in this module."""
