"""PCC (Park et al., ECCV'24): losses on hand-made batches, every ablation switch, the retrieval interface,
save/load, pretrained backbones and a learning check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import tbps_hf  # noqa: F401  (registers the Auto classes)
from tbps_hf.losses.identity import SharedIdentityClassifier, identity_classification_loss, normalized_entropy
from tbps_hf.losses.ranking import (
    commonality_margin_ranking_loss,
    commonality_margins,
    hardest_negative_ranking_loss,
)
from tbps_hf.models.pcc import PCCConfig, PCCFeatures, PCCModel, PCCProcessor

NUM_IDS = 6


def tiny(**overrides) -> PCCConfig:
    return PCCConfig.from_preset("tiny", num_identities=NUM_IDS, **overrides)


def make_batch(n=6, length=20, seed=0, vocab=1000):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[:, length - 5 :] = 0  # padded tail
    ids[mask == 0] = 0
    pixels = torch.randn(n, 3, 64, 32, generator=g)
    person_ids = torch.arange(n) % NUM_IDS
    return ids, mask, pixels, person_ids


def build(seed=0, **overrides) -> PCCModel:
    torch.manual_seed(seed)
    return PCCModel(tiny(**overrides))


# ---------------------------------------------------------------- losses on hand-made batches


def _unit(deg):
    rad = math.radians(deg)
    return [math.cos(rad), math.sin(rad)]


def _hand_ranking(v, t, labels, margins_v, margins_t):
    """Independent loop implementation of Eq. 9 / 12 with cosines of 2-d vectors."""
    n = len(v)

    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    total = 0.0
    for k in range(n):
        neg = [j for j in range(n) if labels[j] != labels[k]]
        if not neg:
            continue
        hard_t = max(cos(v[k], t[j]) for j in neg)
        hard_v = max(cos(t[k], v[j]) for j in neg)
        total += max(0.0, margins_v[k] - cos(v[k], t[k]) + hard_t)
        total += max(0.0, margins_t[k] - cos(t[k], v[k]) + hard_v)
    return total


def test_hardest_negative_ranking_by_hand():
    # image k at angle a_k, text k near it; image 0's most similar *other-identity* text is text 2 (10° away),
    # text 1 is closer but shares image 0's identity and must be skipped.
    v = np.array([_unit(0), _unit(5), _unit(10), _unit(90)], dtype=np.float64) * np.array([[2.0], [1.0], [3.0], [0.5]])
    t = np.array([_unit(20), _unit(4), _unit(30), _unit(80)], dtype=np.float64)
    labels = [0, 0, 1, 2]
    loss = hardest_negative_ranking_loss(
        torch.tensor(v, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), torch.tensor(labels), margin=0.2
    )
    expected = _hand_ranking(v, t, labels, [0.2] * 4, [0.2] * 4)
    assert expected > 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # without labels, every off-diagonal sample counts as a negative: text 1 becomes image 0's hardest negative
    loss_nolabels = hardest_negative_ranking_loss(torch.tensor(v).float(), torch.tensor(t).float(), None, 0.2)
    assert loss_nolabels.item() == pytest.approx(_hand_ranking(v, t, [0, 1, 2, 3], [0.2] * 4, [0.2] * 4), rel=1e-5)
    assert loss_nolabels.item() > loss.item()
    # "mean" divides the batch sum by N
    mean = hardest_negative_ranking_loss(torch.tensor(v).float(), torch.tensor(t).float(), torch.tensor(labels), 0.2,
                                         reduction="mean")
    assert mean.item() == pytest.approx(expected / 4, rel=1e-5)


def test_ranking_no_negative_and_slots():
    v = torch.randn(3, 8)
    t = torch.randn(3, 8)
    # all one identity: nobody has a negative → 0, and no NaN in the gradient
    v.requires_grad_(True)
    loss = hardest_negative_ranking_loss(v, t, torch.zeros(3, dtype=torch.long), 0.2)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(v.grad).all()
    # slot axis: each slot compared only with the same slot, slot losses averaged
    vs, ts = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    labels = torch.tensor([0, 1, 2, 3, 4])
    per_slot = [hardest_negative_ranking_loss(vs[:, k], ts[:, k], labels, 0.3) for k in range(3)]
    assert hardest_negative_ranking_loss(vs, ts, labels, 0.3).item() == pytest.approx(
        float(sum(per_slot) / 3), rel=1e-5
    )
    with pytest.raises(ValueError, match="reduction"):
        hardest_negative_ranking_loss(v, t, None, reduction="max")
    with pytest.raises(ValueError, match="shape"):
        hardest_negative_ranking_loss(torch.randn(3, 8), torch.randn(4, 8))


def test_commonality_margin_by_hand():
    c = 10
    uniform = torch.zeros(4, c)  # p uniform → entropy log(c) → C = 1 → margin 0
    one_hot = torch.full((4, c), -1e4)
    one_hot[:, 3] = 1e4  # p one-hot → entropy 0 → C = 0 → margin α
    assert torch.allclose(normalized_entropy(uniform), torch.ones(4))
    assert torch.allclose(normalized_entropy(one_hot), torch.zeros(4), atol=1e-6)
    assert torch.allclose(commonality_margins(uniform, 0.3), torch.zeros(4), atol=1e-6)
    assert torch.allclose(commonality_margins(one_hot, 0.3), torch.full((4,), 0.3))
    # a two-class-uniform distribution: C = log 2 / log c
    two = torch.full((1, c), -1e4)
    two[0, :2] = 0.0
    assert normalized_entropy(two).item() == pytest.approx(math.log(2) / math.log(c), rel=1e-5)

    v = np.array([_unit(0), _unit(40), _unit(100), _unit(170)])
    t = np.array([_unit(15), _unit(50), _unit(95), _unit(150)])
    labels = [0, 1, 2, 3]
    args = (torch.tensor(v).float(), torch.tensor(t).float())
    # mixed: image anchors 0, 1 common (margin 0), 2, 3 distinctive (margin α); text anchors the other way round
    logits_v = torch.cat([uniform[:2], one_hot[:2]])
    logits_t = torch.cat([one_hot[:2], uniform[:2]])
    loss = commonality_margin_ranking_loss(*args, logits_v, logits_t, torch.tensor(labels), alpha=0.3)
    expected = _hand_ranking(v, t, labels, [0, 0, 0.3, 0.3], [0.3, 0.3, 0, 0])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the margin carries no gradient into the classifier logits
    logits = one_hot.clone().requires_grad_(True)
    image = args[0].clone().requires_grad_(True)
    commonality_margin_ranking_loss(image, args[1], logits, logits, torch.tensor(labels), alpha=0.3).backward()
    assert image.grad.abs().sum() > 0
    assert logits.grad is None or torch.count_nonzero(logits.grad) == 0


def test_identity_loss_and_shared_classifier():
    clf = SharedIdentityClassifier(hidden_size=4, num_identities=5, num_slots=3)
    x = torch.randn(2, 3, 4)
    logits = clf(x)
    assert logits.shape == (2, 3, 5)
    for k in range(3):  # slot k uses classifier k for any modality
        assert torch.allclose(logits[:, k], x[:, k] @ clf.weight[k], atol=1e-6)
    assert torch.allclose(clf(x[:, 2], slot_offset=2), logits[:, 2], atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        clf(x, slot_offset=1)
    labels = torch.tensor([1, 4])
    assert identity_classification_loss(torch.zeros(2, 3, 5), labels).item() == pytest.approx(math.log(5))
    peaked = torch.full((2, 5), -50.0)
    peaked[0, 1] = peaked[1, 4] = 50.0
    assert identity_classification_loss(peaked, labels).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="0..4"):
        identity_classification_loss(torch.zeros(2, 5), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="num_identities"):
        SharedIdentityClassifier(4, 0)


# ---------------------------------------------------------------- model


def test_forward_terms_and_similarity():
    model = build().eval()
    ids, mask, pixels, person_ids = make_batch()
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, person_ids=person_ids)
    d, n = model.config.hidden_size, 6
    assert out.image_embeds.global_embeds.shape == (n, d)
    assert out.image_embeds.coarse_embeds.shape == (n, 4, d)
    assert out.text_embeds.fine_embeds.shape == (n, 4, d)
    assert out.image_attention_map.shape == (n, 8, 4)  # 8x4 grid of the tiny ResNet on 64x32
    assert torch.allclose(out.image_attention_map.sum(dim=(1, 2)), torch.ones(n), atol=1e-5)
    terms = ["loss_id_global", "loss_id_coarse", "loss_id_fine", "loss_rank_global", "loss_rank_coarse", "loss_cmr"]
    assert all(getattr(out, k) is not None for k in terms)
    assert out.loss_rank_fine is None and out.loss_cmr_coarse is None
    assert out.loss.item() == pytest.approx(sum(getattr(out, k).item() for k in terms), rel=1e-6)
    # ID loss near log(c) at init (classifier std 0.001), twice (image + text)
    assert out.loss_id_global.item() == pytest.approx(2 * math.log(NUM_IDS), rel=0.05)
    # the similarity is Eq. 14, computed here part by part
    t, i = out.text_embeds, out.image_embeds
    cos = torch.nn.functional.cosine_similarity
    manual = torch.zeros(n, n)
    for a in range(n):
        for b in range(n):
            s = cos(t.global_embeds[a], i.global_embeds[b], dim=0)
            s = s + cos(t.coarse_embeds[a], i.coarse_embeds[b], dim=-1).sum()
            s = s + cos(t.fine_embeds[a], i.fine_embeds[b], dim=-1).sum()
            manual[a, b] = s
    sim = model.similarity(t, i)
    assert torch.allclose(sim, manual, atol=1e-5)
    assert torch.allclose(out.logits_per_text, manual, atol=1e-5)
    index = model.index_features(t) @ model.index_features(i).t()
    assert model.index_features(t).shape == (n, 9 * d)
    assert torch.allclose(index, manual, atol=1e-5)
    assert model.config.similarity_range == (-9.0, 9.0)
    lo, hi = model.config.similarity_range
    assert lo <= sim.min() and sim.max() <= hi
    # FAISS inner-product search over index_features ranks as the similarity does
    import faiss

    faiss_index = faiss.IndexFlatIP(9 * d)
    faiss_index.add(model.index_features(i).detach().numpy())
    scores, order = faiss_index.search(model.index_features(t).detach().numpy(), n)
    assert np.allclose(scores, np.sort(sim.detach().numpy(), axis=1)[:, ::-1], atol=1e-4)
    # features from the separate entry points equal the forward ones
    assert torch.allclose(model.get_image_features(pixels).fine_embeds, i.fine_embeds, atol=1e-6)
    assert torch.allclose(model.get_text_features(ids, mask).coarse_embeds, t.coarse_embeds, atol=1e-6)


def test_padding_does_not_change_text_features():
    model = build().eval()
    ids, mask, _, _ = make_batch(n=2, length=20)
    longer_ids = torch.cat([ids, torch.zeros(2, 10, dtype=torch.long)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(2, 10, dtype=torch.long)], dim=1)
    a, b = model.get_text_features(ids, mask), model.get_text_features(longer_ids, longer_mask)
    for field in ("global_embeds", "coarse_embeds", "fine_embeds"):
        assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-5)


def test_embedding_batch_norm_switch():
    # paper presets leave it off; the tiny preset (from scratch) turns it on
    assert PCCConfig().embedding_batch_norm is False
    assert PCCConfig.from_preset("rn50-bert").embedding_batch_norm is False
    plain = build(embedding_batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for n, m in plain.named_modules() if "backbone" not in n)
    model = build(embedding_batch_norm=True).train()
    ids, mask, pixels, _ = make_batch(n=8)
    for features in (model.get_image_features(pixels), model.get_text_features(ids, mask)):
        slots = torch.cat([features.global_embeds[:, None], features.coarse_embeds, features.fine_embeds], dim=1)
        # every slot is centered and unit-variance per channel over the batch (BatchNorm in training mode)
        assert torch.allclose(slots.mean(0), torch.zeros_like(slots[0]), atol=1e-4)
        assert torch.allclose(slots.var(0, unbiased=False), torch.ones_like(slots[0]), atol=1e-2)
    # eval mode uses the running statistics: one sample's features do not depend on the rest of the batch
    model.eval()
    alone = model.get_image_features(pixels[:1]).fine_embeds
    assert torch.allclose(alone, model.get_image_features(pixels).fine_embeds[:1], atol=1e-5)


def _losses(model, seed=0):
    ids, mask, pixels, person_ids = make_batch(seed=seed)
    return model(input_ids=ids, attention_mask=mask, pixel_values=pixels, person_ids=person_ids)


def test_switch_without_coarse_and_fine():
    ids, mask, pixels, _ = make_batch()
    no_coarse = build(use_coarse=False).eval()
    out = _losses(no_coarse)
    assert out.image_embeds.coarse_embeds.shape[1] == 0 and out.text_embeds.fine_embeds.shape[1] == 4
    assert out.loss_id_coarse is None and out.loss_rank_coarse is None and out.loss_cmr is not None
    assert no_coarse.config.similarity_range == (-5.0, 5.0)
    assert no_coarse.index_features(out.image_embeds).shape[1] == 5 * no_coarse.config.hidden_size
    assert out.image_attention_map is not None  # the decoder still runs: its attention is the foreground map

    no_fine = build(use_fine=False).eval()
    out = _losses(no_fine)
    assert out.image_embeds.fine_embeds.shape[1] == 0 and out.loss_id_fine is None and out.loss_cmr is None
    assert out.loss_rank_coarse is not None and no_fine.decoder.part_tokens is None
    assert no_fine.config.similarity_range == (-5.0, 5.0)

    # Table 2 row 1: global embeddings only (no embedding BatchNorm: its width depends on the slots, see below)
    baseline = build(use_coarse=False, use_fine=False, embedding_batch_norm=False).eval()
    out = _losses(baseline)
    assert not hasattr(baseline, "decoder") and not hasattr(baseline, "image_encoder")
    assert baseline.config.similarity_range == (-1.0, 1.0)
    assert set(k for k, v in out.items() if k.startswith("loss_") and v is not None) == {
        "loss_id_global",
        "loss_rank_global",
    }
    assert out.logits_per_text.abs().max() <= 1.0 + 1e-5
    # the global branch is the same computation in every variant: with the full model's weights, same g
    full = build(embedding_batch_norm=False).eval()
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("classifier.")}
    missing, unexpected = baseline.load_state_dict(state, strict=False)
    assert missing == ["classifier.weight"] and any(k.startswith("decoder.") for k in unexpected)
    assert torch.allclose(
        full.get_image_features(pixels).global_embeds, baseline.get_image_features(pixels).global_embeds, atol=1e-6
    )


def test_switch_cmr_off_and_on_coarse():
    full = build().eval()
    plain = build(use_cmr=False).eval()
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), plain.state_dict().values()))
    out_cmr, out_plain = _losses(full), _losses(plain)
    assert out_plain.loss_cmr is None and out_plain.loss_rank_fine is not None
    # identical embeddings: CMR margins α(1 - C) are at most α, so CMR ≤ the plain ranking loss on F
    assert out_cmr.loss_cmr.item() <= out_plain.loss_rank_fine.item() + 1e-6
    # and CMR equals the plain loss with the hand-computed margins
    logits_v = full.classifier(full._slots(out_cmr.image_embeds))[:, 5:]
    logits_t = full.classifier(full._slots(out_cmr.text_embeds))[:, 5:]
    person_ids = make_batch()[3]
    expected = hardest_negative_ranking_loss(
        out_cmr.image_embeds.fine_embeds,
        out_cmr.text_embeds.fine_embeds,
        person_ids,
        margin=0.2 * (1 - normalized_entropy(logits_v)),
        text_margin=0.2 * (1 - normalized_entropy(logits_t)),
        reduction=full.config.ranking_reduction,
    )
    assert out_cmr.loss_cmr.item() == pytest.approx(expected.item(), rel=1e-5)

    on_coarse = build(cmr_on_coarse=True).eval()
    out = _losses(on_coarse)
    assert out.loss_rank_coarse is None and out.loss_cmr_coarse is not None
    assert out.loss_cmr_coarse.item() <= out_cmr.loss_rank_coarse.item() + 1e-6


def test_switch_separate_decoders_and_sharing():
    shared = build()
    separate = build(share_decoder=False)
    assert hasattr(separate, "image_decoder") and hasattr(separate, "text_decoder") and not hasattr(separate, "decoder")
    assert separate.image_decoder.part_tokens is None and separate.text_decoder.part_tokens is not None
    n_shared = sum(p.numel() for p in shared.parameters())
    n_separate = sum(p.numel() for p in separate.parameters())
    d, D = shared.config.hidden_size, shared.config.num_coarse_tokens
    assert n_separate - n_shared == 4 * (d * d + d) + D * d  # one more attention block and token set
    ids, mask, pixels, _ = make_batch()
    # shared: both modalities' coarse embeddings depend on the same decoder tokens
    shared.get_image_features(pixels).coarse_embeds.sum().backward()
    assert shared.decoder.tokens.grad.abs().sum() > 0
    shared.zero_grad()
    shared.get_text_features(ids, mask).coarse_embeds.sum().backward()
    assert shared.decoder.tokens.grad.abs().sum() > 0
    # separate: the image's coarse embeddings never touch the text decoder
    separate.get_image_features(pixels).coarse_embeds.sum().backward()
    assert separate.text_decoder.tokens.grad is None and separate.image_decoder.tokens.grad.abs().sum() > 0


def test_frozen_text_backbone_and_param_groups():
    model = build(freeze_text_backbone=True, lr_multipliers={"image_backbone": 0.1})
    assert not any(p.requires_grad for p in model.text_backbone.parameters())
    model.train()
    assert model.training and not model.text_backbone.training and model.image_backbone.training
    groups = {g["name"]: g for g in model.optimizer_param_groups(5e-4, weight_decay=0.01)}
    assert set(groups) == {"image_backbone", "default"}
    assert groups["image_backbone"]["lr"] == pytest.approx(5e-5) and groups["default"]["lr"] == pytest.approx(5e-4)
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    assert not any(id(p) in in_groups for p in model.text_backbone.parameters())
    # training step: no gradient reaches BERT, the text projection still learns
    out = _losses(model)
    out.loss.backward()
    assert all(p.grad is None for p in model.text_backbone.parameters())
    assert model.text_projection.weight.grad.abs().sum() > 0
    # tiny trains its text tower (a frozen random BERT carries no language)
    tiny = build()
    (group,) = tiny.optimizer_param_groups(1e-3)
    assert any(p is tiny.text_backbone.embeddings.word_embeddings.weight for p in group["params"])
    assert "q_proj" in PCCModel.lora_target_modules and "query" in PCCModel.lora_target_modules


def test_training_steps_reduce_loss():
    model = build(seed=1)
    model.train()
    ids, mask, pixels, person_ids = make_batch(n=12, seed=3)
    optimizer = torch.optim.Adam(model.optimizer_param_groups(1e-3))
    losses, hits = [], []
    for _ in range(10):
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, person_ids=person_ids)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
        # text→image retrieval on the batch: is the top image of each caption one of its identity?
        hits.append((person_ids[out.logits_per_text.argmax(dim=1)] == person_ids).float().mean().item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert hits[0] < 0.5 and hits[-1] == 1.0, hits


def test_save_load_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoProcessor

    model = build(share_decoder=False, use_cmr=False).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PCCConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, PCCModel) and loaded.config.share_decoder is False and loaded.config.use_cmr is False
    ids, mask, pixels, person_ids = make_batch()
    a = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, person_ids=person_ids)
    b = loaded(input_ids=ids, attention_mask=mask, pixel_values=pixels, person_ids=person_ids)
    assert torch.allclose(a.logits_per_text, b.logits_per_text, atol=1e-6)
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-6)

    captions = ["a man in a red shirt and blue jeans", "a woman with a black backpack and white shoes"] * 5
    config = tiny()
    processor = PCCProcessor.from_config(config, captions=captions)
    ip = processor.image_processor
    assert ip.flip_probability == 0.5 and ip.crop_padding == 0 and ip.erasing_probability == 0.0
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, PCCProcessor) and reloaded.image_processor.erasing_probability == 0.0
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 40, 3), dtype=np.uint8))
    batch = reloaded.training_batch(
        [{"image": image, "caption": captions[0], "label": 1, "seed": 5}, {"image": image, "caption": captions[1], "label": 2, "seed": 6}]
    )
    assert batch["pixel_values"].shape == (2, 3, 64, 32) and batch["input_ids"].shape == (2, 48)
    config.vocab_size = len(reloaded.tokenizer)
    out = PCCModel(config)(**batch)
    assert torch.isfinite(out.loss)


def test_from_backbones_local_checkpoints(tmp_path):
    from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel, ResNetConfig, ResNetModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    resnet = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"))
    vit = ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32,
                  patch_size=8),
        add_pooling_layer=False,
    )
    bert = BertModel(
        BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                   max_position_embeddings=64),
        add_pooling_layer=False,
    )
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=37, max_position_embeddings=48),
            vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                               image_size=32, patch_size=8),
            projection_dim=16,
        )
    )
    for name, module in (("resnet", resnet), ("vit", vit), ("bert", bert), ("clip", clip)):
        module.save_pretrained(tmp_path / name)

    model = PCCModel.from_backbones(image=tmp_path / "resnet", text=tmp_path / "bert", preset="tiny", num_identities=3)
    assert torch.equal(model.image_backbone.embedder.embedder.convolution.weight, resnet.embedder.embedder.convolution.weight)
    assert torch.equal(model.text_backbone.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert model.config.vocab_size == 99 and model.config.tokenizer_name == str(tmp_path / "bert")
    ids = torch.randint(1, 99, (2, 12))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(2, 3, 64, 32),
                person_ids=torch.tensor([0, 2]))
    assert torch.isfinite(out.loss)

    # ViT at 32x32 → 64x32 crops: position embeddings interpolated to the 8x4 grid
    model = PCCModel.from_backbones(image=tmp_path / "vit", text=tmp_path / "bert", preset="tiny")
    assert model.grid == (8, 4)
    assert torch.equal(model.image_backbone.embeddings.position_embeddings, vit.embeddings.position_embeddings)
    assert model.get_image_features(torch.randn(2, 3, 64, 32)).fine_embeds.shape == (2, 4, 128)

    # a full CLIP checkpoint gives both towers
    model = PCCModel.from_backbones(image=tmp_path / "clip", text=tmp_path / "clip", preset="tiny", max_text_length=32)
    assert model.config.vision_config.model_type == "clip_vision_model"
    assert model.config.text_config.model_type == "clip_text_model"
    assert torch.equal(
        model.text_backbone.text_model.embeddings.token_embedding.weight
        if hasattr(model.text_backbone, "text_model")
        else model.text_backbone.embeddings.token_embedding.weight,
        clip.text_model.embeddings.token_embedding.weight,
    )
    feats = model.get_text_features(ids, torch.ones_like(ids))
    assert feats.coarse_embeds.shape == (2, 4, 128)

    with pytest.raises(ValueError, match="model_type"):
        PCCModel.from_backbones(image=tmp_path / "bert", preset="tiny")
    with pytest.raises(ValueError, match="cannot read"):
        PCCModel.from_backbones(image=tmp_path / "missing", preset="tiny")


def test_bad_input():
    with pytest.raises(ValueError, match="valid presets: clip-vit-b16, rn50-bert, tiny, vit-b16-bert"):
        PCCConfig.from_preset("rn101")
    with pytest.raises(ValueError, match="vision_config"):
        tiny(vision_config={"model_type": "swin"})
    with pytest.warns(FutureWarning, match="image_config"):  # the first release's name, in saved configs
        assert tiny(image_config=tiny().vision_config.to_dict()).vision_config.to_dict() == tiny().vision_config.to_dict()
    with pytest.raises(ValueError, match="divisible"):
        tiny(num_attention_heads=3)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        PCCModel(tiny(max_text_length=80))
    with pytest.raises(ValueError, match="stripes"):
        PCCModel(tiny(image_size=(16, 16)))
    model = PCCModel(PCCConfig.from_preset("tiny"))  # num_identities unknown
    ids, mask, pixels, person_ids = make_batch(n=2)
    with pytest.raises(ValueError, match="num_identities"):
        model(input_ids=ids, attention_mask=mask, pixel_values=pixels, person_ids=person_ids)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)  # inference without labels is fine
    assert out.loss is None and out.logits_per_text.shape == (2, 2)
    with pytest.raises(ValueError, match="at most max_text_length"):
        model.get_text_features(torch.ones(1, 60, dtype=torch.long))
    with pytest.raises(TypeError, match="PCCFeatures"):
        model.index_features(torch.randn(2, 8))


@pytest.mark.slow
def test_full_presets_forward():
    """Each paper preset builds from its config (random init, no hub) and runs forward + losses at 384x128."""
    for preset in ("rn50-bert", "vit-b16-bert", "clip-vit-b16"):
        config = PCCConfig.from_preset(preset, num_identities=3)
        model = PCCModel(config).eval()
        ids = torch.randint(1, 1000, (2, 16))
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(2, 3, 384, 128),
                        person_ids=torch.tensor([0, 1]))
        assert model.grid == ((12, 4) if preset == "rn50-bert" else (24, 8))
        assert out.image_embeds.fine_embeds.shape == (2, 4, config.hidden_size)
        assert torch.isfinite(out.loss) and out.logits_per_text.abs().max() <= 9
        assert not any(p.requires_grad for p in model.text_backbone.parameters())
        del model


def test_attention_is_finite_under_float16_autocast():
    # max-pooled ResNet features of a fresh backbone reach hundreds: q·k then overflows float16 unless upcast
    from tbps_hf.models.pcc.modeling_pcc import _attention

    torch.manual_seed(0)
    attention = _attention(tiny(hidden_size=256, num_attention_heads=2)).eval()
    memory = 300 * torch.rand(2, 12, 256)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[1, 8:] = True
    reference, reference_weights = attention(memory, memory, key_mask=~mask, output_attentions=True)
    with torch.autocast("cpu", dtype=torch.float16):
        out, weights = attention(memory, memory, key_mask=~mask, output_attentions=True)
        fused = attention(memory, memory, key_mask=~mask)[0]  # SDPA, also in float32
    assert torch.isfinite(fused).all()
    assert torch.isfinite(out).all() and weights.dtype == torch.float32
    assert torch.allclose(weights, reference_weights, atol=1e-2)
    assert torch.nn.functional.cosine_similarity(out.float().flatten(1), reference.flatten(1)).min() > 0.999
    assert weights[1, :, :, 8:].abs().max() == 0  # padded keys still ignored
