"""Runs that lose nothing (issue 15): a used output folder, Ctrl-C / SIGTERM, resumes that cannot be exact, damaged
checkpoints, a full disk. Each fault fails with one line naming what to do, and keeps what was already saved."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_training import SMALL, _args, cache_dir  # noqa: F401  (fixtures)

# every test starts from a fresh accelerate state (the fixture lives in conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
from tbps_hf.training import TrainingError, train

ROOT = Path(__file__).resolve().parents[1]


class Crash(Exception):
    pass


def _crash_at(step_to_crash):
    def callback(step, logs):
        if step == step_to_crash:
            raise Crash

    return callback


def test_used_output_dir_is_refused_unless_overwrite_or_resume(tmp_path, cache_dir):
    out = tmp_path / "run"
    train(*_args(out, cache_dir, max_steps=4, save_steps=2))
    assert (out / "checkpoint-2").is_dir()
    with pytest.raises(TrainingError, match=r"already holds a run .*--resume_from_checkpoint latest.*--overwrite_output_dir"):
        train(*_args(out, cache_dir, max_steps=4))
    # --overwrite_output_dir replaces the earlier run, its checkpoints included (pruning never mixes two runs)
    summary = train(*_args(out, cache_dir, max_steps=3, save_strategy="no", overwrite_output_dir=True))
    assert summary["global_step"] == 3 and not list(out.glob("checkpoint-*"))


def test_pruning_keeps_other_runs_checkpoints_and_a_finished_checkpoint_says_so(tmp_path, cache_dir):
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(*_args(out, cache_dir, max_steps=8, save_steps=2, save_total_limit=1), step_callback=_crash_at(4))
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-4"]
    # another run's checkpoint with a higher number, e.g. copied in by hand
    foreign = out / "checkpoint-50"
    shutil.copytree(out / "checkpoint-4", foreign)
    state = json.loads((foreign / "trainer_state.json").read_text())
    (foreign / "trainer_state.json").write_text(json.dumps({**state, "run_id": "another-run"}))
    train(*_args(out, cache_dir, max_steps=8, save_steps=2, save_total_limit=1,
                 resume_from_checkpoint=str(out / "checkpoint-4")))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-50", "checkpoint-6"]
    with pytest.raises(TrainingError, match=r"checkpoint-6 is already at step 6, at or past this run's 6 steps"):
        train(*_args(out, cache_dir, max_steps=6, save_steps=2, resume_from_checkpoint=str(out / "checkpoint-6")))


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory, cache_dir):
    """A run stopped at step 5 with checkpoint-2 and checkpoint-4 (every checkpoint kept)."""
    from accelerate.state import AcceleratorState, GradientState

    out = tmp_path_factory.mktemp("crashed") / "run"
    with pytest.raises(Crash):
        train(*_args(out, cache_dir, max_steps=8, save_steps=2, save_total_limit=-1), step_callback=_crash_at(5))
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return out


def test_inexact_resume_is_refused_naming_the_difference(tmp_path, crashed_run, cache_dir):
    out = tmp_path / "run"
    shutil.copytree(crashed_run, out)
    for change, named in (
        ({"seed": 7}, "seed=42 there, 7 now"),
        ({"per_device_train_batch_size": 4}, "per_device_train_batch_size=8 there, 4 now"),
        ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps=1 there, 2 now"),
    ):
        with pytest.raises(TrainingError, match=rf"cannot resume exactly: .*{named}.*--allow_inexact_resume"):
            train(*_args(out, cache_dir, max_steps=8, save_steps=2, resume_from_checkpoint="latest", **change))
    summary = train(*_args(out, cache_dir, max_steps=8, save_steps=2, resume_from_checkpoint="latest", seed=7,
                           allow_inexact_resume=True))
    assert summary["global_step"] == 8


def test_a_run_folder_given_as_checkpoint_lists_its_checkpoints(crashed_run, cache_dir):
    with pytest.raises(TrainingError, match=r"is a run folder, not a checkpoint; it holds .*checkpoint-2, .*checkpoint-4"):
        train(*_args(crashed_run, cache_dir, max_steps=8, save_steps=2, resume_from_checkpoint=str(crashed_run)))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage, file, message",
    [
        (_truncate, "model.safetensors", r"model\.safetensors \(the model weights\) is truncated"),
        (_truncate, "optimizer.bin", r"optimizer\.bin \(the optimizer state\) is truncated"),
        (Path.unlink, "custom_checkpoint_0.pkl", r"custom_checkpoint_0\.pkl \(the scheduler state\) is missing"),
        (lambda p: p.write_text(json.dumps({"global_step": 4})), "trainer_state.json",
         r"trainer_state\.json lacks epoch, micro_in_epoch"),
    ],
)
def test_damaged_checkpoint_names_the_file_and_the_earlier_checkpoint(tmp_path, crashed_run, cache_dir, damage, file,
                                                                      message):
    out = tmp_path / "run"
    shutil.copytree(crashed_run, out)
    damage(out / "checkpoint-4" / file)
    with pytest.raises(TrainingError, match=message + r".*resume from the earlier .*checkpoint-2 instead") as err:
        train(*_args(out, cache_dir, max_steps=8, save_steps=2, resume_from_checkpoint="latest"))
    assert "\n" not in str(err.value)


def test_full_disk_removes_the_half_written_checkpoint(tmp_path, cache_dir, monkeypatch):
    real_save = torch.save

    def save_then_disk_full(obj, f, *args, **kwargs):
        if "optimizer" in str(f):
            Path(f).write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_disk_full)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"the disk is full: writing .*checkpoint-2 failed .*removed the half-written "
                                            r"\.tmp-checkpoint-2"):
        train(*_args(out, cache_dir, max_steps=4, save_steps=2))
    assert not list(out.glob(".tmp-checkpoint-*")) and not list(out.glob("checkpoint-*"))


def test_final_save_is_atomic_on_a_full_disk(tmp_path, cache_dir, monkeypatch):
    from safetensors import torch as safetensors_torch

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "run"
    monkeypatch.setattr(safetensors_torch, "save_file", disk_full)
    import transformers.modeling_utils as tmu

    monkeypatch.setattr(tmu, "safe_save_file", disk_full, raising=False)
    with pytest.raises(TrainingError, match=r"the disk is full: saving the final model"):
        train(*_args(out, cache_dir, max_steps=2, save_strategy="no"))
    assert not (out / "config.json").exists(), "a config without its weights was left behind"
    assert not (out / ".tmp-final").exists()


def test_ctrl_c_saves_a_checkpoint_at_the_next_step_boundary(tmp_path, cache_dir):
    """A real SIGINT delivered to this process mid-run (from the step callback, i.e. while training)."""
    from tbps_hf.training import TrainingInterrupted

    def press_ctrl_c(step, logs):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGINT at step 3 of 8; saved .*checkpoint-3\. To "
                                                  r"continue exactly, run the same command with "
                                                  r"--resume_from_checkpoint latest") as stop:
        train(*_args(out, cache_dir, max_steps=8, save_strategy="no"), step_callback=press_ctrl_c)
    assert stop.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handler was not restored"
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-3"]
    summary = train(*_args(out, cache_dir, max_steps=8, save_strategy="no", resume_from_checkpoint="latest"))
    assert summary["global_step"] == 8


@pytest.mark.slow
def test_sigterm_to_train_py_saves_and_says_how_to_resume(tmp_path, cache_dir):
    """Preemption: SIGTERM to a running `train.py`; exit status 128 + 15 and one line saying how to resume."""
    signum = signal.SIGTERM
    out = tmp_path / "run"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--model", "ivt", "--preset", "tiny", "--cache_dir", cache_dir,
        "--dataset_options", json.dumps(SMALL), "--output_dir", str(out), "--max_steps", "400",
        "--per_device_train_batch_size", "8", "--save_strategy", "no", "--eval_split", "none",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(out.rglob("events.out.tfevents.*")):  # the tracker starts with the loop
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    (last,) = [line for line in stderr.splitlines() if line.startswith("tbps train:")]
    assert last.startswith(f"tbps train: stopped by {signal.Signals(signum).name} at step ")
    assert "--resume_from_checkpoint latest" in last and "Traceback" not in stderr
    (checkpoint,) = out.glob("checkpoint-*")
    step = int(checkpoint.name.split("-")[1])
    assert 0 < step < 400 and not (out / "model.safetensors").exists()
    resumed = subprocess.run(cmd + ["--resume_from_checkpoint", "latest", "--allow_inexact_resume",
                                    "--max_steps", str(step + 2)],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "run_summary.json").read_text())["global_step"] == step + 2
