"""Building a run: the dataset, the training pairs, the processor and the model (fresh preset, saved model or
checkpoint), before the optimizer and the loop."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

from .arguments import DataArguments, ModelArguments, TrainingArguments
from .errors import TrainingError

logger = logging.getLogger(__name__)


def check_config_overrides(config, overrides: dict) -> None:
    """Unknown field names in --config_overrides would be stored and silently ignored; name them instead."""
    known = set(config.to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        hints = [
            f"{name!r} (did you mean {', '.join(map(repr, close))}?)"
            if (close := difflib.get_close_matches(name, known, 2))
            else repr(name)
            for name in unknown
        ]
        raise ValueError(f"--config_overrides: {type(config).__name__} has no field {', '.join(hints)}")
    for name in ("vocab_size", "num_identities"):
        if name in overrides:
            raise ValueError(f"--config_overrides: {name} is set from the data (tokenizer / training identities)")


def check_model_arguments(method, model_args: ModelArguments) -> dict:
    """Everything about the model that can fail without data: the preset, the overrides, the backbones (so a missing
    checkpoint is reported before minutes of data preparation). Returns the parsed config overrides."""
    overrides = model_args.parsed_config_overrides()
    backbones = model_args.parsed_backbone_checkpoints()
    if model_args.model_name_or_path is not None:
        if overrides:
            raise ValueError("--config_overrides applies to a fresh preset; it cannot change a saved model's config")
        if backbones:
            raise ValueError("--backbone_checkpoints applies to a fresh preset, not to --model_name_or_path")
        return overrides
    from ..backbones import check_backbones, resolve_backbones

    config = method.config_class.from_preset(model_args.preset)  # unknown presets list the valid ones
    check_config_overrides(config, overrides)
    config = method.config_class.from_preset(model_args.preset, **overrides)
    resolve_backbones(method, config, backbones)  # unknown roles list the valid ones
    if model_args.init_backbones:
        check_backbones(config, backbones, method=method)  # a missing checkpoint names the role and the ways out
    return overrides


def check_launch_fits_machine() -> None:
    """A launch (accelerate config or flags) asking for more processes on this machine than it has GPUs fails deep
    inside CUDA ("invalid device ordinal") on the surplus ranks; say what is wrong and the fix instead."""
    import os

    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if per_machine <= 1 or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return
    import torch

    if not torch.cuda.is_available():
        return  # CPU processes (gloo): any number runs
    gpus = torch.cuda.device_count()
    if per_machine > gpus:
        machines = max(1, int(os.environ.get("WORLD_SIZE", per_machine)) // per_machine)
        raise TrainingError(
            f"accelerate launched {per_machine} processes on this machine but it has {gpus} GPU(s): pass "
            f"--num_processes {gpus * machines} to accelerate launch (it overrides the config file), or set "
            f"num_processes: {gpus * machines} in the --config_file"
        )


def load_training_data(data_args: DataArguments, accelerator, seed: int):
    """The dataset (built once, on the main process first) and the training pairs of ``--train_split``."""
    from ..data import TrainingPairs, load_tbps_dataset

    with accelerator.main_process_first():
        dataset = load_tbps_dataset(
            data_args.dataset,
            data_dir=data_args.data_dir,
            cache_dir=data_args.cache_dir,
            annotation_file=data_args.annotation_file,
            **data_args.parsed_dataset_options(),
        )
    if data_args.train_split not in dataset:
        raise ValueError(f"--train_split {data_args.train_split!r} not in dataset; available: {', '.join(dataset)}")
    return dataset, TrainingPairs(dataset[data_args.train_split], seed=seed)


def resolve_eval_split(data_args: DataArguments, dataset) -> str | None:
    """``--eval_split``: ``validation`` when the dataset has one, else ``test``; ``none`` → no evaluation."""
    split = data_args.eval_split
    if split is not None and split.strip().lower() in ("", "none"):
        return None
    if split is None:
        return next((name for name in ("validation", "test") if name in dataset), None)
    if split not in dataset:
        raise ValueError(f"--eval_split {split!r} not in dataset; available: {', '.join(dataset)} (or none)")
    return split


def build_processor(method, model_args: ModelArguments, overrides: dict, pairs, checkpoint: Path | None,
                    output_dir: Path, accelerator):
    """From the checkpoint when resuming, else from a saved model, else built for the preset (a WordPiece tokenizer
    is trained on the training captions once, on the main process, then shared through the disk)."""
    from transformers import AutoProcessor

    if checkpoint is not None:
        return AutoProcessor.from_pretrained(checkpoint / "processor")
    if model_args.model_name_or_path:
        return AutoProcessor.from_pretrained(model_args.model_name_or_path)
    init_dir = output_dir / ".init_processor"
    if accelerator.is_main_process:
        method.processor_class.from_config(_fresh_config(method, model_args, overrides), captions=pairs.captions
                                           ).save_pretrained(init_dir)
    accelerator.wait_for_everyone()
    return AutoProcessor.from_pretrained(init_dir)


def _fresh_config(method, model_args: ModelArguments, overrides: dict, **fields):
    """The preset with its overrides, prepared for its backbones (the text backbone's tokenizer, resolved roles)."""
    from ..backbones import prepare_config

    config = method.config_class.from_preset(model_args.preset, **overrides, **fields)
    return prepare_config(method, config, model_args.parsed_backbone_checkpoints(), init_backbones=model_args.init_backbones)


def build_model(method, model_args: ModelArguments, overrides: dict, processor, pairs, args: TrainingArguments):
    """A saved model, or a fresh preset sized to the data (vocabulary, identities) with its backbones."""
    from accelerate.utils import set_seed
    from transformers import AutoModel

    if model_args.model_name_or_path:
        model = AutoModel.from_pretrained(model_args.model_name_or_path)
        if model.config.model_type != method.config_class.model_type:
            raise ValueError(
                f"--model {model_args.model} but {model_args.model_name_or_path} holds a {model.config.model_type!r}"
            )
    else:
        from ..backbones import build_model as build_with_backbones

        config = method.config_class.from_preset(
            model_args.preset,
            **{**overrides, "vocab_size": len(processor.tokenizer), "num_identities": pairs.num_identities},
        )
        if config.tokenizer_name is not None:
            config.vocab_size = max(config.vocab_size, len(processor.tokenizer))
        set_seed(args.seed)  # seeded right here: data loading may consume the global RNG a variable amount
        model = build_with_backbones(
            method, config, model_args.parsed_backbone_checkpoints(), init_backbones=model_args.init_backbones
        )
    if args.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise TrainingError(f"{type(model).__name__} does not support --gradient_checkpointing")
        # transformers 5 renamed it activation_checkpointing_enable (the old name warns)
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    if args.lora_r:
        model = apply_lora(model, args)
    return model


def apply_lora(model, args: TrainingArguments):
    from peft import LoraConfig, get_peft_model
    import torch

    targets = getattr(model, "lora_target_modules", None)
    if not targets:
        raise TrainingError(f"{type(model).__name__} declares no lora_target_modules; --lora_r is not supported")
    # BatchNorm running statistics change during training too: save those modules with the adapter.
    norms = [name for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=norms or None,
    )
    return get_peft_model(model, config)
