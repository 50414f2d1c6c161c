"""Training on `accelerate`: arguments, the identity-aware sampler and the loop (building, optimization,
checkpointing, trainer)."""

from .arguments import DataArguments, ModelArguments, TrainingArguments, parse_args
from .errors import TrainingError, TrainingInterrupted
from .sampler import IdentityBatchSampler
from .trainer import Trainer, train

__all__ = [
    "DataArguments",
    "ModelArguments",
    "TrainingArguments",
    "parse_args",
    "IdentityBatchSampler",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "train",
    "main",
]

PROG = "tbps train"


def _train_or_stop(model_args, data_args, training_args):
    """A SIGINT / SIGTERM stop is not an error: one line saying how to resume, exit status 128 + signal."""
    import os
    import sys

    try:
        return train(model_args, data_args, training_args)
    except TrainingInterrupted as stop:
        if os.environ.get("RANK", "0") == "0":  # every rank stops at the same step; one of them says so
            print(f"{PROG}: {stop}", file=sys.stderr)
        return 128 + stop.signum


def main(argv: list[str] | None = None) -> int:
    """Entry of `train.py` and `tbps train`."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..errors import report_user_errors

    model_args, data_args, training_args = parse_args(argv)
    summary = report_user_errors(PROG, _train_or_stop, model_args, data_args, training_args)
    if isinstance(summary, int):  # the error was reported
        return summary
    if summary.get("metrics"):
        import json

        print(json.dumps(summary, indent=2))
    return 0
