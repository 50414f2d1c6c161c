"""IVT: CMPM loss, BMM masking, MLA levels, Auto save/load, from_backbones, presets, learning."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoProcessor, BertConfig, BertModel, ViTConfig, ViTModel

import tbps_hf  # noqa: F401  (registers the Auto classes)
from tbps_hf.losses.cmpm import cmpm_loss
from tbps_hf.models.ivt import IVTConfig, IVTModel, IVTProcessor
from tbps_hf.modeling_utils import resize_position_table
from tbps_hf.models.ivt.modeling_ivt import random_patch_mask, random_text_mask

CAPTIONS = [
    "A woman in a red coat carrying a black backpack. She wears blue jeans, white shoes.",
    "The man wears a grey hoodie, black shorts and white sneakers.",
    "A young girl with long brown hair, a yellow dress and a pink bag.",
    "An old man in a green jacket, brown trousers and black shoes. He holds a white umbrella.",
]


def tiny_config(**overrides):
    # the paper's BMM and MLA on (the tiny preset turns them off for short quickstart runs)
    values = dict(vocab_size=64, max_text_length=16, num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                  intermediate_size=64, use_bmm=True, use_mla=True)
    values.update(overrides)
    return IVTConfig.from_preset("tiny", **values)


def text_batch(batch=4, length=16, vocab=64, lengths=(16, 10, 6, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, 0], ids[i, n - 1] = 2, 3  # [CLS] ... [SEP]
        ids[i, n:] = 0
    return ids, mask


# ------------------------------------------------------------------------------------------------ CMPM


def cmpm_by_hand(image, text, labels, eps=1e-8):
    image, text = image.double().numpy(), text.double().numpy()
    labels = labels.numpy()
    n = len(labels)

    def direction(a, b):
        total = 0.0
        for i in range(n):
            logits = [a[i] @ (b[j] / np.linalg.norm(b[j])) for j in range(n)]
            z = sum(math.exp(v) for v in logits)
            positives = sum(labels[i] == labels[k] for k in range(n))
            for j in range(n):
                p = math.exp(logits[j]) / z
                q = (labels[i] == labels[j]) / positives
                total += p * math.log(p / (q + eps))
        return total / n

    return direction(image, text), direction(text, image)


def test_cmpm_matches_hand_computation_both_directions():
    torch.manual_seed(0)
    image, text = torch.randn(5, 6), torch.randn(5, 6) * 2
    labels = torch.tensor([0, 0, 1, 2, 2])
    i2t, t2i = cmpm_loss(image, text, labels)
    ref_i2t, ref_t2i = cmpm_by_hand(image, text, labels)
    assert i2t.item() == pytest.approx(ref_i2t, rel=1e-5)
    assert t2i.item() == pytest.approx(ref_t2i, rel=1e-5)
    assert abs(ref_i2t - ref_t2i) > 1e-3  # the two directions really differ


def test_cmpm_is_small_for_perfect_matching_and_checks_shapes():
    embeds = torch.eye(4) * 30
    i2t, t2i = cmpm_loss(embeds, embeds, torch.arange(4))
    assert i2t.item() < 1e-6 and t2i.item() < 1e-6
    with pytest.raises(ValueError, match="image labels"):
        cmpm_loss(embeds, embeds, torch.arange(3))
    with pytest.raises(ValueError, match="expects"):
        cmpm_loss(embeds, torch.randn(4, 5), torch.arange(4))


def test_model_loss_is_sum_of_terms():
    config = tiny_config()
    model = IVTModel(config).eval()
    ids, mask = text_batch()
    pixels = torch.randn(4, 3, *config.image_size)
    labels = torch.tensor([0, 0, 1, 2])
    out = model(ids, mask, pixels, person_ids=labels)
    ref_i2t, ref_t2i = cmpm_loss(out.image_embeds, out.text_embeds, labels)
    assert out.loss_cmpm_i2t.item() == pytest.approx(ref_i2t.item(), rel=1e-6)
    assert out.loss_cmpm_t2i.item() == pytest.approx(ref_t2i.item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(ref_i2t.item() + ref_t2i.item(), rel=1e-6)
    assert model(ids, mask, pixels, person_ids=labels, return_loss=False).loss is None


# ------------------------------------------------------------------------------------------------ BMM


def test_text_mask_ratio_and_never_padding_or_special():
    torch.manual_seed(1)
    ids, mask = text_batch(lengths=(16, 12, 5, 3))
    masked = random_text_mask(mask, 0.3)
    words = mask.sum(1) - 2  # minus [CLS] and [SEP]
    assert masked.sum(1).tolist() == [math.floor(0.3 * n) for n in words.tolist()] == [4, 3, 0, 0]
    assert not masked[mask == 0].any()  # padding never chosen
    assert not masked[:, 0].any()  # [CLS]
    assert not masked[torch.arange(4), mask.sum(1) - 1].any()  # [SEP]
    # positions vary between calls
    assert not torch.equal(random_text_mask(mask, 0.3), random_text_mask(mask, 0.3)) or not torch.equal(
        random_text_mask(mask, 0.3), masked
    )
    uniform = torch.stack([random_text_mask(mask, 0.3, "uniform").sum(1) for _ in range(50)])
    assert (uniform <= torch.tensor([4, 3, 0, 0])).all() and uniform[:, 0].min() < 4


def test_patch_mask_ratio_and_per_sample_positions():
    torch.manual_seed(2)
    keep, masked = random_patch_mask(6, 192, 0.3)
    assert masked.sum(1).tolist() == [57] * 6  # floor(0.3 * 24 * 8)
    assert keep.shape == (6, 135)
    assert torch.equal(masked.gather(1, keep), torch.zeros_like(keep, dtype=torch.bool))
    assert len({tuple(row.tolist()) for row in keep}) > 1  # different samples drop different patches


def test_bmm_in_training_only_and_padding_untouched():
    config = tiny_config()
    model = IVTModel(config)
    ids, mask = text_batch()
    pixels = torch.randn(4, 3, *config.image_size)
    model.train()
    out = model(ids, mask, pixels)
    assert out.image_bmm_mask.sum(1).tolist() == [math.floor(0.3 * config.num_patches)] * 4
    assert out.text_bmm_mask.sum(1).tolist() == [4, 2, 1, 0]
    assert not out.text_bmm_mask[mask == 0].any()
    # training forward differs from the unmasked features; eval is deterministic and unmasked
    assert not torch.allclose(out.image_embeds, model.get_image_features(pixels), atol=1e-5)
    model.eval()
    ev = model(ids, mask, pixels)
    assert ev.text_bmm_mask is None and ev.image_bmm_mask is None
    assert torch.allclose(ev.image_embeds, model.get_image_features(pixels))
    assert torch.allclose(ev.text_embeds, model.get_text_features(ids, mask))
    off = IVTModel(tiny_config(use_bmm=False)).train()
    assert off(ids, mask, pixels).image_bmm_mask is None


def test_hidden_text_tokens_do_not_change_the_class_token():
    """A BMM-masked token behaves as if it were dropped: changing it leaves the text embedding unchanged."""
    config = tiny_config()
    model = IVTModel(config).train()
    ids, mask = text_batch()
    torch.manual_seed(5)
    out = model(ids, mask)
    changed = ids.clone()
    changed[out.text_bmm_mask] = 7
    changed[mask == 0] = 9  # padding content must not matter either
    torch.manual_seed(5)
    out2 = model(changed, mask)
    assert torch.equal(out.text_bmm_mask, out2.text_bmm_mask)
    assert torch.allclose(out.text_embeds, out2.text_embeds, atol=1e-6)


# ------------------------------------------------------------------------------------------------ model API


def test_similarity_range_and_bad_inputs():
    config = tiny_config()
    model = IVTModel(config).eval()
    ids, mask = text_batch()
    with torch.no_grad():
        sim = model.similarity(model.get_text_features(ids, mask), model.get_image_features(torch.randn(3, 3, 64, 32)))
    assert sim.shape == (4, 3) and sim.abs().max() <= 1.0 + 1e-6
    assert model.similarity_range == (-1.0, 1.0)
    with pytest.raises(ValueError, match="pixel_values"):
        model.get_image_features(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="max_text_length"):
        model.get_text_features(torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size"):
        model.get_text_features(torch.full((1, 4), 64))
    with pytest.raises(ValueError, match="both"):
        model(ids, mask, person_ids=torch.arange(4))
    assert set(IVTModel.lora_target_modules) <= {n.split(".")[-1] for n, _ in model.named_modules()}


def test_optimizer_param_groups_cover_every_parameter():
    model = IVTModel(tiny_config(lr_multipliers={"*.bias": 2.0}, decay_norm_and_bias=False))
    groups = model.optimizer_param_groups(1e-3, 0.05)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    bias_groups = [g for g in groups if g["lr"] == pytest.approx(2e-3)]
    assert bias_groups and all(g["weight_decay"] == 0.0 for g in bias_groups)
    weight = model.layers[0].attention.q_proj.weight
    assert any(g["weight_decay"] == 0.05 and any(p is weight for p in g["params"]) for g in groups)


def test_tiny_init_starts_with_a_small_cmpm_scale():
    model = IVTModel(IVTConfig.from_preset("tiny"))
    assert torch.all(model.layernorm.weight == 0.2)  # final_layer_norm_init
    assert torch.all(model.layers[0].layernorm_before.weight == 1.0)
    assert torch.all(IVTModel(tiny_config(final_layer_norm_init=1.0)).layernorm.weight == 1.0)


def test_config_validation():
    with pytest.raises(ValueError, match="mask_ratio"):
        IVTConfig.from_preset("tiny", mask_ratio=1.2)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        IVTConfig.from_preset("tiny", image_size=(60, 32))
    with pytest.raises(ValueError, match="mla_levels"):
        IVTConfig.from_preset("tiny", mla_levels=["paragraph"])
    with pytest.raises(ValueError, match="valid presets"):
        IVTConfig.from_preset("large")


def test_base_preset_builds_and_runs_forward():
    config = IVTConfig.from_preset("base")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.patch_size) == (
        768, 12, 12, 16)
    assert config.image_size == (384, 128) and config.grid_size == (24, 8)
    assert config.vocab_size == 30522 and config.max_text_length == 100
    assert config.tokenizer_name == "bert-base-uncased"
    assert config.training_defaults["optimizer"] == "sgd" and config.training_defaults["learning_rate"] == 5e-3
    model = IVTModel(config).eval()
    # paper Table 5: 166.45 M parameters
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(166.45, abs=0.5)
    ids, mask = text_batch(batch=1, length=100, vocab=30522, lengths=(20,))
    with torch.no_grad():
        out = model(ids, mask, torch.randn(1, 3, 384, 128), person_ids=torch.tensor([0]))
    assert out.text_embeds.shape == out.image_embeds.shape == (1, 768)
    assert torch.isfinite(out.loss)


# ------------------------------------------------------------------------------------------------ from_backbones


def test_from_backbones_copies_weights_and_interpolates_positions(tmp_path):
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             image_size=32, patch_size=8), add_pooling_layer=False)
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                vocab_size=90, max_position_embeddings=64), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    bert.save_pretrained(tmp_path / "bert")
    model = IVTModel.from_backbones(
        vit=str(tmp_path / "vit"), bert=str(tmp_path / "bert"), image_size=(64, 32), max_text_length=20
    )
    config = model.config
    assert config.vocab_size == 90 and config.patch_size == 8 and config.grid_size == (8, 4)
    assert config.tokenizer_name == str(tmp_path / "bert")
    vs, bs = vit.state_dict(), bert.state_dict()
    assert torch.equal(model.layers[1].attention.q_proj.weight, vs["layers.1.attention.q_proj.weight"])
    assert torch.equal(model.layers[0].attention.out_proj.bias, vs["layers.0.attention.o_proj.bias"])
    assert torch.equal(model.layers[1].layernorm_after.weight, vs["layers.1.layernorm_after.weight"])
    assert torch.equal(model.layers[0].mlp_image.fc1.weight, vs["layers.0.mlp.fc1.weight"])
    assert torch.equal(model.layers[1].mlp_text.fc2.weight, bs["encoder.layer.1.output.dense.weight"])
    assert torch.equal(model.layers[0].mlp_text.fc1.bias, bs["encoder.layer.0.intermediate.dense.bias"])
    assert torch.equal(model.text_embeddings.word_embeddings.weight, bs["embeddings.word_embeddings.weight"])
    assert torch.equal(model.text_embeddings.position_embeddings.weight, bs["embeddings.position_embeddings.weight"][:20])
    assert torch.equal(model.image_embeddings.patch_embedding.weight,
                       vs["embeddings.patch_embeddings.projection.weight"])
    assert torch.equal(model.layernorm.weight, vs["layernorm.weight"])
    pos = model.image_embeddings.position_embeddings
    old = vs["embeddings.position_embeddings"]
    assert pos.shape == (1, 1 + 8 * 4, 32) and old.shape == (1, 1 + 4 * 4, 32)
    assert torch.equal(pos[:, 0], old[:, 0])  # class-token position kept
    # a constant-over-rows grid stays constant after resizing; a gradient stays monotone
    ramp = torch.arange(16.0).reshape(4, 4).repeat_interleave(32).reshape(1, 16, 32)
    resized = resize_position_table(torch.cat([torch.zeros(1, 1, 32), ramp], 1), (8, 4))[0, 1:, 0]
    rows = resized.reshape(8, 4)
    assert (rows[1:, 0] >= rows[:-1, 0]).all() and (rows[:, 1:] >= rows[:, :-1]).all()
    # loaded model runs
    ids, mask = text_batch(batch=2, length=20, vocab=90, lengths=(9, 5))
    assert model.get_text_features(ids, mask).shape == (2, 32)
    with pytest.raises(ValueError, match="hidden_size"):
        IVTModel.from_backbones(vit=vit, bert=BertModel(BertConfig(hidden_size=16, num_hidden_layers=2,
                                                                   num_attention_heads=4, intermediate_size=64,
                                                                   vocab_size=90)))


# ------------------------------------------------------------------------------------------------ processor / MLA


def example_images(n):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (80, 40, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def processor():
    config = IVTConfig.from_preset("tiny", vocab_size=300, use_mla=True)  # the paper's MLA (off in the tiny preset)
    return IVTProcessor.from_config(config, captions=CAPTIONS * 5)


def examples(seed_offset=0, n=4):
    images = example_images(n)
    return [
        {"image": images[i], "caption": CAPTIONS[i % len(CAPTIONS)], "label": i % 2, "seed": 1000 * seed_offset + i}
        for i in range(n)
    ]


def _split_groups(text, groups):
    """Greedily parse `text` as a sequence of whole `groups` (fails on a partial group)."""
    out, rest = [], text
    while rest:
        match = max((g for g in groups if rest == g or rest.startswith(g + " ")), key=len)
        out.append(match)
        rest = rest[len(match):].lstrip()
    return out


def test_mla_levels_all_appear_and_word_level_is_nouns_adjectives(processor):
    seen = {"sentence": 0, "phrase": 0, "word": 0}
    rng = np.random.default_rng(0)
    for k in range(60):
        ex = {"caption": CAPTIONS[k % 4], "seed": k, "image": None, "label": 0}
        seen[processor.choose_level(ex)] += 1
    assert min(seen.values()) >= 10  # uniform over three levels
    for caption in CAPTIONS:
        levels = processor.level_texts(caption)
        allowed_words = set(levels["word"])
        assert allowed_words and allowed_words <= set(caption.lower().replace(",", " ").replace(".", " ").split())
        assert {"wears", "carrying", "a", "and", "in", "with"}.isdisjoint(allowed_words)
        assert " ".join(levels["word_groups"]).split() == levels["word"]
        for _ in range(5):
            text = processor.level_text(caption, "word", rng)
            words = text.split()
            assert words and set(words) <= allowed_words
            assert all(group in levels["word_groups"] for group in _split_groups(text, levels["word_groups"]))
            phrase = processor.level_text(caption, "phrase", rng)
            assert phrase in levels["phrase"] and "," not in phrase and "." not in phrase.rstrip(".")
        assert processor.level_text(caption, "sentence", rng) == caption


def test_training_batch_is_reproducible_and_pairs_each_level_with_its_own_view(processor):
    batch = processor.training_batch(examples())
    again = processor.training_batch(examples())
    assert batch["pixel_values"].shape == (4, 3, 64, 32)
    assert torch.equal(batch["input_ids"], again["input_ids"])
    assert torch.equal(batch["pixel_values"], again["pixel_values"])
    assert batch["person_ids"].tolist() == [0, 1, 0, 1]
    levels = set()
    for offset in range(8):
        levels.update(processor.training_batch(examples(offset))["mla_level_ids"].tolist())
    assert levels == {0, 1, 2}
    processor.mla_mode = "all"
    try:
        full = processor.training_batch(examples(n=2))
    finally:
        processor.mla_mode = "random"
    assert full["pixel_values"].shape[0] == 6 and full["mla_level_ids"].tolist() == [0, 0, 1, 1, 2, 2]
    views = full["pixel_values"]
    assert not torch.equal(views[0], views[2]) or not torch.equal(views[2], views[4])  # separate augmentations


def test_save_load_through_auto_classes(tmp_path, processor):
    config = IVTConfig.from_preset("tiny", vocab_size=len(processor.tokenizer), num_hidden_layers=2)
    model = IVTModel(config).eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is IVTModel
    assert type(AutoConfig.from_pretrained(tmp_path)) is IVTConfig
    loaded_proc = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded_proc) is IVTProcessor and loaded_proc.mla_levels == processor.mla_levels
    inputs = loaded_proc(text=CAPTIONS[:2], images=example_images(2))
    with torch.no_grad():
        a = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        b = loaded.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        c = model.get_image_features(inputs["pixel_values"])
        d = loaded.get_image_features(inputs["pixel_values"])
    assert torch.allclose(a, b) and torch.allclose(c, d)


def test_a_few_optimizer_steps_reduce_the_loss(processor):
    torch.manual_seed(0)
    config = IVTConfig.from_preset("tiny", vocab_size=len(processor.tokenizer), num_hidden_layers=2)
    model = IVTModel(config)
    batch = processor.training_batch(examples(n=8))
    batch["person_ids"] = torch.arange(8) // 2
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(1e-3, 0.0))
    model.train()  # the tiny preset has no BMM noise; its embedding BatchNorm uses batch statistics here
    with torch.no_grad():
        before = model(**batch).loss.item()
    for _ in range(15):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model(**batch).loss.item()
    assert after < 0.75 * before


def test_patch_stride_sets_the_grid_everywhere():
    """The official CUHK / ICFG releases use overlapping patches (stride 12 of 16: 31x10 at 384x128)."""
    assert IVTConfig.from_preset("base", patch_stride=12).grid_size == (31, 10)
    config = tiny_config(patch_size=8, patch_stride=6)  # 64x32 crops → (64-8)//6+1 = 10 rows, (32-8)//6+1 = 5 cols
    assert config.grid_size == (10, 5) and config.num_patches == 50
    model = IVTModel(config)
    assert model.image_embeddings.patch_embedding.stride == (6, 6)
    assert model.image_embeddings.position_embeddings.shape[1] == 1 + 50
    pixels = torch.randn(2, 3, 64, 32)
    model.train()
    out = model(pixel_values=pixels)
    assert out.image_bmm_mask.shape == (2, 50)  # BMM masks over the strided grid
    model.eval()
    with torch.no_grad():
        assert model.get_image_attention_maps(pixels).shape == (2, 10, 5)
    with pytest.raises(ValueError, match="patch_stride"):
        tiny_config(patch_stride=9)
