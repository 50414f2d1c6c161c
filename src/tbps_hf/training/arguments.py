"""Command-line arguments of `train.py` / `tbps train`, as `HfArgumentParser` dataclasses with Hugging Face names.

Arguments left at ``None`` take the preset's paper defaults (``config.training_defaults``); an explicit value,
zero included, is always used as given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class ModelArguments:
    model: str = field(default="ivt", metadata={"help": "Method to train: a registered model (`tbps --help` lists them)."})
    preset: str = field(
        default="tiny",
        metadata={"help": "Config preset of the method: 'tiny' (CPU, seconds) or a paper preset (e.g. ivt: base)."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from a saved tbps-hf model folder (or hub id) instead of a fresh preset."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": 'JSON of config fields to change on the preset, e.g. \'{"use_cmr": false}\' (pcc ablation) or '
            '\'{"share_decoder": false}\' (cfam). Only with a fresh preset, not with --model_name_or_path.'
        },
    )

    backbone_checkpoints: str | None = field(
        default=None,
        metadata={
            "help": 'JSON of backbone role → hub id or local folder for a fresh paper preset, e.g. '
            '\'{"vit": "/models/vit-base", "bert": "/models/bert-base-uncased"}\' (ivt); roles not given use the '
            "preset's."
        },
    )
    init_backbones: bool = field(
        default=True,
        metadata={"help": "Load the preset's pretrained backbones (false: random initialization, with a warning)."},
    )

    def parsed_config_overrides(self) -> dict:
        return _json_object(self.config_overrides, "--config_overrides")

    def parsed_backbone_checkpoints(self) -> dict:
        return _json_object(self.backbone_checkpoints, "--backbone_checkpoints")


@dataclass
class DataArguments:
    dataset: str = field(
        default="procpedes",
        metadata={"help": "Dataset name: procpedes (embedded, generated), cuhk-pedes, icfg-pedes, rstpreid, ufine6926."},
    )
    data_dir: str | None = field(default=None, metadata={"help": "Folder holding the dataset's files (not procpedes)."})
    annotation_file: str | None = field(default=None, metadata={"help": "Override the annotation file name."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder (default: HF_DATASETS_CACHE)."})
    dataset_options: str | None = field(
        default=None,
        metadata={"help": 'JSON of builder options, e.g. \'{"num_train_identities": 200}\' for procpedes.'},
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={
            "help": "Split evaluated during (--eval_strategy) and after training (default: 'validation' when the "
            "dataset has one, else 'test'; 'none' skips every evaluation)."
        },
    )

    def parsed_dataset_options(self) -> dict:
        return _json_object(self.dataset_options, "--dataset_options")


SCHEDULER_HELP = "'multistep' (the papers' step decay at the preset's milestones) or a transformers scheduler name"
EVAL_METRICS = ("R@1", "R@5", "R@10", "mAP", "mINP", "mSD")


@dataclass
class TrainingArguments:
    output_dir: str = field(default="runs/tbps", metadata={"help": "Where the model, checkpoints and logs are written."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into a non-empty --output_dir (its earlier model and checkpoints are replaced). Without "
            "it a used folder is refused unless --resume_from_checkpoint is given."
        },
    )
    num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs (default: the preset's)."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0: total optimizer steps, overriding num_train_epochs."})
    max_steps_cap_epochs: bool = field(
        default=False, metadata={"help": "Never train more than num_train_epochs, even when max_steps is larger."}
    )
    per_device_train_batch_size: int | None = field(
        default=None, metadata={"help": "Pairs per process per step (default: the preset's)."}
    )
    images_per_identity: int | None = field(
        default=None,
        metadata={"help": "Pairs of the same identity placed together in a batch by the identity sampler."},
    )
    learning_rate: float | None = field(default=None, metadata={"help": "Base learning rate (default: the preset's)."})
    weight_decay: float | None = field(default=None, metadata={"help": "Weight decay (default: the preset's)."})
    lr_scheduler_type: str | None = field(
        default=None,
        metadata={"help": SCHEDULER_HELP + " (cosine, linear, constant_with_warmup, …; default: the preset's)."},
    )
    lr_scheduler_kwargs: str | None = field(
        default=None,
        metadata={"help": 'JSON of the scheduler\'s own arguments, e.g. \'{"min_lr": 1e-6}\' for cosine_with_min_lr '
                  "(default: the preset's)."},
    )
    warmup_epochs: float | None = field(
        default=None, metadata={"help": "Linear warm-up length in epochs (default: the preset's)."}
    )
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip gradients to this norm (default: the preset's, else off; 0: off)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (less memory, ~30% slower)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of weights, data order and augmentation."})
    mixed_precision: str = field(default="no", metadata={"help": "no | fp16 | bf16 (passed to accelerate)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    logging_steps: int = field(default=10, metadata={"help": "Log losses every N optimizer steps."})
    eval_strategy: str = field(
        default="no",
        metadata={"help": "Evaluate --eval_split during training: no | steps (every --eval_steps) | epoch."},
    )
    eval_steps: int | None = field(default=None, metadata={"help": "Optimizer steps between evaluations (steps)."})
    load_best_model_at_end: bool = field(
        default=False,
        metadata={
            "help": "Save a checkpoint at every evaluation and end with the best one in --output_dir (its card "
            "names the step). Needs --eval_strategy steps or epoch."
        },
    )
    metric_for_best_model: str = field(
        default="R@1", metadata={"help": f"Metric that picks the best model: one of {', '.join(EVAL_METRICS)}."}
    )
    greater_is_better: bool = field(
        default=True, metadata={"help": "Whether a larger --metric_for_best_model is better (all of ours are)."}
    )
    save_strategy: str = field(
        default="steps",
        metadata={
            "help": "When to save a resumable checkpoint-N: no | steps (every --save_steps) | epoch. Ctrl-C / "
            "SIGTERM always save one before stopping."
        },
    )
    save_steps: int = field(default=500, metadata={"help": "Optimizer steps between checkpoints (save_strategy steps)."})
    save_total_limit: int | None = field(
        default=2,
        metadata={
            "help": "Keep at most this many of this run's checkpoints (the best one is always kept); -1 keeps all."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint-N folder to resume from exactly, or 'latest' (the newest in --output_dir). A "
            "resume that cannot be exact (other preset, batch size, seed, world size…) is refused."
        },
    )
    allow_inexact_resume: bool = field(
        default=False,
        metadata={"help": "Resume even when settings differ from the checkpoint's (warns; the run is not exact)."},
    )
    lora_r: int = field(default=0, metadata={"help": "If > 0: train PEFT LoRA adapters of this rank on attention."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    report_to: str = field(default="tensorboard", metadata={"help": "accelerate tracker: tensorboard | none."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size when encoding for evaluation."})
    ddp_timeout: int = field(
        default=1800,
        metadata={"help": "Seconds a process waits for the others (e.g. while the main one evaluates)."},
    )
    max_train_minutes: float | None = field(
        default=None, metadata={"help": "Stop training (and save) once this wall-clock time is spent."}
    )

    def __post_init__(self):
        for name in ("gradient_accumulation_steps", "logging_steps", "per_device_eval_batch_size", "ddp_timeout"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("per_device_train_batch_size", "images_per_identity", "num_train_epochs", "max_train_minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be positive, got {value}")
        for name in ("learning_rate", "weight_decay", "warmup_epochs", "max_grad_norm", "lora_r", "lora_dropout",
                     "dataloader_num_workers"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name} must be >= 0, got {value}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"--mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.report_to not in ("tensorboard", "none"):
            raise ValueError(f"--report_to must be tensorboard or none, got {self.report_to!r}")
        for name in ("eval_strategy", "save_strategy"):
            if getattr(self, name) not in ("no", "steps", "epoch"):
                raise ValueError(f"--{name} must be no, steps or epoch, got {getattr(self, name)!r}")
        if self.eval_strategy == "steps" and not (self.eval_steps and self.eval_steps > 0):
            raise ValueError(f"--eval_strategy steps needs --eval_steps N (N >= 1), got {self.eval_steps}")
        if self.save_strategy == "steps" and self.save_steps < 1:
            raise ValueError(f"--save_strategy steps needs --save_steps >= 1, got {self.save_steps} (or --save_strategy no)")
        if self.load_best_model_at_end and self.eval_strategy == "no":
            raise ValueError("--load_best_model_at_end needs evaluation during training: --eval_strategy steps or epoch")
        if self.metric_for_best_model not in EVAL_METRICS:
            raise ValueError(
                f"--metric_for_best_model {self.metric_for_best_model!r} is not a metric; choose one of "
                + ", ".join(EVAL_METRICS)
            )
        if self.save_total_limit is not None and (self.save_total_limit == 0 or self.save_total_limit < -1):
            raise ValueError(f"--save_total_limit must be >= 1 (or -1 to keep every checkpoint), got {self.save_total_limit}")
        if self.save_total_limit == -1:
            self.save_total_limit = None


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments)


def parse_args(argv: list[str] | None = None):
    """Parse train.py arguments → (ModelArguments, DataArguments, TrainingArguments)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        ARGUMENT_CLASSES,
        description="Train a text-based person search model (run it under `accelerate launch` for several processes).",
    )
    parser.prog = "train.py"
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:  # a bad combination found by __post_init__: argparse's usage error, exit 2
        parser.error(str(err))


def _json_object(text: str | None, argument: str) -> dict:
    """Parse a command-line JSON object (empty → {}); errors name the argument."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{argument} is not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{argument} must be a JSON object, got {text!r}")
    return value
