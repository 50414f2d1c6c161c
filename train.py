#!/usr/bin/env python
"""Train a text-based person search model.

    accelerate launch train.py --model ivt --preset tiny --dataset procpedes --output_dir runs/ivt
    accelerate launch train.py --model cfam --preset clip-b16 --dataset ufine6926 --data_dir /data/UFine6926

Run `python train.py --help` for every argument; unset ones take the preset's paper defaults.
"""

import sys

import tbps_hf  # noqa: F401  (registers the models with the Auto classes)
from tbps_hf.training import main

if __name__ == "__main__":
    sys.exit(main())
