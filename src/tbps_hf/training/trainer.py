"""The training loop shared by every method, on `accelerate` (single process, DDP, FSDP or DeepSpeed configs).

Why a loop of our own rather than `transformers.Trainer`: the identity-aware, rank-aware batch sampler and the
per-example augmentation seeds (needed for exact resume) do not fit Trainer's sampler/collator hooks cleanly, and
the retrieval evaluation is not a per-batch metric. Names of arguments, strategies and files follow Trainer's.

``train()`` runs a :class:`Trainer` in four parts: building (``building.py``), optimizer and schedule
(``optimization.py``), the loop with evaluation and checkpoints (this file, ``checkpointing.py``), and the final save.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import threading
import time
import uuid
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..models import get_method
from .arguments import DataArguments, ModelArguments, TrainingArguments
from .building import (
    build_model,
    check_launch_fits_machine,
    build_processor,
    check_model_arguments,
    load_training_data,
    resolve_eval_split,
)
from .checkpointing import (
    CheckpointWriter,
    check_resume_settings,
    guard_output_dir,
    resolve_checkpoint,
    save_final_model,
)
from .errors import TrainingError, TrainingInterrupted
from .optimization import Hyperparameters, build_optimizer, build_scheduler, total_training_steps
from .sampler import IdentityBatchSampler

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainingError", "TrainingInterrupted", "train"]


class _SeededPairs(Dataset):
    """Adds each example's augmentation seed (given by the sampler) to the pair it names."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        return {**self.pairs[index], "seed": seed}


