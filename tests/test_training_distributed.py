"""The shipped accelerate configs, and a launch asking for more processes than the machine has GPUs.

FSDP cannot run on CPU through accelerate 1.15: `AcceleratorState` turns a launch into FSDP only when its device
type is a multi-accelerator one (MULTI_GPU, MULTI_XPU, …); with CPU processes (MULTI_CPU, gloo) the FSDP plugin is
dropped without a word. The test runs fsdp.yaml with two gloo ranks anyway: the run completes as plain data parallel,
says so in one warning, saves the whole model and resumes exactly. The FSDP-specific final gather
(`accelerator.get_state_dict`) needs a GPU machine to be exercised."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_training import SMALL, cache_dir  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


def _env():
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def test_configs_are_valid_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = load_config_from_file(str(path))
        kinds[path.name] = config.distributed_type.value
        assert config.mixed_precision == "bf16" and yaml.safe_load(path.read_text())["num_machines"] == 1
    assert kinds == {"deepspeed_zero2.yaml": "DEEPSPEED", "fsdp.yaml": "FSDP", "multi_gpu.yaml": "MULTI_GPU"}


def _launch(config: str, out: Path, cache: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        ACCELERATE, "launch", "--config_file", str(CONFIGS / config), "--num_processes", "2", "--mixed_precision",
        "no", str(ROOT / "train.py"), "--model", "ivt", "--preset", "tiny", "--cache_dir", cache,
        "--dataset_options", json.dumps(SMALL), "--output_dir", str(out), "--max_steps", "4",
        "--per_device_train_batch_size", "4", "--report_to", "none", "--save_steps", "2", *extra,
    ]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_fsdp_config_on_two_gloo_ranks_says_it_is_not_sharded_saves_the_full_model_and_resumes_exactly(tmp_path, cache_dir):
    from transformers import AutoModel

    out = tmp_path / "fsdp"
    done = _launch("fsdp.yaml", out, cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["distributed_type"] == "MULTI_CPU" and summary["world_size"] == 2 and summary["metrics"]
    assert "FSDP was requested but accelerate runs MULTI_CPU" in done.stderr
    import tbps_hf  # noqa: F401

    model = AutoModel.from_pretrained(out)  # every parameter present and full-sized, not rank 0's shard
    saved = load_file(str(out / "model.safetensors"))
    for name, parameter in model.state_dict().items():
        assert saved[name].shape == parameter.shape, name
    # resume the finished run from its step-2 checkpoint: the same final weights
    again = _launch("fsdp.yaml", out, cache_dir, "--resume_from_checkpoint", str(out / "checkpoint-2"),
                    "--eval_split", "none")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = load_file(str(out / "model.safetensors"))
    for name in saved:
        torch.testing.assert_close(resumed[name], saved[name], rtol=0, atol=0, msg=name)


def test_more_processes_than_the_machine_has_gpus_names_the_fix(monkeypatch):
    """8 processes per machine from multi_gpu.yaml on a 2-GPU machine (simulated: no GPU here) → one line with the
    --num_processes that fits, before CUDA fails with "invalid device ordinal" on the surplus ranks."""
    from tbps_hf.training import TrainingError
    from tbps_hf.training.building import check_launch_fits_machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("WORLD_SIZE", "16")
    with pytest.raises(TrainingError, match=r"launched 8 processes on this machine but it has 2 GPU\(s\): pass "
                                            r"--num_processes 4 to accelerate launch"):
        check_launch_fits_machine()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    check_launch_fits_machine()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")  # CPU processes: any number
    check_launch_fits_machine()


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank_at_one_step_with_one_checkpoint(tmp_path, cache_dir):
    """Preemption of a 2-process job: SIGTERM to `accelerate launch`, which passes it to both ranks."""
    import signal
    import time

    out = tmp_path / "run"
    cmd = [
        ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", str(ROOT / "train.py"), "--model", "ivt", "--preset", "tiny", "--cache_dir",
        cache_dir, "--dataset_options", json.dumps(SMALL), "--output_dir", str(out), "--max_steps", "400",
        "--per_device_train_batch_size", "4", "--eval_split", "none", "--save_strategy", "no",
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(out.rglob("events.out.tfevents.*")):  # the tracker starts with the loop
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.startswith("tbps train:")]
    assert len(lines) == 1 and "stopped by SIGTERM at step" in lines[0], stderr[-3000:]
    (checkpoint,) = out.glob("checkpoint-*")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["settings"]["world_size"] == 2 and f"saved {checkpoint}" in lines[0]
    assert (checkpoint / "random_states_1.pkl").exists()
