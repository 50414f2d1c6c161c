"""Training throughput of a tiny preset on CPU: 1 process vs 2 DDP processes (gloo), side by side in one run.

    .venv/bin/python benchmarks/training.py --model ivt --max_steps 30

Each run is a real `accelerate launch` of train.py on ProcPEDES; the figure is samples/s over the training loop
(data set build, model build and evaluation excluded), read from the run's run_summary.json. On a 2-core machine the
two processes share the same cores, so expect ≤ 1× — the point is that DDP works and what it costs here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(num_processes: int, args, out: Path, cache: Path) -> dict:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launch = [accelerate, "launch", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--multi_gpu", "--num_processes", "2"] if num_processes == 2 else ["--num_processes", "1"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // num_processes))}
    cmd = launch + [
        str(ROOT / "train.py"),
        "--model", args.model,
        "--preset", "tiny",
        "--dataset", "procpedes",
        "--cache_dir", str(cache),
        "--output_dir", str(out),
        "--max_steps", str(args.max_steps),
        "--per_device_train_batch_size", str(args.batch_size),
        "--eval_split", "none",
        "--report_to", "none",
        "--logging_steps", "1000",
    ]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads((out / "run_summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ivt")
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32, help="per process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {n: run(n, args, tmp / f"p{n}", tmp / "cache") for n in (1, 2)}
    one, two = results[1], results[2]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch threads split between processes")
    print(f"model={args.model} preset=tiny batch/process={args.batch_size} steps={args.max_steps}")
    for n, r in results.items():
        print(f"  {n} process(es): world_size={r['world_size']}  {r['train_samples_per_second']:.1f} samples/s  ({r['train_seconds']:.1f} s)")
    print(f"  ratio 2 procs / 1 proc: {two['train_samples_per_second'] / one['train_samples_per_second']:.2f}x")


if __name__ == "__main__":
    main()
