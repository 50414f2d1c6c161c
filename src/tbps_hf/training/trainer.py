"""The training loop shared by every method, on `accelerate` (single process, DDP, FSDP or DeepSpeed configs).

Why a loop of our own rather than `transformers.Trainer`: the identity-aware, rank-aware batch sampler and the
per-example augmentation seeds (needed for exact resume) do not fit Trainer's sampler/collator hooks cleanly, and
the retrieval evaluation is not a per-batch metric.
"""

from __future__ import annotations

import difflib
import json
from contextlib import nullcontext
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import TBPSUserError
from ..models import get_method
from .arguments import DataArguments, ModelArguments, TrainingArguments
from .sampler import IdentityBatchSampler

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
# Files a resumable checkpoint must hold (accelerate's state plus ours); written into a temporary folder that is
# renamed to checkpoint-N only once complete, so a crash mid-write never leaves a folder that looks complete.
REQUIRED_CHECKPOINT_FILES = (TRAINER_STATE, "optimizer.bin", "random_states_0.pkl", "processor")


class TrainingError(TBPSUserError, RuntimeError):
    """Training stopped for a reason the user must act on (NaN loss, bad checkpoint…)."""


class _SeededPairs(Dataset):
    """Adds each example's augmentation seed (given by the sampler) to the pair it names."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        return {**self.pairs[index], "seed": seed}


def _resolve_checkpoint(path: str, output_dir: Path) -> Path:
    if path == "latest":
        found = sorted(
            (int(m.group(1)), p)
            for p in output_dir.glob("checkpoint-*")
            if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()
        )
        if not found:
            raise TrainingError(f"--resume_from_checkpoint latest: no checkpoint-N folder in {output_dir}")
        checkpoint = found[-1][1]
    else:
        checkpoint = Path(path)
    if not checkpoint.is_dir():
        raise TrainingError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
    missing = [name for name in REQUIRED_CHECKPOINT_FILES if not (checkpoint / name).exists()]
    if not any(checkpoint.glob("model*.safetensors")) and not any(checkpoint.glob("pytorch_model*")):
        missing.append("model.safetensors")
    if missing:
        raise TrainingError(
            f"--resume_from_checkpoint {checkpoint} is incomplete (missing {', '.join(missing)}); "
            "resume from an earlier checkpoint-N instead"
        )
    return checkpoint


def _lr_lambda(kind: str, warmup_steps: int, total_steps: int, milestones: list[int], gamma: float) -> Callable:
    """Step → learning-rate factor: linear warm-up, then multistep / cosine / linear / constant decay.

    Hand-written because transformers' schedulers have no warm-up + multistep, and all four fit in a few lines.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "multistep":
            return gamma ** sum(step >= m for m in milestones)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "linear":
            return 1.0 - progress
        return 1.0

    if kind not in ("multistep", "cosine", "linear", "constant"):
        raise ValueError(f"--lr_scheduler_type must be multistep, cosine, linear or constant, got {kind!r}")
    return factor


