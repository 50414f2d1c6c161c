"""`tbps convert --model ivt`: the authors' release layout converts, and the converted model computes what the
release's architecture computes (checked against an independent forward written here from its description)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor, BertTokenizer

import tbps_hf  # noqa: F401
from tbps_hf.models.ivt.convert_ivt_original_to_hf import ConversionError, convert

HIDDEN, LAYERS, HEADS, MLP, TEXT_POSITIONS = 128, 2, 2, 256, 40
WORDS = "a man woman in red blue black white coat shirt pants shoes bag carrying wearing with".split()


def save_tokenizer(folder):
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab))  # (vocab_file= silently maps every word to [UNK])
    tokenizer.save_pretrained(folder)
    return tokenizer


def official_state_dict(vocab_size: int, stride: int, image_size=(384, 128), patch=16, seed=0) -> dict:
    """Random tensors in exactly the release's names and shapes (UVT_Bert_IMG_TXT_MASK + training heads)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    rows = (image_size[0] - patch) // stride + 1
    cols = (image_size[1] - patch) // stride + 1
    n = rows * cols
    p = "encoder_vl."
    state = {
        p + "embeddings.word_embeddings.weight": rand(vocab_size, HIDDEN, scale=0.5),
        p + "embeddings.position_embeddings.weight": rand(TEXT_POSITIONS, HIDDEN, scale=0.5),
        p + "embeddings.token_type_embeddings.weight": rand(2, HIDDEN, scale=0.5),
        p + "embeddings.LayerNorm.weight": 1 + rand(HIDDEN),
        p + "embeddings.LayerNorm.bias": rand(HIDDEN),
        p + "embeddings.position_ids": torch.arange(TEXT_POSITIONS).unsqueeze(0),
        p + "cls_token": rand(1, 1, HIDDEN, scale=0.5),
        p + "pos_embed": rand(1, 1 + n, HIDDEN, scale=0.5),
        p + "type_embed": rand(1, 1 + n, HIDDEN, scale=0.5),
        p + "patch_embed.proj.weight": rand(HIDDEN, 3, patch, patch),
        p + "patch_embed.proj.bias": rand(HIDDEN),
        p + "norm.weight": 1 + rand(HIDDEN),
        p + "norm.bias": rand(HIDDEN),
        "temp": torch.tensor(0.07),
        "classifier_img.weight": rand(11, HIDDEN),
        "bottleneck_img.weight": 1 + rand(HIDDEN),
        "bottleneck_img.bias": rand(HIDDEN),
        "bottleneck_img.running_mean": rand(HIDDEN),
        "bottleneck_img.running_var": 1 + rand(HIDDEN).abs(),
        "bottleneck_img.num_batches_tracked": torch.tensor(7),
    }
    for i in range(LAYERS):
        b = f"{p}blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + rand(HIDDEN), b + "norm1.bias": rand(HIDDEN),
            b + "attn.qkv.weight": rand(3 * HIDDEN, HIDDEN, scale=0.1), b + "attn.qkv.bias": rand(3 * HIDDEN),
            b + "attn.proj.weight": rand(HIDDEN, HIDDEN, scale=0.1), b + "attn.proj.bias": rand(HIDDEN),
            b + "norm2.weight": 1 + rand(HIDDEN), b + "norm2.bias": rand(HIDDEN),
        })
        for mlp in ("mlp_vis", "mlp_txt"):
            state.update({
                f"{b}{mlp}.fc1.weight": rand(MLP, HIDDEN, scale=0.1), f"{b}{mlp}.fc1.bias": rand(MLP),
                f"{b}{mlp}.fc2.weight": rand(HIDDEN, MLP, scale=0.1), f"{b}{mlp}.fc2.bias": rand(HIDDEN),
            })
    return state


def save_release(path, state):
    """As the release's training script saves: a DDP model (module. prefix) in a state_dict wrapper, legacy format."""
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 60}
    torch.save(wrapped, path, _use_new_zipfile_serialization=False)


