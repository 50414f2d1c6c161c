"""Pretrained starts (`tbps_hf.backbones`): towers come from the checkpoints, bad checkpoints stop the run early."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    CLIPConfig,
    CLIPModel,
    ResNetConfig,
    ResNetModel,
    ViTConfig,
    ViTModel,
)

from tbps_hf.backbones import (
    BackboneUnavailableError,
    build_model,
    check_backbones,
    prepare_config,
    resolve_backbones,
)
from tbps_hf.models import get_method

WORDS = "a man woman in red blue black white coat shirt pants shoes bag carrying wearing with".split()


def save_bert(folder, hidden=128, layers=4, heads=4, intermediate=512, positions=64):
    """A small BertModel saved with its own WordPiece vocabulary (as `bert-base-uncased` ships one)."""
    folder.mkdir(parents=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab))  # (vocab_file= silently maps every word to [UNK])
    torch.manual_seed(1)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=intermediate, max_position_embeddings=positions,
        ),
        add_pooling_layer=False,
    )
    bert.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return bert, len(tokenizer)


def save_vit(folder, hidden=128, layers=4, heads=4, intermediate=512, patch=8):
    torch.manual_seed(2)
    vit = ViTModel(
        ViTConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
            patch_size=patch, image_size=32, layer_norm_eps=1e-6,
        ),
        add_pooling_layer=False,
    )
    vit.save_pretrained(folder)
    return vit


def _holds(model, tensors) -> bool:
    """Whether each of ``tensors`` equals some tensor of ``model`` (robust to parameter names)."""
    ours = list(model.state_dict().values())
    return all(any(o.shape == t.shape and torch.equal(o, t) for o in ours) for t in tensors)


def _equal(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_ivt_towers_come_from_the_checkpoints_and_the_tokenizer_from_bert(tmp_path):
    method = get_method("ivt")
    bert, vocab_size = save_bert(tmp_path / "bert")
    vit = save_vit(tmp_path / "vit")
    config = method.config_class.from_preset("tiny", vocab_size=vocab_size)
    overrides = {"vit": str(tmp_path / "vit"), "bert": str(tmp_path / "bert")}
    model = build_model(method, config, overrides)

    fresh = method.model_class(config)  # what train() built before: a random init
    # every ViT tensor (positions are resized to the crop grid) and every BERT text-MLP / embedding tensor is in
    # the model, whatever the model names it; a fresh init holds none of them
    vit_tensors = [v for k, v in vit.state_dict().items() if "position" not in k]
    bert_tensors = [v for k, v in bert.state_dict().items() if "intermediate.dense" in k or "output.dense" in k and "attention" not in k or "word_embeddings" in k]
    assert _holds(model, vit_tensors) and _holds(model, bert_tensors)
    assert not _holds(fresh, vit_tensors[:1]) and not _holds(fresh, bert_tensors[:1])

    prepared = prepare_config(method, config, overrides)
    assert prepared.tokenizer_name == str(tmp_path / "bert")
    assert prepared.backbone_checkpoints == overrides
    processor = method.processor_class.from_config(prepared)
    assert processor.tokenizer.convert_tokens_to_ids("coat") == 5 + WORDS.index("coat")  # BERT's own vocabulary
    assert config.tokenizer_name is None  # the caller's config is not modified


def test_pcc_resnet_and_bert_towers(tmp_path):
    method = get_method("pcc")
    bert, vocab_size = save_bert(tmp_path / "bert", hidden=128, layers=2, heads=4, intermediate=256)
    torch.manual_seed(3)
    resnet = ResNetModel(ResNetConfig(embedding_size=32, hidden_sizes=[64, 128], depths=[1, 1], layer_type="basic"))
    resnet.save_pretrained(tmp_path / "resnet")
    config = method.config_class.from_preset("tiny", vocab_size=vocab_size)
    model = build_model(method, config, {"image": str(tmp_path / "resnet"), "text": str(tmp_path / "bert")})
    assert _equal(model.image_backbone.state_dict(), resnet.state_dict(), resnet.state_dict())
    assert _equal(model.text_backbone.state_dict(), bert.state_dict(), bert.state_dict())
    assert model.config.tokenizer_name == str(tmp_path / "bert")


def test_cfam_clip_towers(tmp_path):
    method = get_method("cfam")
    config = method.config_class.from_preset("tiny")
    torch.manual_seed(4)
    clip = CLIPModel(
        CLIPConfig(
            text_config={**config.text_config.to_dict()},
            vision_config={**config.vision_config.to_dict()},
            projection_dim=config.projection_dim,
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    model = build_model(method, config, {"clip": str(tmp_path / "clip")})
    assert torch.equal(model.visual_projection.weight, clip.visual_projection.weight)
    assert torch.equal(model.text_projection.weight, clip.text_projection.weight)
    ours, theirs = model.vision_model.state_dict(), clip.vision_model.state_dict()
    assert _equal(ours, theirs, [k for k in theirs if "position" not in k])  # positions are resized to the crop grid


def test_tiny_preset_without_checkpoints_keeps_random_init_silently():
    method = get_method("ivt")
    config = method.config_class.from_preset("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model(method, config)
    assert isinstance(model, method.model_class)
    assert check_backbones(config) == {}


def test_unknown_role_lists_the_valid_ones():
    method = get_method("pcc")
    config = method.config_class.from_preset("tiny")
    with pytest.raises(ValueError, match=r"pcc has no backbone role 'clip'; valid roles: image, text"):
        resolve_backbones(method, config, {"clip": "/models/clip"})


def test_missing_checkpoint_names_role_id_and_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    method = get_method("cfam")
    config = method.config_class.from_preset("tiny")
    with pytest.raises(BackboneUnavailableError) as err:
        check_backbones(config, {"clip": "openai/clip-vit-base-patch16-not-cached"})
    message = str(err.value)
    assert "'clip'" in message and "openai/clip-vit-base-patch16-not-cached" in message
    assert "--backbone_checkpoints '{\"clip\": " in message and "--init_backbones false" in message
    assert "\n" not in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneUnavailableError, match="has no config.json"):
        check_backbones(config, {"clip": str(tmp_path / "empty")})
    with pytest.raises(BackboneUnavailableError, match="no such folder"):
        check_backbones(config, {"clip": str(tmp_path / "missing")})


def test_paper_preset_checkpoints_are_checked_offline(monkeypatch):
    """A paper preset names hub checkpoints; offline and uncached they stop the run with the role named."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-hub-cache")
    method = get_method("ivt")
    config = method.config_class.from_preset("base")
    if not getattr(config, "backbone_checkpoints", None):
        config.backbone_checkpoints = {"vit": "google/vit-base-patch16-224-in21k", "bert": "bert-base-uncased"}
    with pytest.raises(BackboneUnavailableError, match=r"ivt backbone 'vit'"):
        check_backbones(config)