def _build_optimizer(model, name: str, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = []
    for group in model.optimizer_param_groups(learning_rate, weight_decay):
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            groups.append({**group, "params": params})
    if not groups:
        raise TrainingError("the model has no trainable parameters")
    if name == "adam":
        return torch.optim.Adam(groups, lr=learning_rate, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} in training_defaults (adam, adamw or sgd)")


def _apply_lora(model, args: TrainingArguments):
    from peft import LoraConfig, get_peft_model

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


def _flat_hparams(*dataclasses_) -> dict[str, Any]:
    out = {}
    for obj in dataclasses_:
        for key, value in vars(obj).items():
            out[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def _check_config_overrides(config, overrides: dict) -> None:
    """Unknown field names in --config_overrides would be stored and silently ignored; name them instead."""
    known = set(config.to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        hints = [f"{name!r} (did you mean {', '.join(map(repr, close))}?)" if (close := difflib.get_close_matches(name, known, 2))
                 else repr(name) for name in unknown]
        raise ValueError(f"--config_overrides: {type(config).__name__} has no field {', '.join(hints)}")
    for name in ("vocab_size", "num_identities"):
        if name in overrides:
            raise ValueError(f"--config_overrides: {name} is set from the data (tokenizer / training identities)")


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: TrainingArguments,
    step_callback: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train one method on one dataset; returns the run summary (also written to ``run_summary.json``).

    ``step_callback(global_step, logs)`` is called after every optimizer step (tests use it to interrupt a run).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from transformers import AutoModel, AutoProcessor

    from ..data import TrainingPairs, load_tbps_dataset

    start_time = time.perf_counter()
    method = get_method(model_args.model)  # unknown names list the valid ones
    config_overrides = model_args.parsed_config_overrides()
    if model_args.model_name_or_path is None:
        # fail fast on an unknown preset or config field, before any data work
        _check_config_overrides(method.config_class.from_preset(model_args.preset), config_overrides)
    elif config_overrides:
        raise ValueError("--config_overrides applies to a fresh preset; it cannot change a saved model's config")
    output_dir = Path(args.output_dir)
    checkpoint = _resolve_checkpoint(args.resume_from_checkpoint, output_dir) if args.resume_from_checkpoint else None

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(output_dir),
        # Some loss terms may be switched off by a config flag, leaving parameters without gradients.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    is_main = accelerator.is_main_process
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)

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
    pairs = TrainingPairs(dataset[data_args.train_split], seed=args.seed)

    # Processor: from the checkpoint when resuming, else from a saved model, else built for the preset (training a
    # WordPiece tokenizer on the training captions once, on the main process, then shared through the disk).
    init_processor_dir = output_dir / ".init_processor"
    if checkpoint is not None:
        processor = AutoProcessor.from_pretrained(checkpoint / "processor")
    elif model_args.model_name_or_path:
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
    else:
        config = method.config_class.from_preset(model_args.preset, **config_overrides)
        if is_main:
            method.processor_class.from_config(config, captions=pairs.captions).save_pretrained(init_processor_dir)
        accelerator.wait_for_everyone()
        processor = AutoProcessor.from_pretrained(init_processor_dir)

    if model_args.model_name_or_path:
        model = AutoModel.from_pretrained(model_args.model_name_or_path)
        if model.config.model_type != method.config_class.model_type:
            raise ValueError(
                f"--model {model_args.model} but {model_args.model_name_or_path} holds a {model.config.model_type!r}"
            )
    else:
        config = method.config_class.from_preset(
            model_args.preset,
            **{**config_overrides, "vocab_size": len(processor.tokenizer), "num_identities": pairs.num_identities},
        )
        if config.tokenizer_name is not None:
            config.vocab_size = max(config.vocab_size, len(processor.tokenizer))
        set_seed(args.seed)  # seeded right here: data loading may consume the global RNG a variable amount
        model = method.model_class(config)
    if args.lora_r:
        model = _apply_lora(model, args)

    defaults = dict(model.config.training_defaults or {})
    batch_size = args.per_device_train_batch_size or defaults.get("per_device_train_batch_size", 32)
    images_per_identity = args.images_per_identity or defaults.get("images_per_identity", 2)
    learning_rate = args.learning_rate or defaults.get("learning_rate", 1e-4)
    weight_decay = args.weight_decay if args.weight_decay is not None else defaults.get("weight_decay", 0.0)
    scheduler_kind = args.lr_scheduler_type or defaults.get("lr_scheduler_type", "cosine")
    warmup_epochs = args.warmup_epochs if args.warmup_epochs is not None else defaults.get("warmup_epochs", 0)
    preset_epochs = defaults.get("num_train_epochs", 10)
    epochs = args.num_train_epochs or preset_epochs

    sampler = IdentityBatchSampler(
        pairs.labels,
        batch_size=batch_size,
        images_per_identity=images_per_identity,
        seed=args.seed,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    ga = args.gradient_accumulation_steps
    steps_per_epoch = len(sampler) // ga
    if steps_per_epoch == 0:
        raise TrainingError(
            f"an epoch has {len(sampler)} batches of {batch_size} pairs per process, fewer than "
            f"--gradient_accumulation_steps {ga}; lower the batch size"
        )
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(epochs * steps_per_epoch)
    if args.max_steps_cap_epochs:
        total_steps = min(total_steps, math.ceil(epochs * steps_per_epoch))
    # Milestones are given in epochs of the paper's schedule; keep their relative position for other lengths.
    milestones = [round(m / preset_epochs * total_steps) for m in defaults.get("milestones", [])]
    warmup_steps = min(total_steps, round(warmup_epochs * steps_per_epoch))

    optimizer = _build_optimizer(model, defaults.get("optimizer", "adamw"), learning_rate, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(scheduler_kind, warmup_steps, total_steps, milestones, defaults.get("gamma", 0.1))
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    # Stepped by hand once per optimizer step (accelerate's wrapper would step it once per process).
    accelerator.register_for_checkpointing(scheduler)

    global_step, epoch, micro_in_epoch = 0, 0, 0
    if checkpoint is not None:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
        for key, now in (("model", model_args.model), ("world_size", accelerator.num_processes)):
            if state.get(key) != now:
                raise TrainingError(
                    f"cannot resume exactly from {checkpoint}: it was written with {key}={state.get(key)!r}, "
                    f"this run has {key}={now!r}"
                )
        accelerator.load_state(str(checkpoint))
        global_step, epoch, micro_in_epoch = state["global_step"], state["epoch"], state["micro_in_epoch"]
        logger.info("resumed from %s at step %d (epoch %d)", checkpoint, global_step, epoch)

    hparams = _flat_hparams(model_args, data_args, args)
    hparams.update(
        batch_size=batch_size, learning_rate=learning_rate, total_steps=total_steps, world_size=accelerator.num_processes
    )
    if args.report_to != "none":
        accelerator.init_trackers("tbps", config=hparams)

    def save_checkpoint() -> Path:
        final = output_dir / f"checkpoint-{global_step}"
        tmp = output_dir / f".tmp-checkpoint-{global_step}"
        if is_main and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        if is_main:
            processor.save_pretrained(tmp / "processor")
            trainer_state = {
                "global_step": global_step,
                "epoch": epoch,
                "micro_in_epoch": micro_in_epoch,
                "total_steps": total_steps,
                "world_size": accelerator.num_processes,
                "model": model_args.model,
                "preset": model_args.preset,
            }
            (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _prune_checkpoints(output_dir, args.save_total_limit)
        accelerator.wait_for_everyone()
        return final

    if checkpoint is None:
        set_seed(args.seed)  # model-side training randomness (masking, dropout) starts from a known state
    dataset_for_loader = _SeededPairs(pairs)
    progress = tqdm(total=total_steps, initial=global_step, desc="train", disable=not is_main, dynamic_ncols=True)
    last_checkpoint: Path | None = checkpoint
    stopped_early = None
    running: dict[str, float] = {}
    samples_seen = 0
    loop_start = time.perf_counter()
    model.train()
    while global_step < total_steps and stopped_early is None:
        sampler.set_epoch(epoch, start_batch=micro_in_epoch)
        loader = DataLoader(
            dataset_for_loader,
            batch_sampler=sampler,
            collate_fn=processor.training_batch,
            num_workers=args.dataloader_num_workers,
            # A private generator: creating the iterator must not consume the global RNG, or a resumed run
            # (which creates it mid-epoch) would diverge from the uninterrupted one.
            generator=torch.Generator().manual_seed(args.seed),
        )
        for batch in loader:
            if micro_in_epoch >= steps_per_epoch * ga:
                break  # trailing micro-batches that cannot fill an accumulation group
            batch = batch.to(accelerator.device)
            micro_in_epoch += 1
            sync = micro_in_epoch % ga == 0
            with accelerator.autocast(), (accelerator.no_sync(model) if not sync else nullcontext()):
                outputs = model(**batch, return_loss=True)
                loss = outputs.loss
                finite = accelerator.gather(torch.isfinite(loss.detach()).float().reshape(1)).min().item()
                if finite < 1:
                    raise TrainingError(
                        f"loss is {loss.item()} at step {global_step + 1} (epoch {epoch}); training stopped. "
                        + (f"Last good checkpoint: {last_checkpoint}. " if last_checkpoint else "No checkpoint was saved. ")
                        + "Lower --learning_rate, set --max_grad_norm, or check the data."
                    )
                accelerator.backward(loss / ga)
            for key, value in outputs.items():
                if key.startswith("loss") and isinstance(value, torch.Tensor) and value.numel() == 1:
                    running[key] = running.get(key, 0.0) + value.item() / (ga * args.logging_steps)
            samples_seen += batch["pixel_values"].shape[0]
            if not sync:
                continue
            if args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            progress.update(1)
            logs = {}
            if global_step % args.logging_steps == 0 or global_step == total_steps:
                logs = {**running, "lr": scheduler.get_last_lr()[0], "epoch": epoch + micro_in_epoch / (steps_per_epoch * ga)}
                progress.set_postfix(loss=f"{running.get('loss', float('nan')):.3f}")
                if args.report_to != "none":
                    accelerator.log(logs, step=global_step)
                running = {}
            if args.save_steps and global_step % args.save_steps == 0 and global_step < total_steps:
                last_checkpoint = save_checkpoint()
            if step_callback is not None:
                step_callback(global_step, logs)
            if global_step >= total_steps:
                break
            if args.max_train_minutes and time.perf_counter() - start_time > 60 * args.max_train_minutes:
                stopped_early = f"time budget of {args.max_train_minutes} min reached at step {global_step}"
                break
        else:
            epoch, micro_in_epoch = epoch + 1, 0
            continue
        if micro_in_epoch >= steps_per_epoch * ga:
            epoch, micro_in_epoch = epoch + 1, 0
    progress.close()
    train_seconds = time.perf_counter() - loop_start
    accelerator.wait_for_everyone()

    summary: dict[str, Any] = {
        "model": model_args.model,
        "preset": model_args.preset,
        "config_overrides": config_overrides,
        "dataset": data_args.dataset,
        "world_size": accelerator.num_processes,
        "global_step": global_step,
        "epochs": round(epoch + micro_in_epoch / (steps_per_epoch * ga), 4),
        "per_device_train_batch_size": batch_size,
        "learning_rate": learning_rate,
        "train_seconds": round(train_seconds, 2),
        "train_samples_per_second": round(samples_seen * accelerator.num_processes / max(train_seconds, 1e-9), 2),
        "stopped_early": stopped_early,
        "metrics": {},
    }
    if is_main:
        unwrapped = accelerator.unwrap_model(model)
        if args.lora_r:
            unwrapped.save_pretrained(output_dir / "adapter")
            unwrapped = unwrapped.merge_and_unload()
        unwrapped.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        shutil.rmtree(init_processor_dir, ignore_errors=True)
        eval_split = data_args.eval_split
        if eval_split and eval_split.lower() != "none":
            if eval_split not in dataset:
                logger.warning("eval split %r not in the dataset (%s); skipping evaluation", eval_split, list(dataset))
            else:
                summary["metrics"] = _evaluate(unwrapped, processor, dataset[eval_split], output_dir / "eval" / eval_split, args)
        summary["total_seconds"] = round(time.perf_counter() - start_time, 2)
        (output_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))
        _write_card(output_dir, model_args, data_args, summary)
    if args.report_to != "none":
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return summary


def _evaluate(model, processor, split, out_dir: Path, args: TrainingArguments) -> dict:
    from ..data import EvaluationView
    from ..evaluation import evaluate_model

    model.eval()
    results = evaluate_model(
        model, processor, EvaluationView(split), batch_size=args.per_device_eval_batch_size, output_dir=out_dir
    )
    return results.get("overall", results)


def _write_card(output_dir: Path, model_args, data_args, summary: dict) -> None:
    from ..model_card import write_model_card

    write_model_card(
        output_dir,
        method=model_args.model,
        preset=model_args.preset,
        dataset=data_args.dataset,
        metrics=summary.get("metrics", {}),
        training_args=summary,
    )


def _prune_checkpoints(output_dir: Path, limit: int | None) -> None:
    if not limit:
        return
    found = sorted(
        (int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_PATTERN.match(p.name))
    )
    for _, path in found[:-limit]:
        shutil.rmtree(path, ignore_errors=True)
