"""The hub loop: `tbps push` (one commit, refusals before any upload), metric Spaces, and hub ids loading from the
local hub cache with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch

from tbps_hf.cli import main as tbps
from tbps_hf.hub import PushError, metric_files, push_metric, push_model
from tbps_hf.model_card import write_model_card
from tbps_hf.models import get_method

CAPTIONS = ["a woman in a red coat carrying a black bag", "a man in a blue shirt and white shoes"] * 20


def save_model_folder(folder: Path, card: bool = True) -> Path:
    method = get_method("ivt")
    config = method.config_class.from_preset("tiny", num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                             num_attention_heads=2)
    processor = method.processor_class.from_config(config, captions=CAPTIONS)
    config.vocab_size = len(processor.tokenizer)
    torch.manual_seed(0)
    method.model_class(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    if card:
        write_model_card(folder, "ivt", "tiny", "procpedes", {"test": {"R@1": 12.5, "mAP": 10.0}})
    return folder


class FakeHfApi:
    """Records what `tbps push` asks of the hub (no network)."""

    calls: list = []

    def __init__(self, token=None):
        FakeHfApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))

    def create_commit(self, repo_id, operations, commit_message, repo_type):
        FakeHfApi.calls.append(("create_commit", repo_id, [op.path_in_repo for op in operations], repo_type))
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/abc", commit_message=commit_message,
            commit_description="", oid="abc",
        )


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")
    return FakeHfApi.calls


def test_push_model_is_one_commit_of_weights_processor_and_card(tmp_path, fake_hub):
    folder = save_model_folder(tmp_path / "ivt-tiny")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "optimizer.bin").write_bytes(b"x")  # training state stays home
    push_model(folder, "tbps/ivt-tiny", private=True)
    commits = [c for c in fake_hub if c[0] == "create_commit"]
    assert len(commits) == 1
    _, repo_id, paths, repo_type = commits[0]
    assert repo_id == "tbps/ivt-tiny" and repo_type == "model"
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer_config.json", "README.md"} <= set(paths)
    assert not any(p.startswith("checkpoints") for p in paths)
    assert ("create_repo", "tbps/ivt-tiny", {"repo_type": "model", "private": True, "exist_ok": True, "space_sdk": None}) in fake_hub


def test_push_refuses_an_incomplete_folder_before_any_call(tmp_path, fake_hub):
    folder = save_model_folder(tmp_path / "no-card", card=False)
    with pytest.raises(PushError, match=r"lacks model card \(README.md\)"):
        push_model(folder, "tbps/x")
    (folder / "model.safetensors").unlink()
    with pytest.raises(PushError, match=r"lacks weights \(model.safetensors\), model card"):
        push_model(folder, "tbps/x")
    assert fake_hub == []


def test_push_without_token_says_so_and_uploads_nothing(tmp_path, fake_hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    folder = save_model_folder(tmp_path / "m")
    with pytest.raises(PushError, match=r"no Hugging Face token: run `hf auth login` or set HF_TOKEN.*nothing was uploaded"):
        push_model(folder, "tbps/m")
    assert fake_hub == []


def test_push_metric_uploads_a_metric_space_that_evaluate_loads(tmp_path, fake_hub):
    push_metric("msd", "tbps/msd")
    (_, repo_id, paths, repo_type), = [c for c in fake_hub if c[0] == "create_commit"]
    assert repo_type == "space" and sorted(paths) == ["README.md", "app.py", "msd.py", "requirements.txt"]
    assert ("create_repo", "tbps/msd", {"repo_type": "space", "private": False, "exist_ok": True, "space_sdk": "gradio"}) in fake_hub

    # the Space as the hub stores it: evaluate loads the module from it, and the card is a Space card
    import evaluate

    space = tmp_path / "msd"
    space.mkdir()
    for path in metric_files("msd"):
        shutil.copy(path, space / path.name)
    card = huggingface_hub.RepoCard.load(space / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and "evaluate" in card.data.tags
    module = evaluate.load(str(space))
    result = module.compute(predictions=[[0.9, 0.1, 0.3], [0.2, 0.8, 0.7]], references=[1, 2], gallery_ids=[1, 2, 2])
    assert 0 < result["mSD"] <= 100


README_PUSH_METRIC = "tbps push --metric msd --repo_id my-org/msd"


def test_readme_push_metric_command(fake_hub):
    """The README's metric push, exactly as written (the model push is run after `tbps convert` in
    test_convert_ivt.py)."""
    assert README_PUSH_METRIC in (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert tbps(shlex.split(README_PUSH_METRIC)[1:]) == 0
    assert [c[1] for c in fake_hub if c[0] == "create_commit"] == ["my-org/msd"]


def populate_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> None:
    """Lay ``folder`` out as huggingface_hub's cache does: blobs by hash, a snapshot of links, refs/main."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snapshot / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))


@pytest.mark.slow
def test_hub_ids_load_from_the_hub_cache_offline(tmp_path):
    folder = save_model_folder(tmp_path / "ivt-tiny")
    populate_hub_cache(tmp_path / "hub", "tbps/ivt-tiny", folder)
    script = (
        "import tbps_hf, torch\n"
        "from transformers import AutoModel, AutoProcessor\n"
        "model = AutoModel.from_pretrained('tbps/ivt-tiny').eval()\n"
        "processor = AutoProcessor.from_pretrained('tbps/ivt-tiny')\n"
        "t = processor(text=['a woman in a red coat'], return_tensors='pt')\n"
        "print(type(model).__name__, model.get_text_features(t['input_ids'], t['attention_mask']).shape[-1])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["IVTModel", "32"]
    # and a checkpoint the cache lacks fails offline rather than reaching for the network
    missing = subprocess.run(
        [sys.executable, "-c", script.replace("tbps/ivt-tiny", "tbps/absent")], env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert missing.returncode != 0 and "offline mode" in missing.stderr
