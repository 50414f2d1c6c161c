"""Optimizer and learning-rate schedule of a run: the paper's settings from ``config.training_defaults``, with
command-line values (zero included) taking precedence."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch

from .arguments import TrainingArguments, _json_object
from .errors import TrainingError

# Schedules that need a metric or an external signal per step: they do not fit a loop stepped once per update.
_UNSUPPORTED_SCHEDULERS = {"reduce_lr_on_plateau", "greedy"}


def scheduler_names() -> list[str]:
    from transformers import SchedulerType

    return ["multistep"] + [s.value for s in SchedulerType if s.value not in _UNSUPPORTED_SCHEDULERS]


def _pick(value, defaults: dict, key: str, fallback):
    """The command-line value when given (0 is a value), else the preset's, else ``fallback``."""
    if value is not None:
        return value
    return defaults.get(key, fallback)


@dataclass
class Hyperparameters:
    """The values a run trains with, resolved once from the arguments and the preset."""

    batch_size: int
    images_per_identity: int
    learning_rate: float
    weight_decay: float
    scheduler: str
    warmup_epochs: float
    epochs: float
    preset_epochs: float
    max_grad_norm: float
    optimizer: str
    scheduler_kwargs: dict

    @classmethod
    def resolve(cls, args: TrainingArguments, defaults: dict) -> "Hyperparameters":
        hp = cls(
            batch_size=_pick(args.per_device_train_batch_size, defaults, "per_device_train_batch_size", 32),
            images_per_identity=_pick(args.images_per_identity, defaults, "images_per_identity", 2),
            learning_rate=_pick(args.learning_rate, defaults, "learning_rate", 1e-4),
            weight_decay=_pick(args.weight_decay, defaults, "weight_decay", 0.0),
            scheduler=_pick(args.lr_scheduler_type, defaults, "lr_scheduler_type", "cosine"),
            warmup_epochs=_pick(args.warmup_epochs, defaults, "warmup_epochs", 0.0),
            epochs=_pick(args.num_train_epochs, defaults, "num_train_epochs", 10),
            preset_epochs=defaults.get("num_train_epochs", 10),
            max_grad_norm=_pick(args.max_grad_norm, defaults, "max_grad_norm", 0.0),
            optimizer=defaults.get("optimizer", "adamw"),
            scheduler_kwargs=(
                _json_object(args.lr_scheduler_kwargs, "--lr_scheduler_kwargs")
                if args.lr_scheduler_kwargs is not None
                else dict(defaults.get("lr_scheduler_kwargs") or {})
            ),
        )
        if hp.scheduler not in scheduler_names():
            raise ValueError(f"--lr_scheduler_type {hp.scheduler!r} is not one of: {', '.join(scheduler_names())}")
        return hp


def build_optimizer(model, hp: Hyperparameters, defaults: dict) -> torch.optim.Optimizer:
    """The preset's optimizer over the model's parameter groups (the paper's per-module learning rates)."""
    groups = []
    for group in model.optimizer_param_groups(hp.learning_rate, hp.weight_decay):
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            groups.append({**group, "params": params})
    if not groups:
        raise TrainingError("the model has no trainable parameters")
    if hp.optimizer == "adam":
        return torch.optim.Adam(groups, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    if hp.optimizer == "sgd":
        momentum = defaults.get("momentum", 0.9)
        return torch.optim.SGD(groups, lr=hp.learning_rate, momentum=momentum, weight_decay=hp.weight_decay)
    raise ValueError(f"unknown optimizer {hp.optimizer!r} in training_defaults (adam, adamw or sgd)")


def _warmup_multistep(step: int, warmup_steps: int, milestones: list[int], gamma: float) -> float:
    if step < warmup_steps:
        return step / max(1, warmup_steps)  # the same ramp as transformers' warm-up schedules
    return gamma ** sum(step >= m for m in milestones)


def build_scheduler(
    optimizer: torch.optim.Optimizer, hp: Hyperparameters, defaults: dict, total_steps: int, steps_per_epoch: int
):
    """transformers' scheduler of that name, or the papers' multistep (linear warm-up, then ×gamma at each
    milestone; milestones are given in epochs of the paper's schedule and keep their relative position when the run
    is shorter or longer). Stepped once per optimizer step."""
    warmup_steps = min(total_steps, round(hp.warmup_epochs * steps_per_epoch))
    if hp.scheduler == "multistep":
        milestones = [round(m / hp.preset_epochs * total_steps) for m in defaults.get("milestones", [])]
        factor = partial(
            _warmup_multistep, warmup_steps=warmup_steps, milestones=milestones, gamma=defaults.get("gamma", 0.1)
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    from transformers import get_scheduler

    try:
        return get_scheduler(
            hp.scheduler,
            optimizer,
            num_warmup_steps=warmup_steps,
            num_training_steps=total_steps,
            scheduler_specific_kwargs=hp.scheduler_kwargs or None,
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"--lr_scheduler_type {hp.scheduler} with --lr_scheduler_kwargs {hp.scheduler_kwargs}: {err}") from None


def total_training_steps(args: TrainingArguments, hp: Hyperparameters, steps_per_epoch: int) -> int:
    by_epochs = math.ceil(hp.epochs * steps_per_epoch)
    total = args.max_steps if args.max_steps > 0 else by_epochs
    return min(total, by_epochs) if args.max_steps_cap_epochs else total