def reference_features(state, pixel_values, input_ids, attention_mask, stride, patch=16):
    """The release's test-time forward, written from its description (vit_vl.py): pre-norm blocks with a fused qkv
    (q, k, v stacked), modality-specific MLPs, image = conv patches + cls, `x + pos_embed + type_embed`; text = BERT
    embeddings (word + position + token type 0, LayerNorm eps 1e-12) with an additive -10000 key mask; the class
    token after the final LayerNorm (eps 1e-6); L2-normalized, cosine."""
    p = "encoder_vl."
    w = lambda name: state[p + name]  # noqa: E731

    def block(x, i, mlp, key_mask):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (HIDDEN,), w(b + "norm1.weight"), w(b + "norm1.bias"), 1e-6)
        bsz, n, _ = h.shape
        qkv = F.linear(h, w(b + "attn.qkv.weight"), w(b + "attn.qkv.bias"))
        qkv = qkv.reshape(bsz, n, 3, HEADS, HIDDEN // HEADS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-2, -1) * (HIDDEN // HEADS) ** -0.5
        if key_mask is not None:
            scores = scores + (1.0 - key_mask[:, None, None, :].float()) * -10000.0
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(bsz, n, HIDDEN)
        x = x + F.linear(out, w(b + "attn.proj.weight"), w(b + "attn.proj.bias"))
        h = F.layer_norm(x, (HIDDEN,), w(b + "norm2.weight"), w(b + "norm2.bias"), 1e-6)
        h = F.linear(F.gelu(F.linear(h, w(f"{b}{mlp}.fc1.weight"), w(f"{b}{mlp}.fc1.bias"))),
                     w(f"{b}{mlp}.fc2.weight"), w(f"{b}{mlp}.fc2.bias"))
        return x + h

    def encode(x, mlp, key_mask):
        for i in range(LAYERS):
            x = block(x, i, mlp, key_mask)
        x = F.layer_norm(x, (HIDDEN,), w("norm.weight"), w("norm.bias"), 1e-6)
        return F.normalize(x[:, 0], dim=-1)

    x = F.conv2d(pixel_values, w("patch_embed.proj.weight"), w("patch_embed.proj.bias"), stride=stride)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w("cls_token").expand(x.shape[0], -1, -1), x], dim=1) + w("pos_embed") + w("type_embed")
    image = encode(x, "mlp_vis", None)

    length = input_ids.shape[1]
    t = (w("embeddings.word_embeddings.weight")[input_ids] + w("embeddings.position_embeddings.weight")[:length]
         + w("embeddings.token_type_embeddings.weight")[0])
    t = F.layer_norm(t, (HIDDEN,), w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"), 1e-12)
    text = encode(t, "mlp_txt", attention_mask)
    return text, image


@pytest.mark.parametrize("stride", [16, 12])  # 12: the CUHK-PEDES / ICFG-PEDES releases' overlapping patches
def test_release_checkpoint_converts_and_matches_the_original_forward(tmp_path, stride):
    tokenizer = save_tokenizer(tmp_path / "bert-base-uncased")
    state = official_state_dict(len(tokenizer), stride)
    save_release(tmp_path / "ivt_cuhk.pth", state)
    report = convert(tmp_path / "ivt_cuhk.pth", tmp_path / "ivt-cuhk", tokenizer=str(tmp_path / "bert-base-uncased"))
    assert report["patch_stride"] == stride and report["missing"] == []
    assert report["grid"] == ([31, 10] if stride == 12 else [24, 8])
    assert sorted(report["ignored"])[0] == "bottleneck_img.bias" and "temp" in report["ignored"]

    model = AutoModel.from_pretrained(tmp_path / "ivt-cuhk").eval()
    assert model.config.patch_stride == stride and model.config.backbone_checkpoints is None
    processor = AutoProcessor.from_pretrained(tmp_path / "ivt-cuhk")
    assert (processor.image_processor.size.height, processor.image_processor.size.width) == (384, 128) and processor.max_text_length == TEXT_POSITIONS
    assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5]
    texts = processor(text=["a woman in red coat carrying a black bag", "a man with blue shirt"], return_tensors="pt")
    pixel_values = torch.randn(3, 3, 384, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        t = model.get_text_features(texts["input_ids"], texts["attention_mask"])
        i = model.get_image_features(pixel_values)
        sim = model.similarity(t, i)
    ref_t, ref_i = reference_features(state, pixel_values, texts["input_ids"], texts["attention_mask"], stride)
    assert torch.allclose(F.normalize(t, dim=-1), ref_t, atol=1e-4)
    assert torch.allclose(F.normalize(i, dim=-1), ref_i, atol=1e-4)
    assert torch.allclose(sim, ref_t @ ref_i.T, atol=1e-4)

    card = (tmp_path / "ivt-cuhk" / "README.md").read_text()
    assert "TencentYoutuResearch/PersonRetrieval-IVT" in card and "license: mit" in card and "MIT licence" in card


def test_release_raw_state_dict_without_prefix(tmp_path):
    tokenizer = save_tokenizer(tmp_path / "tok")
    state = official_state_dict(len(tokenizer), 16)
    torch.save(state, tmp_path / "raw.pth")
    report = convert(tmp_path / "raw.pth", tmp_path / "out", tokenizer=str(tmp_path / "tok"))
    assert report["grid"] == [24, 8]


def test_pickle_that_weights_only_refuses_is_refused(tmp_path):
    tokenizer = save_tokenizer(tmp_path / "tok")
    state = official_state_dict(len(tokenizer), 16)
    torch.save({"state_dict": state, "args": argparse_like()}, tmp_path / "pickled.pth")
    with pytest.raises(ConversionError, match=r"weights_only=True\) refuses this file.*never unpickles"):
        convert(tmp_path / "pickled.pth", tmp_path / "out", tokenizer=str(tmp_path / "tok"))
    assert not (tmp_path / "out").exists()


class _Args:  # an object torch's weights_only unpickler will not build (as argparse.Namespace in real checkpoints)
    lr = 0.01


def argparse_like():
    return _Args()


def test_another_methods_checkpoint_names_its_first_keys(tmp_path):
    albef = {"visual_encoder.cls_token": torch.zeros(1, 1, 8), "text_encoder.embeddings.word_embeddings.weight": torch.zeros(5, 8)}
    torch.save({"model": albef}, tmp_path / "albef.pth")
    with pytest.raises(ConversionError, match=r"not an IVT release checkpoint.*first keys are visual_encoder.cls_token"):
        convert(tmp_path / "albef.pth", tmp_path / "out")


def test_unexpected_keys_are_an_error(tmp_path):
    tokenizer = save_tokenizer(tmp_path / "tok")
    state = official_state_dict(len(tokenizer), 16)
    state["encoder_vl.extra_head.weight"] = torch.zeros(2, 2)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ConversionError, match=r"1 keys outside the IVT release layout, first: encoder_vl.extra_head.weight"):
        convert(tmp_path / "extra.pth", tmp_path / "out", tokenizer=str(tmp_path / "tok"))


