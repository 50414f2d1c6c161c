"""Training on `accelerate`: arguments, the identity-aware sampler and the loop."""

from .arguments import DataArguments, ModelArguments, TrainingArguments, parse_args
from .sampler import IdentityBatchSampler
from .trainer import TrainingError, train

__all__ = [
    "DataArguments",
    "ModelArguments",
    "TrainingArguments",
    "parse_args",
    "IdentityBatchSampler",
    "TrainingError",
    "train",
    "main",
]


def main(argv: list[str] | None = None) -> int:
    """Entry of `train.py` and `tbps train`."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..errors import report_user_errors

    model_args, data_args, training_args = parse_args(argv)
    summary = report_user_errors("tbps train", train, model_args, data_args, training_args)
    if isinstance(summary, int):  # the error was reported
        return summary
    if summary.get("metrics"):
        import json

        print(json.dumps(summary, indent=2))
    return 0