def test_init_backbones_false_warns_and_skips_loading(tmp_path):
    method = get_method("ivt")
    config = method.config_class.from_preset("tiny")
    config.backbone_checkpoints = {"vit": str(tmp_path / "never-read"), "bert": str(tmp_path / "never-read")}
    with pytest.warns(UserWarning, match="random weights instead of the pretrained vit="):
        model = build_model(method, config, init_backbones=False)
    assert not getattr(model.config, "backbone_checkpoints", None)


@pytest.mark.slow
def test_hub_ids_in_the_local_cache_are_used_offline(tmp_path):
    """Checkpoints named by hub id load from the hub cache with HF_HUB_OFFLINE=1 (as on a cluster without network)."""
    import os
    import subprocess
    import sys

    from test_hub import populate_hub_cache

    bert, vocab_size = save_bert(tmp_path / "bert")
    save_vit(tmp_path / "vit")
    populate_hub_cache(tmp_path / "hub", "my-org/bert-small", tmp_path / "bert")
    populate_hub_cache(tmp_path / "hub", "my-org/vit-small", tmp_path / "vit")
    script = (
        "import torch\n"
        "from tbps_hf.backbones import build_model, check_backbones, prepare_config\n"
        "from tbps_hf.models import get_method\n"
        "m = get_method('ivt')\n"
        f"c = m.config_class.from_preset('tiny', vocab_size={vocab_size})\n"
        "o = {'vit': 'my-org/vit-small', 'bert': 'my-org/bert-small'}\n"
        "print(sorted(check_backbones(c, o)))\n"
        "model = build_model(m, c, o)\n"
        "print(prepare_config(m, c, o).tokenizer_name)\n"
        "torch.save(model.state_dict(), 'state.pt')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "my-org/bert-small"
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    word = next(v for k, v in state.items() if k.endswith("word_embeddings.weight"))
    assert torch.equal(word, bert.state_dict()["embeddings.word_embeddings.weight"])


def test_a_tokenizer_that_cannot_be_had_is_reported_before_data_work(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    method = get_method("cfam")
    config = method.config_class.from_preset("tiny", tokenizer_name="openai/clip-vit-base-patch16-uncached")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")  # a CLIP folder saved without its tokenizer
    with pytest.raises(BackboneUnavailableError, match=r"the tokenizer 'openai/clip-vit-base-patch16-uncached' cannot"):
        check_backbones(config, {"clip": str(tmp_path / "clip")})


def test_paper_preset_with_every_role_pointed_at_local_folders(tmp_path):
    """The default path of a paper preset (`ivt --preset base`), its checkpoints replaced by local folders: the tower
    sizes come from the checkpoints, everything else from the preset, the tokenizer from the BERT folder."""
    method = get_method("ivt")
    bert, vocab_size = save_bert(tmp_path / "bert", positions=128)
    vit = save_vit(tmp_path / "vit")
    config = method.config_class.from_preset("base")
    assert set(config.backbone_checkpoints) == {"vit", "bert"}  # the paper's ImageNet ViT and BERT by default
    overrides = {"vit": str(tmp_path / "vit"), "bert": str(tmp_path / "bert")}
    model = build_model(method, config, overrides)
    assert model.config.hidden_size == 128 and model.config.image_size == (384, 128)  # sizes: checkpoint; crop: preset
    assert model.config.vocab_size == vocab_size
    vit_tensors = [v for k, v in vit.state_dict().items() if "position" not in k]
    assert _holds(model, vit_tensors) and _holds(model, [bert.state_dict()["embeddings.word_embeddings.weight"]])
    assert prepare_config(method, config, overrides).tokenizer_name == str(tmp_path / "bert")


def test_readme_table_lists_every_paper_preset_default():
    """The README's table of default backbones is the presets' own `backbone_checkpoints`."""
    from pathlib import Path

    from tbps_hf.models import method_names

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in method_names():
        method = get_method(name)
        for preset in method.config_class.preset_names():
            for role, checkpoint in (method.config_class.from_preset(preset).backbone_checkpoints or {}).items():
                row = next((line for line in readme.splitlines() if line.startswith(f"| {name} |") and f"`{preset}`" in line), "")
                assert f"`{role}`: " in row and checkpoint in row, (name, preset, role, checkpoint)


def test_laip_albef_role_says_how_to_make_the_checkpoint(monkeypatch):
    """ALBEF's weights ship only as the authors' .pth: the error says which command converts them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-hub-cache")
    config = get_method("laip").config_class.from_preset("albef-b16")
    with pytest.raises(BackboneUnavailableError) as err:
        check_backbones(config)
    message = str(err.value)
    assert "laip backbone 'albef'" in message and "tbps convert --model laip --checkpoint mscoco.pth" in message
    assert "--backbone_checkpoints '{\"albef\": " in message and "--init_backbones false" in message