def test_cli_convert_writes_a_loadable_folder(tmp_path):
    tokenizer = save_tokenizer(tmp_path / "bert-base-uncased")
    save_release(tmp_path / "ivt_rstp.pth", official_state_dict(len(tokenizer), 16))
    cmd = [sys.executable, "-m", "tbps_hf.cli", "convert", "--model", "ivt", "--checkpoint", str(tmp_path / "ivt_rstp.pth"),
           "--output_dir", str(tmp_path / "ivt-rstp"), "--tokenizer", str(tmp_path / "bert-base-uncased"),
           "--config_overrides", '{"max_text_length": 32}']
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ignored" in result.stdout and "ivt-rstp" in result.stdout
    assert json.loads((tmp_path / "ivt-rstp" / "config.json").read_text())["max_text_length"] == 32
    bad = subprocess.run([*cmd[:7], str(tmp_path / "missing.pth"), *cmd[8:]], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "tbps convert: error: --checkpoint" in bad.stderr and "no such file" in bad.stderr


README_CONVERT = "tbps convert --model ivt --checkpoint ivt_cuhk.pth --output_dir ivt-cuhk --tokenizer bert-base-uncased"
README_PUSH_MODEL = "tbps push --model ivt-cuhk --repo_id my-org/ivt-cuhk"


def test_readme_convert_then_push_commands(tmp_path, monkeypatch):
    """The README's commands exactly as written: the release file and a local `bert-base-uncased` folder in the
    working directory, then the converted folder pushed (to a recording stand-in of the hub API)."""
    import shlex
    from pathlib import Path

    import huggingface_hub

    from tbps_hf.cli import main as tbps

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert README_CONVERT in readme and README_PUSH_MODEL in readme
    monkeypatch.chdir(tmp_path)
    tokenizer = save_tokenizer(tmp_path / "bert-base-uncased")
    save_release(tmp_path / "ivt_cuhk.pth", official_state_dict(len(tokenizer), 16))
    assert tbps(shlex.split(README_CONVERT)[1:]) == 0

    commits = []

    class FakeHfApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def create_commit(self, repo_id, operations, commit_message, repo_type):
            commits.append((repo_id, sorted(op.path_in_repo for op in operations)))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    assert tbps(shlex.split(README_PUSH_MODEL)[1:]) == 0
    (repo_id, files), = commits
    assert repo_id == "my-org/ivt-cuhk"
    assert {"model.safetensors", "config.json", "README.md", "conversion_report.json", "tokenizer_config.json"} <= set(files)


@pytest.mark.slow
def test_converted_model_evaluates_by_hub_id_offline(tmp_path):
    """The whole loop: a release converted, published (here: laid out in a hub cache), then
    `tbps evaluate --model org/name` with HF_HUB_OFFLINE=1."""
    import os

    from test_hub import populate_hub_cache

    tokenizer = save_tokenizer(tmp_path / "tok")
    save_release(tmp_path / "ivt.pth", official_state_dict(len(tokenizer), 12))
    convert(tmp_path / "ivt.pth", tmp_path / "ivt-cuhk", tokenizer=str(tmp_path / "tok"))
    populate_hub_cache(tmp_path / "hub", "my-org/ivt-cuhk", tmp_path / "ivt-cuhk")
    small = {"num_train_identities": 4, "num_test_identities": 6, "num_test_3c_identities": 4, "images_per_identity": 2}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "tbps_hf.cli", "evaluate", "--model", "my-org/ivt-cuhk", "--dataset", "procpedes",
         "--dataset_options", json.dumps(small), "--cache_dir", str(tmp_path / "data"), "--output_dir",
         str(tmp_path / "eval"), "--no_progress"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next((tmp_path / "eval").rglob("metrics.json")).read_text())
    assert 0 <= metrics["overall"]["R@1"] <= 100 and math.isfinite(metrics["overall"]["mAP"])