class _ModelTrainingState:
    """Adapter that lets accelerate checkpoint the model's ``training_state_dict`` (e.g. LAIP's queues)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict:
        return self.model.training_state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_training_state_dict(state)


@contextmanager
def _stop_on_signals():
    """SIGINT / SIGTERM set a flag the loop reads at the next step boundary (a second signal acts as usual)."""
    received: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {}

    def handler(signum, frame):
        received["signum"] = signum
        signal.signal(signum, previous[signum])  # a second Ctrl-C stops at once
        logger.warning("%s received: saving a checkpoint at the end of this step", signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def _preserved_rng():
    """Evaluation must not move any RNG: a run evaluated on the way equals one that is not, and resumes exactly."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def _flat_hparams(*dataclasses_) -> dict[str, Any]:
    out = {}
    for obj in dataclasses_:
        for key, value in vars(obj).items():
            out[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


class Trainer:
    """One training run. ``run()`` = building → optimizer/schedule → loop (evaluation, checkpoints) → final save."""

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments,
                 step_callback: Callable[[int, dict], None] | None = None):
        self.model_args, self.data_args, self.args = model_args, data_args, args
        self.step_callback = step_callback
        self.start_time = time.perf_counter()
        self.output_dir = Path(args.output_dir)
        self.global_step, self.epoch, self.micro_in_epoch = 0, 0, 0
        self.eval_history: list[dict] = []
        self.best: dict | None = None
        self.run_id = uuid.uuid4().hex
        self.stopped_early: str | None = None

    # ---- building -------------------------------------------------------------------------------------------
    def build(self) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs
        from accelerate.utils import set_seed
        from datetime import timedelta

        args = self.args
        self.method = get_method(self.model_args.model)  # unknown names list the valid ones
        self.overrides = check_model_arguments(self.method, self.model_args)  # before any data work
        to_remove = guard_output_dir(self.output_dir, args.overwrite_output_dir, args.resume_from_checkpoint is not None)
        self.checkpoint = (
            resolve_checkpoint(args.resume_from_checkpoint, self.output_dir) if args.resume_from_checkpoint else None
        )
        check_launch_fits_machine()
        self.accelerator = accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            log_with=None if args.report_to == "none" else args.report_to,
            project_dir=str(self.output_dir),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=args.ddp_timeout))],
        )
        self.is_main = accelerator.is_main_process
        requested = [name for name, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
                     if os.environ.get(env, "").lower() == "true"]
        if requested and accelerator.distributed_type.name not in ("FSDP", "DEEPSPEED"):
            # accelerate (1.15) applies FSDP / DeepSpeed only on accelerator devices and silently drops them on CPU
            logger.warning("%s was requested but accelerate runs %s on this machine (it shards only on GPUs and "
                           "other accelerators): this run is plain data parallel", requested[0],
                           accelerator.distributed_type.value)
        if self.is_main:
            if to_remove:
                logger.warning("--overwrite_output_dir: removing %d checkpoint(s) of the earlier run", len(to_remove))
                for path in to_remove:
                    shutil.rmtree(path, ignore_errors=True)
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if accelerator.distributed_type.name == "FSDP" and args.eval_strategy != "no":
            raise TrainingError("--eval_strategy under FSDP is not supported (the main process alone cannot run a "
                                "sharded model); evaluate after training with tbps evaluate")
        set_seed(args.seed)
        self.dataset, self.pairs = load_training_data(self.data_args, accelerator, args.seed)
        self.eval_split = resolve_eval_split(self.data_args, self.dataset)
        if args.eval_strategy != "no" and self.eval_split is None:
            raise ValueError(f"--eval_strategy {args.eval_strategy} needs an --eval_split; the dataset has "
                             f"{', '.join(self.dataset)}")
        self.processor = build_processor(self.method, self.model_args, self.overrides, self.pairs, self.checkpoint,
                                         self.output_dir, accelerator)
        self.model = build_model(self.method, self.model_args, self.overrides, self.processor, self.pairs, args)
        # DDP searches for parameters without gradients only when the model says a switch leaves some unused.
        accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=self.model.find_unused_parameters())

    # ---- optimizer and schedule -----------------------------------------------------------------------------
    def prepare_optimization(self) -> None:
        args, accelerator = self.args, self.accelerator
        self.defaults = defaults = dict(self.model.config.training_defaults or {})
        self.hp = hp = Hyperparameters.resolve(args, defaults)
        self.sampler = IdentityBatchSampler(
            self.pairs.labels,
            batch_size=hp.batch_size,
            images_per_identity=hp.images_per_identity,
            seed=args.seed,
            num_replicas=accelerator.num_processes,
            rank=accelerator.process_index,
        )
        ga = args.gradient_accumulation_steps
        self.steps_per_epoch = len(self.sampler) // ga
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"an epoch has {len(self.sampler)} batches of {hp.batch_size} pairs per process, fewer than "
                f"--gradient_accumulation_steps {ga}; lower the batch size"
            )
        self.total_steps = total_training_steps(args, hp, self.steps_per_epoch)
        optimizer = build_optimizer(self.model, hp, defaults)
        self.scheduler = build_scheduler(optimizer, hp, defaults, self.total_steps, self.steps_per_epoch)
        self.model, self.optimizer = accelerator.prepare(self.model, optimizer)
        self.unwrapped = accelerator.unwrap_model(self.model)
        # Stepped by hand once per optimizer step (accelerate's wrapper would step it once per process).
        accelerator.register_for_checkpointing(self.scheduler)  # custom_checkpoint_0
        accelerator.register_for_checkpointing(_ModelTrainingState(self.unwrapped))  # custom_checkpoint_1
        self.writer = CheckpointWriter(
            accelerator, self.output_dir, self.processor, self.run_id, args.save_total_limit
        )

    def settings(self) -> dict[str, Any]:
        """What a resume must share with the run it continues (see ``checkpointing.EXACT_RESUME_SETTINGS``)."""
        m, d, a = self.model_args, self.data_args, self.args
        return {
            "model": m.model, "preset": m.preset, "config_overrides": self.overrides,
            "model_name_or_path": m.model_name_or_path, "dataset": d.dataset,
            "dataset_options": d.parsed_dataset_options(), "train_split": d.train_split,
            "per_device_train_batch_size": self.hp.batch_size, "images_per_identity": self.hp.images_per_identity,
            "gradient_accumulation_steps": a.gradient_accumulation_steps, "seed": a.seed,
            "world_size": self.accelerator.num_processes, "learning_rate": self.hp.learning_rate,
            "lr_scheduler_type": self.hp.scheduler, "total_steps": self.total_steps, "lora_r": a.lora_r,
        }

    def resume(self) -> None:
        from accelerate.utils import set_seed

        if self.checkpoint is None:
            set_seed(self.args.seed)  # model-side training randomness (masking, dropout) starts from a known state
            return
        from .checkpointing import read_trainer_state

        state = read_trainer_state(self.checkpoint)
        check_resume_settings(self.checkpoint, state, self.settings(), self.args.allow_inexact_resume)
        self.accelerator.load_state(str(self.checkpoint))
        self.global_step, self.epoch, self.micro_in_epoch = state["global_step"], state["epoch"], state["micro_in_epoch"]
        self.run_id = self.writer.run_id = state["run_id"]
        self.eval_history = state.get("eval_history", [])
        self.best = state.get("best")
        self.writer.last = self.checkpoint
        logger.info("resumed from %s at step %d (epoch %d)", self.checkpoint, self.global_step, self.epoch)

    # ---- the loop -------------------------------------------------------------------------------------------
    def epoch_progress(self) -> float:
        return self.epoch + self.micro_in_epoch / (self.steps_per_epoch * self.args.gradient_accumulation_steps)

    def trainer_state(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step, "epoch": self.epoch, "micro_in_epoch": self.micro_in_epoch,
            "total_steps": self.total_steps, "run_id": self.run_id, "settings": self.settings(),
            "eval_history": self.eval_history, "best": self.best,
        }

    def save_checkpoint(self) -> Path:
        keep = self.output_dir / self.best["checkpoint"] if self.best and self.best.get("checkpoint") else None
        return self.writer.save(self.trainer_state(), keep=keep)

    def loop(self) -> None:
        args, accelerator, model = self.args, self.accelerator, self.model
        ga = args.gradient_accumulation_steps
        micro_per_epoch = self.steps_per_epoch * ga
        if args.report_to != "none":
            hparams = _flat_hparams(self.model_args, self.data_args, args)
            hparams.update(batch_size=self.hp.batch_size, learning_rate=self.hp.learning_rate,
                           total_steps=self.total_steps, world_size=accelerator.num_processes)
            accelerator.init_trackers("tbps", config=hparams)
        dataset = _SeededPairs(self.pairs)
        progress = tqdm(total=self.total_steps, initial=self.global_step, desc="train", disable=not self.is_main,
                        dynamic_ncols=True)
        running: dict[str, float] = {}
        self.samples_seen = 0
        loop_start = time.perf_counter()
        model.train()
        # closing: the bar is closed also when a stop or an error leaves the loop
        with _stop_on_signals() as received, closing(progress):
            while self.global_step < self.total_steps and self.stopped_early is None:
                self.sampler.set_epoch(self.epoch, start_batch=self.micro_in_epoch)
                loader = DataLoader(
                    dataset,
                    batch_sampler=self.sampler,
                    collate_fn=self.processor.training_batch,
                    num_workers=args.dataloader_num_workers,
                    # A private generator: creating the iterator must not consume the global RNG, or a resumed run
                    # (which creates it mid-epoch) would diverge from the uninterrupted one.
                    generator=torch.Generator().manual_seed(args.seed),
                )
                for batch in loader:
                    batch = batch.to(accelerator.device)
                    if self.micro_in_epoch % ga == 0:
                        self.unwrapped.set_training_progress(self.global_step, self.total_steps, self.epoch_progress())
                    self.micro_in_epoch += 1
                    sync = self.micro_in_epoch % ga == 0
                    with accelerator.autocast(), (accelerator.no_sync(model) if not sync else nullcontext()):
                        outputs = model(**batch, return_loss=True)
                        loss = outputs.loss
                        self._check_finite(loss)
                        accelerator.backward(loss / ga)
                    for key, value in outputs.items():
                        if key.startswith("loss") and isinstance(value, torch.Tensor) and value.numel() == 1:
                            running[key] = running.get(key, 0.0) + value.item() / (ga * args.logging_steps)
                    self.samples_seen += batch["pixel_values"].shape[0]
                    if not sync:
                        continue
                    if self.hp.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), self.hp.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.global_step += 1
                    epoch_end = self.micro_in_epoch >= micro_per_epoch
                    if epoch_end:  # trailing micro-batches that cannot fill an accumulation group are skipped
                        self.epoch, self.micro_in_epoch = self.epoch + 1, 0
                    progress.update(1)
                    logs = {}
                    if self.global_step % args.logging_steps == 0 or self.global_step == self.total_steps:
                        logs = {**running, "lr": self.scheduler.get_last_lr()[0], "epoch": self.epoch_progress()}
                        progress.set_postfix(loss=f"{running.get('loss', float('nan')):.3f}")
                        if args.report_to != "none":
                            accelerator.log(logs, step=self.global_step)
                        running = {}
                    self._after_step(epoch_end, received["signum"])
                    if self.step_callback is not None:
                        self.step_callback(self.global_step, logs)
                    if epoch_end or self.global_step >= self.total_steps:
                        break
                    if args.max_train_minutes and time.perf_counter() - self.start_time > 60 * args.max_train_minutes:
                        self.stopped_early = f"time budget of {args.max_train_minutes} min reached at step {self.global_step}"
                        break
                else:  # the loader ran out before the epoch's last group (cannot happen with a full sampler)
                    self.epoch, self.micro_in_epoch = self.epoch + 1, 0
        self.train_seconds = time.perf_counter() - loop_start

    def _check_finite(self, loss: torch.Tensor) -> None:
        finite = self.accelerator.gather(torch.isfinite(loss.detach()).float().reshape(1)).min().item()
        if finite < 1:
            last = self.writer.last
            raise TrainingError(
                f"loss is {loss.item()} at step {self.global_step + 1} (epoch {self.epoch}); training stopped. "
                + (f"Last good checkpoint: {last}. " if last else "No checkpoint was saved. ")
                + "Lower --learning_rate, set --max_grad_norm, or check the data."
            )

    def _after_step(self, epoch_end: bool, signum: int | None) -> None:
        """Evaluation, checkpoint and stop requests, in that order, at an optimizer-step boundary."""
        args, step = self.args, self.global_step
        final = step >= self.total_steps
        evaluate = (args.eval_strategy == "steps" and step % args.eval_steps == 0) or (
            args.eval_strategy == "epoch" and epoch_end
        )
        if evaluate:
            self.evaluate_during_training()
        save = not final and (
            (args.save_strategy == "steps" and step % args.save_steps == 0)
            or (args.save_strategy == "epoch" and epoch_end)
            or (evaluate and args.load_best_model_at_end)
        )
        if self.accelerator.num_processes > 1:  # every rank must agree to stop at the same step
            flag = torch.tensor([signum or 0], device=self.accelerator.device)
            signum = int(self.accelerator.reduce(flag, reduction="max").item()) or None
        if signum and not final:
            path = self.save_checkpoint()
            name = signal.Signals(signum).name
            raise TrainingInterrupted(
                f"stopped by {name} at step {step} of {self.total_steps}; saved {path}. To continue exactly, run "
                f"the same command with --resume_from_checkpoint latest (or {path})",
                signum,
            )
        if save:
            self.save_checkpoint()

    def evaluate_during_training(self) -> None:
        """Main process only, the others wait; metrics go to the tracker, the history and the best-so-far."""
        args, accelerator = self.args, self.accelerator
        if self.is_main:
            start = time.perf_counter()
            with _preserved_rng():
                metrics = self._evaluate_split(self.unwrapped, output_dir=None)
            self.unwrapped.train()
            numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            entry = {"step": self.global_step, "epoch": round(self.epoch_progress(), 4), "metrics": numeric,
                     "seconds": round(time.perf_counter() - start, 2)}
            self.eval_history.append(entry)
            if args.report_to != "none":
                accelerator.log({f"eval/{k}": v for k, v in numeric.items()}, step=self.global_step)
            name = args.metric_for_best_model
            if name not in numeric:
                raise TrainingError(f"--metric_for_best_model {name!r} is not among the metrics: {', '.join(numeric)}")
            value = numeric[name]
            better = self.best is None or (
                value > self.best["value"] if args.greater_is_better else value < self.best["value"]
            )
            if better:
                checkpoint = f"checkpoint-{self.global_step}" if args.load_best_model_at_end else None
                self.best = {"step": self.global_step, "metric": name, "value": value, "checkpoint": checkpoint}
            logger.info("step %d: %s %s = %.2f (best %.2f at step %d)", self.global_step, self.eval_split, name,
                        value, self.best["value"], self.best["step"])
        accelerator.wait_for_everyone()

    def _evaluate_split(self, model, output_dir: Path | None) -> dict:
        from ..data import EvaluationView
        from ..evaluation import evaluate_model

        model.eval()
        results = evaluate_model(
            model, self.processor, EvaluationView(self.dataset[self.eval_split]),
            batch_size=self.args.per_device_eval_batch_size, output_dir=output_dir, progress=False,
        )
        return results.get("overall", results)

    # ---- saving ---------------------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Final save (best weights when asked, full state gathered under FSDP), evaluation, summary and card on
        the main process; then every rank meets once more before the trackers end (``end_training`` destroys the
        process group, so no collective may follow it)."""
        args, accelerator = self.args, self.accelerator
        accelerator.wait_for_everyone()
        if args.load_best_model_at_end and self.best and self.best["step"] != self.global_step:
            self._load_best_weights()
        # Under FSDP every rank holds a shard: gather the full state (a collective, so all ranks call it).
        state_dict = accelerator.get_state_dict(self.model) if accelerator.distributed_type.name == "FSDP" else None
        summary: dict[str, Any] = {
            "model": self.model_args.model,
            "preset": self.model_args.preset,
            "config_overrides": self.overrides,
            "dataset": self.data_args.dataset,
            "world_size": accelerator.num_processes,
            "distributed_type": accelerator.distributed_type.value,
            "global_step": self.global_step,
            "epochs": round(self.epoch_progress(), 4),
            "per_device_train_batch_size": self.hp.batch_size,
            "learning_rate": self.hp.learning_rate,
            "train_seconds": round(self.train_seconds, 2),
            "train_samples_per_second": round(
                self.samples_seen * accelerator.num_processes / max(self.train_seconds, 1e-9), 2
            ),
            "stopped_early": self.stopped_early,
            "eval_split": self.eval_split,
            "eval_history": self.eval_history,
            "best_model_step": self.best["step"] if self.best else None,
            "best_metric": {self.best["metric"]: self.best["value"]} if self.best else None,
            "final_model": (
                f"best ({args.metric_for_best_model}) at step {self.best['step']}"
                if args.load_best_model_at_end and self.best else f"last, at step {self.global_step}"
            ),
            "metrics": {},
        }
        if self.is_main:
            self._save_and_evaluate(summary, state_dict)
        accelerator.wait_for_everyone()
        accelerator.end_training()  # last: it destroys the process group
        return summary

    def _load_best_weights(self) -> None:
        from safetensors.torch import load_file

        path = self.output_dir / self.best["checkpoint"] / "model.safetensors"
        if not path.exists():
            raise TrainingError(f"the best checkpoint's weights {path} are gone; the final model was not replaced")
        state = load_file(str(path))  # load_state_dict copies onto the model's device
        self.unwrapped.load_state_dict(state)
        logger.info("loaded the best model (%s %.2f at step %d)", self.best["metric"], self.best["value"], self.best["step"])

    def _save_and_evaluate(self, summary: dict, state_dict) -> None:
        args, output_dir = self.args, self.output_dir
        model = self.unwrapped
        if args.lora_r:
            model.save_pretrained(output_dir / "adapter")
            model = model.merge_and_unload()
        save_final_model(model, self.processor, output_dir, state_dict=None if args.lora_r else state_dict)
        shutil.rmtree(output_dir / ".init_processor", ignore_errors=True)
        if self.eval_split is not None:
            if self.accelerator.distributed_type.name == "FSDP":  # the in-memory model is a shard: reload it whole
                from transformers import AutoModel

                model = AutoModel.from_pretrained(output_dir).to(self.accelerator.device)
            summary["metrics"] = self._evaluate_split(model, output_dir / "eval" / self.eval_split)
        summary["total_seconds"] = round(time.perf_counter() - self.start_time, 2)
        (output_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))
        from ..model_card import write_model_card

        card_args = {k: v for k, v in summary.items() if k not in ("metrics", "eval_history")}
        write_model_card(
            output_dir,
            method=self.model_args.model,
            preset=self.model_args.preset,
            dataset=self.data_args.dataset,
            metrics=summary.get("metrics", {}),
            training_args=card_args,
        )

    def run(self) -> dict[str, Any]:
        self.build()
        self.prepare_optimization()
        self.resume()
        try:
            self.loop()
        except BaseException:
            # No collective here (another rank may be gone): close the trackers so their logs are flushed.
            for tracker in getattr(self.accelerator, "trackers", []):
                tracker.finish()
            raise
        return self.finish()


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: TrainingArguments,
    step_callback: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train one method on one dataset; returns the run summary (also written to ``run_summary.json``).

    ``step_callback(global_step, logs)`` is called after every optimizer step (tests use it to interrupt a run).
    """
    return Trainer(model_args, data_args, args, step_callback).run()
