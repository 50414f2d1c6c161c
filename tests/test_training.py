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


# every test starts from a fresh accelerate state (the fixture lives in conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


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


@pytest.mark.parametrize("model", ["ivt", pytest.param("laip", marks=pytest.mark.slow)])
def test_resume_continues_exactly(tmp_path, cache_dir, model):
    """LAIP: its queues travel in the checkpoint (training_state_dict) and its two-stage switch (a function of the
    progress) falls between the checkpoint (step 3) and the end."""
    train(*_args(tmp_path / "straight", cache_dir, model=model, max_steps=6))

    class Crash(Exception):
        pass

    def crash_after_4(step, logs):
        if step == 4:
            raise Crash

    with pytest.raises(Crash):
        train(*_args(tmp_path / "resumed", cache_dir, model=model, max_steps=6, save_steps=3),
              step_callback=crash_after_4)
    assert (tmp_path / "resumed" / "checkpoint-3").is_dir()
    summary = train(*_args(tmp_path / "resumed", cache_dir, model=model, max_steps=6, save_steps=3,
                           resume_from_checkpoint="latest"))
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


def test_zero_is_a_value_not_the_presets_default(tmp_path, cache_dir):
    from tbps_hf.training.optimization import Hyperparameters

    defaults = {"learning_rate": 1e-3, "weight_decay": 0.05, "warmup_epochs": 1, "max_grad_norm": 5.0}
    hp = Hyperparameters.resolve(
        TrainingArguments(output_dir=str(tmp_path), learning_rate=0.0, weight_decay=0.0, warmup_epochs=0.0,
                          max_grad_norm=0.0), defaults)
    assert (hp.learning_rate, hp.weight_decay, hp.warmup_epochs, hp.max_grad_norm) == (0.0, 0.0, 0.0, 0.0)
    assert Hyperparameters.resolve(TrainingArguments(output_dir=str(tmp_path)), defaults).learning_rate == 1e-3
    # a real run at learning rate 0 leaves every parameter where it started
    one = train(*_args(tmp_path / "one", cache_dir, max_steps=1, learning_rate=0.0))
    three = train(*_args(tmp_path / "three", cache_dir, max_steps=3, learning_rate=0.0))
    assert one["learning_rate"] == three["learning_rate"] == 0.0
    a, b = _state(tmp_path / "one"), _state(tmp_path / "three")
    moving = [k for k in a if "running_" in k or "num_batches_tracked" in k]  # BatchNorm statistics do move
    for key in set(a) - set(moving):
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_schedulers_are_transformers_own_plus_multistep(tmp_path):
    from tbps_hf.training.optimization import Hyperparameters, build_scheduler, scheduler_names

    names = scheduler_names()
    assert {"multistep", "cosine", "linear", "constant_with_warmup", "polynomial"} <= set(names)
    with pytest.raises(ValueError, match=r"--lr_scheduler_type 'cosin' is not one of: multistep, linear, cosine"):
        Hyperparameters.resolve(TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosin"), {})
    defaults = {"num_train_epochs": 60, "milestones": [20, 40], "gamma": 0.1, "warmup_epochs": 0}
    hp = Hyperparameters.resolve(TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="multistep"), defaults)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, hp, defaults, total_steps=30, steps_per_epoch=1)
    lrs = []
    for _ in range(30):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # milestones at epochs 20 and 40 of 60 keep their place in a 30-step run: steps 10 and 20
    assert lrs[9] == 1.0 and lrs[10] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01)
    needs = {"cosine_with_min_lr": '{"min_lr": 0.01}', "cosine_warmup_with_min_lr": '{"min_lr": 0.01}',
             "warmup_stable_decay": '{"num_decay_steps": 2}'}
    with pytest.raises(ValueError, match="--lr_scheduler_type cosine_with_min_lr with --lr_scheduler_kwargs"):
        hp = Hyperparameters.resolve(TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine_with_min_lr"), {})
        build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), hp, {}, 10, 2)
    for name in names:
        hp = Hyperparameters.resolve(TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type=name,
                                                       lr_scheduler_kwargs=needs.get(name)), {})
        build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), hp, {}, 10, 2).step()


def test_training_hooks_are_called_and_their_state_resumes(tmp_path, cache_dir, monkeypatch):
    """set_training_progress before every step; training_state_dict checkpointed and restored on resume;
    find_unused_parameters decides DDP's search."""
    from tbps_hf.training import Trainer

    model_class = tbps_hf.get_method("ivt").model_class
    calls, loaded = [], []
    monkeypatch.setattr(model_class, "set_training_progress",
                        lambda self, step, total, epoch: calls.append((step, total, round(epoch, 4))))
    monkeypatch.setattr(model_class, "training_state_dict",
                        lambda self: {"queue": torch.full((3,), float(len(calls)))})
    monkeypatch.setattr(model_class, "load_training_state_dict", lambda self, state: loaded.append(state))

    class Crash(Exception):
        pass

    def crash_at_3(step, logs):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        train(*_args(tmp_path / "run", cache_dir, max_steps=5, save_steps=2), step_callback=crash_at_3)
    steps_per_epoch = 96 // 8  # SMALL: 24 identities x 2 images x 2 captions, batch 8
    assert calls == [(s, 5, round(s / steps_per_epoch, 4)) for s in range(3)]
    calls.clear()
    train(*_args(tmp_path / "run", cache_dir, max_steps=5, save_steps=2, resume_from_checkpoint="latest"))
    assert [c[0] for c in calls] == [2, 3, 4]  # continues from checkpoint-2
    (state,) = loaded
    torch.testing.assert_close(state["queue"], torch.full((3,), 2.0))  # as it was when checkpoint-2 was written

    monkeypatch.setattr(model_class, "find_unused_parameters", lambda self: True)
    trainer = Trainer(*_args(tmp_path / "unused", cache_dir))
    trainer.build()
    assert trainer.accelerator.ddp_handler.find_unused_parameters is True


def test_missing_backbone_is_reported_before_any_data_work(tmp_path):
    from tbps_hf.errors import TBPSUserError

    cache = tmp_path / "cache"
    model_args = ModelArguments(model="ivt", preset="base", backbone_checkpoints=json.dumps({"vit": str(tmp_path / "no-vit")}))
    data_args = DataArguments(dataset="procpedes", cache_dir=str(cache), dataset_options=json.dumps(SMALL))
    with pytest.raises(TBPSUserError, match=r"backbone 'vit' = .*no-vit.*--init_backbones false"):
        train(model_args, data_args, TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none"))
    with pytest.raises(TBPSUserError, match=r"vitt.*vit"):
        train(ModelArguments(model="ivt", preset="base", backbone_checkpoints='{"vitt": "x"}'), data_args,
              TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none"))
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_gradient_checkpointing_flag_trains(tmp_path, cache_dir):
    summary = train(*_args(tmp_path / "gc", cache_dir, max_steps=2, gradient_checkpointing=True))
    assert summary["global_step"] == 2
