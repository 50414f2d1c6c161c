"""Entry for `datasets` versions that still run loading scripts: `load_dataset("dataset_scripts/ufine6926", data_dir=...)`.

All logic lives in the package (`pip install tbps-hf`); with `datasets` >= 4 (no loading scripts) use
`tbps_hf.data.load_tbps_dataset("ufine6926", data_dir=...)` instead.
"""

from tbps_hf.data.builders.ufine6926 import Ufine6926 as _Ufine6926


class Ufine6926(_Ufine6926):
    """The package's builder, re-declared here so the script loader finds a builder class in this module."""
