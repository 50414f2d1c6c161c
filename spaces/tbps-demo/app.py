"""Hugging Face Space entry point: text-based person search over a folder of person crops.

    python spaces/tbps-demo/app.py --model runs/ivt --gallery /data/crops [--index_dir idx] [--top_k 10] [--port 7860]

On a Space, set the variables TBPS_MODEL (a model folder or a downloaded snapshot) and TBPS_GALLERY (the crops);
the app logic lives in ``tbps_hf.demo`` (also available as ``tbps demo``).
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tbps_hf.demo import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if os.environ.get("SYSTEM") == "spaces" and "--host" not in argv:
        argv += ["--host", "0.0.0.0"]  # a Space serves on all interfaces
    sys.exit(main(argv))
