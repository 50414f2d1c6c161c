"""Cost of evaluation during training on the quickstart settings: the same run (IVT tiny, ProcPEDES as the quickstart
builds it, the preset's batch, seed 0) with `--eval_strategy epoch` and with `no`, side by side.

    .venv/bin/python benchmarks/training_eval_cost.py --epochs 2

Steps/s is optimizer steps over the training loop's wall time, evaluations included (the data set build, the model
build and the final evaluation are outside the loop). The evaluation is the test split (the quickstart's). On a busy
machine the two runs see different loads; the eval-epoch run's own share (evaluation seconds / loop seconds, both
measured in that run) is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch


def run(strategy: str, args, root: Path) -> dict:
    from accelerate.state import AcceleratorState, GradientState

    from tbps_hf.training import DataArguments, ModelArguments, TrainingArguments, train

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    out = root / strategy
    summary = train(
        ModelArguments(model=args.model, preset="tiny"),
        DataArguments(dataset="procpedes", cache_dir=str(root / "cache"), eval_split="test"),
        TrainingArguments(output_dir=str(out), seed=0, num_train_epochs=args.epochs, eval_strategy=strategy,
                          save_strategy="no", report_to="none", logging_steps=1000),
    )
    return {
        "eval_strategy": strategy,
        "steps": summary["global_step"],
        "evaluations": len(summary["eval_history"]),
        "train_seconds": summary["train_seconds"],
        "steps_per_second": round(summary["global_step"] / summary["train_seconds"], 3),
        "eval_seconds": round(sum(e["seconds"] for e in summary["eval_history"]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ivt")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    import tbps_hf  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(strategy, args, Path(tmp)) for strategy in ("no", "epoch")]
    base = rows[0]["steps_per_second"]
    print(f"{args.model} tiny, {args.epochs} epochs, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    print("| eval_strategy | steps | evaluations | loop seconds | of which evaluation | steps/s | relative |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        share = row["eval_seconds"] / row["train_seconds"]
        print(f"| {row['eval_strategy']} | {row['steps']} | {row['evaluations']} | {row['train_seconds']:.1f} | "
              f"{row['eval_seconds']:.1f} s ({100 * share:.1f} %) | {row['steps_per_second']:.3f} | "
              f"{row['steps_per_second'] / base:.3f}× |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