@pytest.mark.parametrize("stride, grid", [(12, (31, 10)), (16, (24, 8))])
def test_full_size_release_shapes_give_the_paper_architecture(stride, grid):
    """The released files' real shapes (ViT-B/16 + bert-base-uncased embeddings, 512 text positions) infer the
    paper's architecture; meta tensors: shapes only, no memory."""
    from tbps_hf.models.ivt.convert_ivt_original_to_hf import infer_config

    rows, cols = grid
    p = "encoder_vl."
    state = {
        p + "cls_token": (1, 1, 768), p + "pos_embed": (1, 1 + rows * cols, 768), p + "type_embed": (1, 1 + rows * cols, 768),
        p + "patch_embed.proj.weight": (768, 3, 16, 16), p + "embeddings.word_embeddings.weight": (30522, 768),
        p + "embeddings.position_embeddings.weight": (512, 768), p + "embeddings.token_type_embeddings.weight": (2, 768),
    }
    for i in range(12):
        state[f"{p}blocks.{i}.attn.qkv.weight"] = (2304, 768)
        state[f"{p}blocks.{i}.attn.qkv.bias"] = (2304,)
        state[f"{p}blocks.{i}.mlp_vis.fc1.weight"] = (3072, 768)
    state = {k: torch.empty(shape, device="meta") for k, shape in state.items()}
    config = infer_config(state, "bert-base-uncased")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (768, 12, 12, 3072)
    assert (config.vocab_size, config.max_text_length, config.image_size) == (30522, 100, (384, 128))
    assert config.patch_stride == stride and tuple(config.grid_size) == grid and config.qkv_bias


def test_a_tokenizer_that_cannot_be_loaded_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = official_state_dict(30, 16)
    torch.save(state, tmp_path / "ivt.pth")
    with pytest.raises(ConversionError, match=r"--tokenizer .*not-a-tokenizer: cannot be loaded"):
        convert(tmp_path / "ivt.pth", tmp_path / "out", tokenizer=str(tmp_path / "not-a-tokenizer"))
    assert not (tmp_path / "out").exists()
