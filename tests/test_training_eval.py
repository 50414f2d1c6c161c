"""Evaluation during training (HF names): history and TensorBoard scalars, best model kept and restored, best-so-far
across resume, no effect on training itself, bad combinations refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_training import SMALL, _args, cache_dir  # noqa: F401  (fixtures)

# every test starts from a fresh accelerate state (the fixture lives in conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
from tbps_hf.training import Trainer, TrainingArguments, parse_args, train

ROOT = Path(__file__).resolve().parents[1]


def test_eval_every_n_steps_logs_history_and_scalars(tmp_path, cache_dir):
    out = tmp_path / "run"
    model_args, data_args, training_args = _args(out, cache_dir, eval_split=None, max_steps=4, eval_strategy="steps",
                                                 eval_steps=2, save_strategy="no")
    training_args.report_to = "tensorboard"
    summary = train(model_args, data_args, training_args)
    assert summary["eval_split"] == "test"  # ProcPEDES has no validation split
    history = json.loads((out / "run_summary.json").read_text())["eval_history"]
    assert [entry["step"] for entry in history] == [2, 4]
    assert {"R@1", "mAP", "mSD"} <= set(history[0]["metrics"])
    assert summary["best_model_step"] in (2, 4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = {}
    for events in out.rglob("events.out.tfevents.*"):  # accelerate writes hparams into a run of their own
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "eval/R@1" in accumulator.Tags()["scalars"]:
            steps = [e.step for e in accumulator.Scalars("eval/R@1")]
    assert steps == [2, 4], "eval/R@1 is not a TensorBoard scalar at each evaluation"


def test_evaluation_does_not_change_training(tmp_path, cache_dir):
    train(*_args(tmp_path / "plain", cache_dir, max_steps=4, save_strategy="no"))
    summary = train(*_args(tmp_path / "evaluated", cache_dir, max_steps=4, save_strategy="no", eval_split="test",
                           eval_strategy="steps", eval_steps=1))
    assert len(summary["eval_history"]) == 4
    plain, evaluated = load_file(str(tmp_path / "plain" / "model.safetensors")), load_file(
        str(tmp_path / "evaluated" / "model.safetensors"))
    for key in plain:
        torch.testing.assert_close(evaluated[key], plain[key], rtol=0, atol=0, msg=f"{key} changed by evaluation")


def _scripted_metrics(monkeypatch, values):
    """Evaluation returns R@1 from ``values`` in turn (the real evaluation is tested above); the final evaluation
    of the saved model returns the last value."""
    calls = []

    def fake(self, model, output_dir):
        calls.append(self.global_step)
        value = values[min(len(calls), len(values)) - 1]
        return {"R@1": value, "mAP": value / 2, "mSD": 1.0}

    monkeypatch.setattr(Trainer, "_evaluate_split", fake)
    return calls


class Crash(Exception):
    pass


def test_best_model_is_kept_and_restored_across_resume(tmp_path, cache_dir, monkeypatch):
    out = tmp_path / "run"
    common = dict(eval_split="test", max_steps=8, eval_strategy="steps", eval_steps=2, save_strategy="no",
                  load_best_model_at_end=True, save_total_limit=1)

    def crash_after_5(step, logs):
        if step == 5:
            raise Crash

    _scripted_metrics(monkeypatch, [10.0, 30.0, 20.0, 5.0, 0.0])
    with pytest.raises(Crash):
        train(*_args(out, cache_dir, **common), step_callback=crash_after_5)
    # checkpoints at each evaluation; with save_total_limit 1 the best (step 4) is kept beside the newest
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    best_weights = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    # resumed: evaluations at 6 (20) and 8 (5) do not beat the best-so-far from before the crash
    _scripted_metrics(monkeypatch, [20.0, 5.0, 5.0])
    summary = train(*_args(out, cache_dir, resume_from_checkpoint="latest", **common))
    assert [e["step"] for e in summary["eval_history"]] == [2, 4, 6, 8]
    assert summary["best_model_step"] == 4 and summary["best_metric"] == {"R@1": 30.0}
    assert (out / "checkpoint-4").is_dir() and (out / "checkpoint-6").is_dir()
    final = load_file(str(out / "model.safetensors"))
    for key in best_weights:
        torch.testing.assert_close(final[key], best_weights[key], rtol=0, atol=0)
    card = (out / "README.md").read_text()
    assert "best (R@1) at step 4" in card


def test_bad_evaluation_arguments_are_named(capsys):
    for argv, message in (
        (["--eval_strategy", "steps"], "--eval_strategy steps needs --eval_steps"),
        (["--metric_for_best_model", "R@2"], "is not a metric; choose one of R@1, R@5, R@10, mAP, mINP, mSD"),
        (["--load_best_model_at_end", "true"], "--load_best_model_at_end needs evaluation during training"),
        (["--eval_strategy", "sometimes"], "--eval_strategy must be no, steps or epoch"),
        (["--save_strategy", "steps", "--save_steps", "0"], "--save_strategy steps needs --save_steps >= 1"),
    ):
        with pytest.raises(SystemExit) as stop:  # argparse's usage error: one line, exit status 2
            parse_args(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_eval_split_missing_is_named(tmp_path, cache_dir):
    with pytest.raises(ValueError, match=r"--eval_split 'validation' not in dataset; available: train, test"):
        train(*_args(tmp_path / "run", cache_dir, eval_split="validation", eval_strategy="epoch"))


@pytest.mark.slow
def test_two_processes_evaluate_on_the_main_one_and_keep_the_best(tmp_path, cache_dir):
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    out = tmp_path / "ddp"
    cmd = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train.py"),
        "--model", "ivt", "--preset", "tiny", "--cache_dir", cache_dir, "--dataset_options", json.dumps(SMALL),
        "--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "4",
        "--eval_strategy", "steps", "--eval_steps", "2", "--load_best_model_at_end", "true",
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["world_size"] == 2 and [e["step"] for e in summary["eval_history"]] == [2, 4]
    assert summary["best_model_step"] in (2, 4) and summary["metrics"]
