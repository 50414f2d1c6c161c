"""The training loop: a real (tiny) run, exact resume, NaN stop, LoRA, schedules and argument values.

Faults (used folders, signals, damaged checkpoints, full disk) are in test_training_faults.py, evaluation during
training in test_training_eval.py, the README's 2-process DDP command in test_readme.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tbps_hf
from tbps_hf.training import DataArguments, ModelArguments, TrainingArguments, TrainingError, train

ROOT = Path(__file__).resolve().parents[1]
# A small ProcPEDES so each run takes seconds.
SMALL = {"num_train_identities": 24, "num_test_identities": 8, "num_test_3c_identities": 8, "images_per_identity": 2}


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("procpedes_cache"))


def _args(out, cache_dir, model="ivt", eval_split="none", **training):
    training.setdefault("max_steps", 4)
    training.setdefault("per_device_train_batch_size", 8)
    training.setdefault("images_per_identity", 2)
    return (
        ModelArguments(model=model, preset="tiny"),
        DataArguments(dataset="procpedes", cache_dir=cache_dir, dataset_options=json.dumps(SMALL), eval_split=eval_split),
        TrainingArguments(output_dir=str(out), report_to="none", logging_steps=1, **training),
    )


def test_train_saves_a_loadable_model_and_summary(tmp_path, cache_dir):
    from transformers import AutoModel, AutoProcessor

    summary = train(*_args(tmp_path / "run", cache_dir, eval_split="test"))
    out = tmp_path / "run"
    assert summary["global_step"] == 4 and summary["world_size"] == 1
    saved = json.loads((out / "run_summary.json").read_text())
    assert saved["global_step"] == 4
    assert {"R@1", "mAP", "mSD"} <= set(saved["metrics"])
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    model = AutoModel.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "IVTModel"
    batch = processor(text=["a man in a red t-shirt"], return_tensors="pt")
    assert model.get_text_features(**batch).shape[0] == 1


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def test_resume_continues_exactly(tmp_path, cache_dir):
    train(*_args(tmp_path / "straight", cache_dir, max_steps=6))

    class Crash(Exception):
        pass

    def crash_after_4(step, logs):
        if step == 4:
            raise Crash

    with pytest.raises(Crash):
        train(*_args(tmp_path / "resumed", cache_dir, max_steps=6, save_steps=3), step_callback=crash_after_4)
    assert (tmp_path / "resumed" / "checkpoint-3").is_dir()
    TrainingArgumentsResume = _args(tmp_path / "resumed", cache_dir, max_steps=6, save_steps=3, resume_from_checkpoint="latest")
    summary = train(*TrainingArgumentsResume)
    assert summary["global_step"] == 6
    straight, resumed = _state(tmp_path / "straight"), _state(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=f"{key} differs after resume")


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, cache_dir, monkeypatch):
    model_class = tbps_hf.get_method("ivt").model_class
    original = model_class.forward
    calls = {"n": 0}

    def forward_nan_at_step_3(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(model_class, "forward", forward_nan_at_step_3)
    with pytest.raises(TrainingError, match=r"at step 3 .*checkpoint-2"):
        train(*_args(tmp_path / "nan", cache_dir, max_steps=6, save_steps=2))
    checkpoint = tmp_path / "nan" / "checkpoint-2"
    assert (checkpoint / "trainer_state.json").exists() and (checkpoint / "optimizer.bin").exists()
    assert not (tmp_path / "nan" / "model.safetensors").exists(), "a diverged run must not save a final model"


def test_unknown_names_list_the_valid_ones(tmp_path, cache_dir):
    model_args, data_args, training_args = _args(tmp_path / "x", cache_dir)
    with pytest.raises(ValueError, match="valid models: .*ivt"):
        train(ModelArguments(model="nope"), data_args, training_args)
    with pytest.raises(ValueError, match="valid presets: .*tiny"):
        train(ModelArguments(model="ivt", preset="huge"), data_args, training_args)
    with pytest.raises(ValueError, match="procpedes"):
        train(model_args, DataArguments(dataset="nope"), training_args)


def test_config_overrides_reach_the_saved_model_and_bad_ones_are_named(tmp_path, cache_dir):
    model_args, data_args, training_args = _args(tmp_path / "ablation", cache_dir, model="pcc", max_steps=1)
    model_args.config_overrides = '{"use_cmr": false, "num_fine_parts": 2}'
    summary = train(model_args, data_args, training_args)
    saved = json.loads((tmp_path / "ablation" / "config.json").read_text())
    assert saved["use_cmr"] is False and saved["num_fine_parts"] == 2
    assert summary["config_overrides"] == {"use_cmr": False, "num_fine_parts": 2}

    def refused(overrides, match, **model_fields):
        with pytest.raises(ValueError, match=match):
            train(ModelArguments(model="pcc", config_overrides=overrides, **model_fields), data_args, training_args)

    refused('{"use_cmrr": false}', r"PCCConfig has no field 'use_cmrr' \(did you mean 'use_cmr'")
    refused("use_cmr=false", "--config_overrides is not valid JSON")
    refused('["use_cmr"]', "--config_overrides must be a JSON object")
    refused('{"num_identities": 3}', "num_identities is set from the data")
    refused('{"use_cmr": false}', "cannot change a saved model", model_name_or_path=str(tmp_path / "ablation"))


def test_lora_adapter_is_saved_and_loads(tmp_path, cache_dir):
    from peft import PeftModel
    from transformers import AutoModel, AutoProcessor

    out = tmp_path / "lora"
    # a full-training run gives the base model the adapter is then trained on
    train(*_args(tmp_path / "base", cache_dir, max_steps=2))
    model_args, data_args, training_args = _args(out, cache_dir, max_steps=3, lora_r=4, learning_rate=1e-2)
    model_args.model_name_or_path = str(tmp_path / "base")
    train(model_args, data_args, training_args)
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    processor = AutoProcessor.from_pretrained(out)
    batch = processor(text=["a woman with a blue backpack"], return_tensors="pt")
    merged = AutoModel.from_pretrained(out).eval()
    with_adapter = PeftModel.from_pretrained(AutoModel.from_pretrained(tmp_path / "base"), out / "adapter").eval()
    base = AutoModel.from_pretrained(tmp_path / "base").eval()
    with torch.no_grad():
        expected = merged.get_text_features(**batch)
        got = with_adapter.get_text_features(**batch)
        before = base.get_text_features(**batch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(before, expected), "LoRA training changed nothing"
