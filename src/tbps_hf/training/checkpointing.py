"""Run folders and resumable checkpoints: guard a used ``--output_dir``, find and check a checkpoint before resuming
(naming the damaged file and the earlier checkpoint to use), refuse a resume that cannot be exact, write
checkpoints through a temporary folder (a full disk leaves nothing half-written) and prune only this run's.

A checkpoint-N folder holds accelerate's state (``model.safetensors``, ``optimizer.bin``, ``random_states_R.pkl``,
``custom_checkpoint_0.pkl`` = the scheduler, ``custom_checkpoint_1.pkl`` = the model's training state), the
processor and ``trainer_state.json`` (position in the data, this run's id and settings, evaluation history, best).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

from .errors import TrainingError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
TRAINER_STATE_KEYS = ("global_step", "epoch", "micro_in_epoch", "total_steps", "run_id", "settings")
# Settings that must match for a resumed run to continue exactly as the uninterrupted one would have.
EXACT_RESUME_SETTINGS = (
    "model", "preset", "config_overrides", "model_name_or_path", "dataset", "dataset_options", "train_split",
    "per_device_train_batch_size", "images_per_identity", "gradient_accumulation_steps", "seed", "world_size",
    "learning_rate", "lr_scheduler_type", "total_steps", "lora_r",
)


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint-N folders in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()
    )


def guard_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> list[Path]:
    """Refuse to train a new run into a folder holding another one; returns what ``--overwrite_output_dir`` will
    remove (the earlier run's checkpoints, so that pruning and ``latest`` never mix two runs)."""
    if resuming or not output_dir.is_dir():
        return []
    used = sorted(p.name for p in output_dir.iterdir())
    if not used:
        return []
    if not overwrite:
        shown = ", ".join(used[:6]) + (", …" if len(used) > 6 else "")
        raise TrainingError(
            f"--output_dir {output_dir} already holds a run ({shown}): pass --resume_from_checkpoint latest to "
            "continue it, --overwrite_output_dir to replace it, or choose another --output_dir"
        )
    return [p for _, p in list_checkpoints(output_dir)] + list(output_dir.glob(".tmp-checkpoint-*"))


def resolve_checkpoint(path: str, output_dir: Path) -> Path:
    """``latest`` → the newest checkpoint-N in ``output_dir``; a run folder → an error listing its checkpoints; then
    the checkpoint's files are checked (see :func:`check_checkpoint_files`)."""
    if path == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise TrainingError(f"--resume_from_checkpoint latest: no checkpoint-N folder in {output_dir}")
        checkpoint = found[-1][1]
    else:
        checkpoint = Path(path)
        if not checkpoint.is_dir():
            raise TrainingError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
        if not (checkpoint / TRAINER_STATE).exists() and (found := list_checkpoints(checkpoint)):
            names = ", ".join(str(p) for _, p in found)
            raise TrainingError(
                f"--resume_from_checkpoint {path} is a run folder, not a checkpoint; it holds {names}: pass one of "
                f"them, or --output_dir {path} --resume_from_checkpoint latest"
            )
    check_checkpoint_files(checkpoint)
    return checkpoint


def _earlier(checkpoint: Path) -> str:
    step = int(m.group(1)) if (m := CHECKPOINT_PATTERN.match(checkpoint.name)) else None
    earlier = [p for s, p in list_checkpoints(checkpoint.parent) if step is not None and s < step]
    if earlier:
        return f"resume from the earlier {earlier[-1]} instead"
    return "there is no earlier checkpoint: start again with --overwrite_output_dir"


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "is truncated (no header)"
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            return "is truncated (header cut off)"
        try:
            header = json.loads(handle.read(header_len))
        except ValueError:
            return "has a damaged header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        return f"is truncated ({size} of {8 + header_len + end} bytes)"
    return None


def _torch_file_problem(path: Path) -> str | None:
    # torch.save writes a zip archive whose directory sits at the end: a cut-off file has none.
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return "is truncated or damaged (not a complete torch archive)"
    return None


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / TRAINER_STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(f"{path} is unreadable ({err}); {_earlier(checkpoint)}") from None
    missing = [key for key in TRAINER_STATE_KEYS if key not in state] if isinstance(state, dict) else list(TRAINER_STATE_KEYS)
    if missing:
        raise TrainingError(f"{path} lacks {', '.join(missing)}; {_earlier(checkpoint)}")
    return state


def check_checkpoint_files(checkpoint: Path) -> dict[str, Any]:
    """Every file a resume reads exists and is complete; else one error naming the file and the earlier checkpoint."""
    state = read_trainer_state(checkpoint)
    world_size = state["settings"].get("world_size", 1)
    required: list[tuple[str, str]] = [
        ("model.safetensors", "the model weights"),
        ("optimizer.bin", "the optimizer state"),
        ("custom_checkpoint_0.pkl", "the scheduler state"),
        ("custom_checkpoint_1.pkl", "the model's training state"),
        ("processor", "the processor"),
    ] + [(f"random_states_{r}.pkl", f"rank {r}'s random state") for r in range(world_size)]
    for name, what in required:
        path = checkpoint / name
        if name == "model.safetensors" and not path.exists() and (checkpoint / "adapter_model.safetensors").exists():
            path = checkpoint / "adapter_model.safetensors"
        if not path.exists():
            raise TrainingError(f"{path} ({what}) is missing; {_earlier(checkpoint)}")
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
        elif path.suffix in (".bin", ".pkl"):
            problem = _torch_file_problem(path)
        else:
            problem = None
        if problem:
            raise TrainingError(f"{path} ({what}) {problem}; {_earlier(checkpoint)}")
    return state


def check_resume_settings(checkpoint: Path, state: dict, settings: dict, allow_inexact: bool) -> None:
    """Refuse (or, with ``--allow_inexact_resume``, warn about) settings that differ from the checkpoint's."""
    if state["global_step"] >= settings["total_steps"]:
        raise TrainingError(
            f"{checkpoint} is already at step {state['global_step']}, at or past this run's {settings['total_steps']} "
            "steps: nothing to train. Its weights are in that folder; raise --max_steps (with "
            "--allow_inexact_resume) to train further"
        )
    saved = state["settings"]
    differences = [
        f"{key}={saved.get(key)!r} there, {settings.get(key)!r} now"
        for key in EXACT_RESUME_SETTINGS
        if saved.get(key) != settings.get(key)
    ]
    if not differences:
        return
    text = f"{checkpoint} was written with other settings ({'; '.join(differences)})"
    if not allow_inexact:
        raise TrainingError(
            f"cannot resume exactly: {text}. Use the checkpoint's settings, or pass --allow_inexact_resume to "
            "continue anyway"
        )
    logger.warning("--allow_inexact_resume: %s; the resumed run will not equal an uninterrupted one", text)


def _is_disk_full(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


class CheckpointWriter:
    """Writes checkpoint-N through ``.tmp-checkpoint-N`` (renamed only once complete) and prunes this run's."""

    def __init__(self, accelerator, output_dir: Path, processor, run_id: str, save_total_limit: int | None):
        self.accelerator = accelerator
        self.output_dir = output_dir
        self.processor = processor
        self.run_id = run_id
        self.save_total_limit = save_total_limit
        self.last: Path | None = None

    def save(self, trainer_state: dict, keep: Path | None = None) -> Path:
        """All ranks call this (accelerate gathers state); ``keep`` is never pruned (the best checkpoint)."""
        accelerator, is_main = self.accelerator, self.accelerator.is_main_process
        step = trainer_state["global_step"]
        final = self.output_dir / f"checkpoint-{step}"
        tmp = self.output_dir / f".tmp-checkpoint-{step}"
        if is_main and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(tmp))
            if is_main:
                self.processor.save_pretrained(tmp / "processor")
                (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
        except OSError as err:
            if not _is_disk_full(err):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            raise TrainingError(
                f"the disk is full: writing {final} failed ({err.strerror or err}); removed the half-written {tmp.name}. "
                f"Free space, then resume from {self.last or 'the start (no checkpoint yet)'}"
            ) from None
        if is_main:
            self._prune(keep)
        accelerator.wait_for_everyone()
        self.last = final
        return final

    def _prune(self, keep: Path | None) -> None:
        if not self.save_total_limit:
            return
        ours = []
        for _, path in list_checkpoints(self.output_dir):
            try:
                run_id = json.loads((path / TRAINER_STATE).read_text()).get("run_id")
            except (OSError, ValueError):
                continue  # not ours to judge: never delete what we cannot identify
            if run_id == self.run_id:
                ours.append(path)
        kept = ours[-self.save_total_limit:]
        if keep is not None and keep in ours and keep not in kept:  # the best stays, beside the newest
            kept = ours[-max(self.save_total_limit - 1, 1):] + [keep]
        for path in ours:
            if path not in kept:
                shutil.rmtree(path, ignore_errors=True)


def save_final_model(model, processor, output_dir: Path, state_dict=None) -> None:
    """Save weights, config and processor into ``output_dir`` atomically: everything is written to
    ``.tmp-final`` first, then moved in with ``config.json`` last (a folder never has a config without its weights).
    A full disk removes the temporary folder and says so."""
    tmp = output_dir / ".tmp-final"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, state_dict=state_dict)
        processor.save_pretrained(tmp)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(err):
            raise TrainingError(
                f"the disk is full: saving the final model into {output_dir} failed ({err.strerror or err}); removed "
                "the half-written .tmp-final. Free space, then resume from the last checkpoint"
            ) from None
        raise
    (output_dir / "config.json").unlink(missing_ok=True)
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != "config.json"] + ["config.json"]:
        target = output_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    tmp.rmdir()
