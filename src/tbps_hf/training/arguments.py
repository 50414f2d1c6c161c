"""Command-line arguments of `train.py` / `tbps train`, as `HfArgumentParser` dataclasses with Hugging Face names.

Arguments left at ``None`` take the preset's paper defaults (``config.training_defaults``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class ModelArguments:
    model: str = field(default="ivt", metadata={"help": "Method to train: one of the registered models (ivt, pcc, cfam)."})
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

    def parsed_config_overrides(self) -> dict:
        return _json_object(self.config_overrides, "--config_overrides")


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
        default="test", metadata={"help": "Split evaluated after training (empty string or 'none' to skip)."}
    )

    def parsed_dataset_options(self) -> dict:
        return _json_object(self.dataset_options, "--dataset_options")


@dataclass
class TrainingArguments:
    output_dir: str = field(default="runs/tbps", metadata={"help": "Where the model, checkpoints and logs are written."})
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
        metadata={"help": "'multistep' or a transformers scheduler name: cosine, linear, constant… (default: preset's)."},
    )
    warmup_epochs: float | None = field(default=None, metadata={"help": "Linear warm-up length in epochs."})
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip gradients to this norm (default: off)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    seed: int = field(default=42, metadata={"help": "Seed of weights, data order and augmentation."})
    mixed_precision: str = field(default="no", metadata={"help": "no | fp16 | bf16 (passed to accelerate)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    logging_steps: int = field(default=10, metadata={"help": "Log losses every N optimizer steps."})
    save_steps: int = field(default=0, metadata={"help": "Save a resumable checkpoint-N every N steps (0: never)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint-N folder to resume from exactly, or 'latest' in output_dir."}
    )
    lora_r: int = field(default=0, metadata={"help": "If > 0: train PEFT LoRA adapters of this rank on attention."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    report_to: str = field(default="tensorboard", metadata={"help": "accelerate tracker: tensorboard | none."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size when encoding for evaluation."})
    max_train_minutes: float | None = field(
        default=None, metadata={"help": "Stop training (and save) once this wall-clock time is spent."}
    )

    def __post_init__(self):
        for name in ("gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("per_device_train_batch_size", "images_per_identity", "num_train_epochs", "learning_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be positive, got {value}")
        if self.save_steps < 0 or self.lora_r < 0 or self.dataloader_num_workers < 0:
            raise ValueError("--save_steps, --lora_r and --dataloader_num_workers must be >= 0")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"--mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.report_to not in ("tensorboard", "none"):
            raise ValueError(f"--report_to must be tensorboard or none, got {self.report_to!r}")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments)


def parse_args(argv: list[str] | None = None):
    """Parse train.py arguments → (ModelArguments, DataArguments, TrainingArguments)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        ARGUMENT_CLASSES,
        description="Train a text-based person search model (run it under `accelerate launch` for several processes).",
    )
    parser.prog = "train.py"
    return parser.parse_args_into_dataclasses(args=argv)


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
