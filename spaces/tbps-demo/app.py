"""Hugging Face Space entry point: text-based person search, judged and explained.

    python spaces/tbps-demo/app.py                      # ProcPEDES test + test_3c with runs/quickstart/model
    python spaces/tbps-demo/app.py --model org/name --gallery /data/crops --index HNSW32 --index_dir idx

Every argument is optional and has a Space variable: TBPS_MODEL (a folder or hub id), TBPS_GALLERY, TBPS_DATASET,
TBPS_DATA_DIR, TBPS_INDEX, TBPS_INDEX_DIR. On a Space with no model configured, the app trains the quickstart model
on first start (about 10 minutes on the free CPU) instead of showing an empty page. The app logic lives in
``tbps_hf.demo`` (also available as ``tbps demo``).
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tbps_hf.demo import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if os.environ.get("SYSTEM") == "spaces":  # set by Hugging Face Spaces
        if "--host" not in argv:
            argv += ["--host", "0.0.0.0"]  # a Space serves on all interfaces
        if "--model" not in argv and not os.environ.get("TBPS_MODEL"):
            argv += ["--train_if_missing"]  # runs as uploaded: nothing to configure
    sys.exit(main(argv))
