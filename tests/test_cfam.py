"""CFAM: loss terms on hand-made batches, switches, save/load, processor text augmentation, pretrained towers."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel
from transformers.initialization import no_init_weights

import tbps_hf
from tbps_hf.losses.sdm import sdm_loss, sdm_loss_from_embeddings
from tbps_hf.models.cfam import CFAMConfig, CFAMModel, CFAMProcessor
from tbps_hf.modeling_utils import resize_position_table
from tbps_hf.models.cfam.modeling_cfam import extend_text_positions, hardest_negatives

CAPTIONS = [
    "a woman in a red coat carrying a black backpack",
    "a man with blue jeans and white shoes",
    "a person wearing a green hat and a grey jacket",
    "a girl in a yellow dress with long black hair",
    "an old man in a brown suit holding an umbrella",
    "a boy wearing a white shirt and black shorts",
]


def tiny_config(**overrides):
    """The "tiny" preset shrunk further so that each test runs in about a second on 2 busy cores."""
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=32,
                 hidden_act="gelu")
    values = dict(
        num_identities=4, vocab_size=120, max_text_length=24, projection_dim=32, decoder_hidden_size=32,
        decoder_num_heads=4, decoder_intermediate_size=64,
        vision_config=dict(tower, patch_size=8, image_size=64),
        text_config=dict(tower, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        global_loss_type="sdm", sdm_temperature=0.02,  # the paper's losses (the tiny preset uses InfoNCE globally
        local_sdm_weight=1.0,  # and weighs local SDM 0.1)
        embedding_batch_norm=False,  # the paper's model (the tiny preset centers embeddings; tested on its own)
    )
    values.update(overrides)
    return CFAMConfig.from_preset("tiny", **values)


def tiny_batch(batch=6, seed=0, vocab=120, length=24):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (batch, length), generator=g)
    attention_mask = torch.ones_like(input_ids)
    for i in range(batch):  # right padding, [CLS] ... [SEP]
        n = 8 + i
        input_ids[i, 0], input_ids[i, n - 1] = 2, 3
        input_ids[i, n:], attention_mask[i, n:] = 0, 0
    return dict(
        pixel_values=torch.randn(batch, 3, 64, 32, generator=g),
        input_ids=input_ids,
        attention_mask=attention_mask,
        person_ids=torch.tensor([0, 0, 1, 2, 3, 1][:batch]),
    )


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny models run faster on one thread (intra-op threading costs more than it saves at this size, and much
    more on a loaded machine); the full-size test keeps the session's thread count."""
    threads = torch.get_num_threads()
    if "full_presets" not in request.node.name:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CFAMModel(tiny_config()).eval()


# ----------------------------------------------------------------------------------------------------------- SDM


def test_sdm_loss_matches_hand_computation():
    sim = [[0.9, 0.2, -0.1], [0.3, 0.8, 0.0], [-0.2, 0.1, 0.7]]
    pids = [5, 5, 7]
    scale, eps = 10.0, 1e-8

    def kl_rows(matrix):
        total = 0.0
        for i, row in enumerate(matrix):
            z = sum(math.exp(scale * s) for s in row)
            same = [1.0 if pids[i] == pids[j] else 0.0 for j in range(3)]
            for j, s in enumerate(row):
                p = math.exp(scale * s) / z
                q = same[j] / sum(same)
                total += p * (math.log(p) - math.log(q + eps))
        return total / len(matrix)

    expected = kl_rows(sim) + kl_rows([list(col) for col in zip(*sim)])
    got = sdm_loss(torch.tensor(sim, dtype=torch.float64), torch.tensor(pids), scale)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # from embeddings = on their cosine matrix
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    ids = torch.tensor([0, 1, 1, 2])
    cos = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
    assert sdm_loss_from_embeddings(a, b, ids, 50.0).item() == pytest.approx(sdm_loss(cos, ids, 50.0).item())


def test_sdm_loss_prefers_matching_distribution_and_checks_shapes():
    ids = torch.tensor([0, 0, 1])
    good = torch.tensor([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    bad = torch.tensor([[-1.0, -1.0, 1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    assert sdm_loss(good, ids, 20.0) < 1e-3 < sdm_loss(bad, ids, 20.0)
    with pytest.raises(ValueError, match="square"):
        sdm_loss(torch.zeros(2, 3), torch.tensor([0, 1]), 1.0)
    with pytest.raises(ValueError, match="person_ids"):
        sdm_loss(torch.zeros(2, 2), torch.tensor([0, 1, 2]), 1.0)


# ------------------------------------------------------------------------------------------------ hard negatives


def test_hardest_negative_skips_same_identity():
    # image 0's most similar text is text 1, but it shows the same person: the hardest *unpaired* one is text 3.
    sim = torch.tensor(
        [
            [0.9, 0.95, 0.1, 0.5],
            [0.8, 0.7, 0.6, 0.2],
            [0.3, 0.4, 0.9, 0.1],
            [0.2, 0.1, 0.0, 0.9],
        ]
    )
    pids = torch.tensor([0, 0, 1, 2])
    idx, valid = hardest_negatives(sim, pids)
    assert idx.tolist() == [3, 2, 1, 0] and valid.all()
    idx_t, _ = hardest_negatives(sim.t(), pids)  # hardest image per text
    assert idx_t.tolist() == [2, 2, 1, 0]

    image_index, text_index, labels = CFAMModel._match_pairs(sim, pids)
    assert image_index.tolist() == [0, 1, 2, 3] + [0, 1, 2, 3] + [2, 2, 1, 0]
    assert text_index.tolist() == [0, 1, 2, 3] + [3, 2, 1, 0] + [0, 1, 2, 3]
    assert labels.tolist() == [1] * 4 + [0] * 8
    # one identity in the batch: no negative exists, only the positives remain
    image_index, text_index, labels = CFAMModel._match_pairs(sim[:2, :2], pids[:2])
    assert labels.tolist() == [1, 1] and image_index.tolist() == text_index.tolist() == [0, 1]


# -------------------------------------------------------------------------------------------- loss terms in forward


def test_forward_terms_are_the_papers(model):
    batch = tiny_batch()
    model.train()
    torch.manual_seed(1)
    out = model(**batch)
    model.eval()
    cfg = model.config
    pids, b = batch["person_ids"], 6

    cos = F.normalize(out.image_embeds, dim=-1) @ F.normalize(out.text_embeds, dim=-1).t()
    torch.testing.assert_close(out.logits_per_image, cos)
    assert out.loss_global_sdm.item() == pytest.approx(sdm_loss(cos, pids, 1 / cfg.sdm_temperature).item(), rel=1e-5)

    k = cfg.num_granularity_queries
    assert out.image_granularity_embeds.shape == (b, k, cfg.decoder_hidden_size)
    v = F.normalize(out.image_granularity_embeds, dim=-1)
    w = F.normalize(out.text_granularity_embeds, dim=-1)
    local = torch.stack([torch.stack([(v[i] * w[j]).sum(-1).mean() for j in range(b)]) for i in range(b)])
    torch.testing.assert_close(out.local_similarity, local, rtol=1e-5, atol=1e-6)
    assert out.loss_local_sdm.item() == pytest.approx(sdm_loss(local, pids, 1 / cfg.sdm_temperature).item(), rel=1e-5)

    # Matcher: B positives then the hardest different-identity text per image and image per text (global sim).
    text_for_image, _ = hardest_negatives(cos, pids)
    image_for_text, _ = hardest_negatives(cos.t(), pids)
    assert out.match_labels.tolist() == [1.0] * b + [0.0] * (2 * b)
    assert out.match_text_index[b : 2 * b].tolist() == text_for_image.tolist()
    assert out.match_image_index[2 * b :].tolist() == image_for_text.tolist()
    for i, j in zip(out.match_image_index[b:].tolist(), out.match_text_index[b:].tolist()):
        assert pids[i] != pids[j]
    bce = F.binary_cross_entropy(torch.sigmoid(out.match_logits), out.match_labels)
    assert out.loss_match.item() == pytest.approx(bce.item(), rel=1e-4)

    # Identity loss: num_identities + 1 classes; positives keep their identity, negatives get "unmatched" (= 4).
    assert out.id_logits.shape == (3 * b, cfg.num_identities + 1)
    assert out.id_labels[:b].tolist() == pids.tolist()
    assert out.id_labels[b:].tolist() == [cfg.num_identities] * (2 * b)
    assert out.loss_id.item() == pytest.approx(F.cross_entropy(out.id_logits, out.id_labels).item(), rel=1e-5)

    total = out.loss_global_sdm + cfg.local_sdm_weight * out.loss_local_sdm + out.loss_match + out.loss_id
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-6)


def test_inference_interface(model):
    batch = tiny_batch(batch=3)
    with torch.no_grad():
        img = model.get_image_features(batch["pixel_values"])
        txt = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        sim = model.similarity(txt, img)
        out = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"], return_loss=False)
    assert img.shape == txt.shape == (3, model.config.projection_dim)
    assert sim.shape == (3, 3) and sim.abs().max() <= 1 + 1e-5
    assert model.similarity_range == (-1.0, 1.0)
    assert out.loss is None and torch.allclose(out.image_embeds, img)
    # Text pooling uses the last non-padding token: the padding after it does not change the embedding.
    ids, mask = batch["input_ids"][:1, :10], batch["attention_mask"][:1, :10]
    with torch.no_grad():
        short = model.get_text_features(ids[:, :8], mask[:, :8])
        padded = model.get_text_features(ids, mask)
        ids2 = ids.clone()
        ids2[0, 7] = 50  # changing the pooled token changes the embedding
        changed = model.get_text_features(ids2, mask)
    torch.testing.assert_close(short, padded, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed, padded)


def test_loss_weights_and_bad_inputs():
    torch.manual_seed(0)
    batch = tiny_batch()
    m = CFAMModel(tiny_config(match_weight=2.0, id_weight=0.5, local_sdm_weight=0.0))
    out = m(**batch)
    expect = out.loss_global_sdm + 0.0 * out.loss_local_sdm + 2.0 * out.loss_match + 0.5 * out.loss_id
    assert out.loss.item() == pytest.approx(expect.item(), rel=1e-6)
    with pytest.raises(ValueError, match="person_ids must be contiguous"):
        m(**{**batch, "person_ids": torch.tensor([0, 1, 2, 3, 4, 9])})
    with pytest.raises(ValueError, match="pixel_values must be"):
        m.get_image_features(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="max_text_length"):
        m.get_text_features(torch.ones(1, 30, dtype=torch.long))
    with pytest.raises(ValueError, match="num_identities"):
        CFAMModel(tiny_config(num_identities=0))(**batch)
    with pytest.raises(ValueError, match="aligned pairs"):
        m(**{**batch, "pixel_values": batch["pixel_values"][:3]})
    for bad in (dict(hard_negative_similarity="random"), dict(global_loss_type="triplet"),
                dict(num_granularity_queries=0), dict(decoder_num_heads=5)):
        with pytest.raises(ValueError):
            tiny_config(**bad)
    with pytest.raises(ValueError, match="Unknown preset"):
        CFAMConfig.from_preset("clip-b32")


# ------------------------------------------------------------------------------------------------------- switches


def test_switches():
    batch = tiny_batch()
    torch.manual_seed(0)

    separate = CFAMModel(tiny_config(share_decoder=False))
    shared = CFAMModel(tiny_config())
    assert not hasattr(shared, "image_decoder") and hasattr(shared, "granularity_decoder")
    assert separate.image_decoder is not separate.text_decoder
    n_dec = sum(p.numel() for p in shared.granularity_decoder.parameters())
    assert sum(p.numel() for p in separate.parameters()) == sum(p.numel() for p in shared.parameters()) + n_dec
    assert separate(**batch).loss_local_sdm is not None

    deep = CFAMModel(tiny_config(decoder_num_layers=3, num_granularity_queries=16))
    out = deep(**batch)
    assert len(deep.granularity_decoder.layers) == 3
    assert out.image_granularity_embeds.shape[1] == out.text_granularity_embeds.shape[1] == 16

    # Each loss off: the term is absent, the total is the sum of the rest, unused modules are not built.
    full = shared(**batch)
    terms = dict(use_global_sdm="loss_global_sdm", use_local_sdm="loss_local_sdm", use_matcher="loss_match",
                 use_id_loss="loss_id")
    for switch, field in terms.items():
        torch.manual_seed(0)
        m = CFAMModel(tiny_config(**{switch: False}))
        m.load_state_dict(shared.state_dict(), strict=False)
        out = m(**batch)
        assert getattr(out, field) is None
        rest = sum(getattr(full, f) for f in terms.values() if f != field)
        assert out.loss.item() == pytest.approx(rest.item(), rel=1e-5), switch
    no_decoder = CFAMModel(tiny_config(use_local_sdm=False, use_matcher=False))
    assert not hasattr(no_decoder, "granularity_queries") and no_decoder.matcher is None
    assert no_decoder(**batch).local_similarity is None
    assert CFAMModel(tiny_config(use_id_loss=False)).id_classifier is None

    # CLIP's InfoNCE baseline (Table 8 No.0) and local-similarity hard negatives
    m = CFAMModel(tiny_config(global_loss_type="infonce", hard_negative_similarity="local"))
    out = m(**batch)
    logits = out.logits_per_image / m.config.sdm_temperature
    t = torch.arange(6)
    assert out.loss_global_sdm.item() == pytest.approx(
        ((F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t)) / 2).item(), rel=1e-5
    )
    text_for_image, _ = hardest_negatives(out.local_similarity, batch["person_ids"])
    assert out.match_text_index[6:12].tolist() == text_for_image.tolist()


def test_default_k_and_presets():
    for name in ("clip-b16", "clip-l14"):
        cfg = CFAMConfig.from_preset(name)
        assert cfg.num_granularity_queries == 4  # Table 9 No.4 (see the config docstring for the 16 vs 4 conflict)
        assert (cfg.decoder_num_layers, cfg.decoder_hidden_size, cfg.decoder_num_heads, cfg.matcher_num_layers) == (
            2, 512, 8, 2)
        assert cfg.image_size == (384, 128) and cfg.max_text_length == 168
        assert cfg.text_config.max_position_embeddings == 168 and cfg.share_decoder
        td = cfg.training_defaults
        assert (td["optimizer"], td["learning_rate"], td["warmup_epochs"], td["num_train_epochs"],
                td["per_device_train_batch_size"], td["lr_scheduler_type"]) == ("adam", 1e-5, 5, 60, 64, "cosine")
        assert cfg.lr_multipliers["*"] == 5.0 and cfg.lr_multipliers["vision_model"] == 1.0  # 5e-5 for the new modules
    assert CFAMConfig.from_preset("clip-b16").grid_size == (24, 8)
    assert CFAMConfig.from_preset("clip-l14").tokenizer_name == "openai/clip-vit-large-patch14"
    tiny = CFAMConfig.from_preset("tiny")
    assert tiny.tokenizer_name is None and tiny.global_loss_type == "infonce" and tiny.embedding_batch_norm
    assert CFAMConfig.from_preset("clip-b16").global_loss_type == "sdm"
    assert not CFAMConfig.from_preset("clip-b16").embedding_batch_norm and not CFAMConfig().embedding_batch_norm


def test_embedding_batch_norm_switch():
    batch = tiny_batch(batch=8)
    batch["person_ids"] = torch.arange(8) % 4
    plain = CFAMModel(tiny_config())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    model = CFAMModel(tiny_config(embedding_batch_norm=True)).train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    model.config.embedding_batch_norm = False  # the same weights without the norms → the raw embeddings
    raw = model(**batch)
    model.config.embedding_batch_norm = True
    # training mode: every channel of the global and the granularity embeddings is standardized over the batch
    for name in ("image_embeds", "text_embeds", "image_granularity_embeds", "text_granularity_embeds"):
        x = getattr(raw, name).flatten(1)
        expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
        assert torch.allclose(getattr(out, name).flatten(1), expected, atol=1e-4), name
        assert getattr(out, name).flatten(1).mean(0).abs().max() < 1e-4
    # eval mode: running statistics, so one sample's embedding does not depend on the rest of the batch
    model.eval()
    pixels = batch["pixel_values"]
    assert torch.allclose(model.get_image_features(pixels[:1]), model.get_image_features(pixels)[:1], atol=1e-5)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert torch.allclose(model.get_text_features(ids[:2], mask[:2]), model.get_text_features(ids, mask)[:2], atol=1e-5)
    # without a decoder (both local terms off) only the global norms exist
    no_decoder = CFAMModel(tiny_config(embedding_batch_norm=True, use_local_sdm=False, use_matcher=False))
    assert not hasattr(no_decoder, "image_granularity_norm") and hasattr(no_decoder, "image_embedding_norm")


def test_optimizer_groups_and_steps_reduce_loss():
    torch.manual_seed(0)
    clip = {"vision_model": 1.0, "text_model": 1.0, "visual_projection": 1.0, "text_projection": 1.0}
    m = CFAMModel(tiny_config(lr_multipliers={**clip, "*": 2.0}))
    groups = m.optimizer_param_groups(1e-3, weight_decay=0.01)
    by_lr = {g["lr"]: g for g in groups}
    assert sorted(by_lr) == [1e-3, pytest.approx(2e-3)]
    ids_clip = {id(p) for p in by_lr[1e-3]["params"]}
    ids_new = {id(p) for p in by_lr[max(by_lr)]["params"]}
    assert not ids_clip & ids_new and len(ids_clip | ids_new) == len(list(m.parameters()))
    assert id(m.vision_model.embeddings.patch_embedding.weight) in ids_clip
    assert id(m.text_projection.weight) in ids_clip
    assert id(m.granularity_queries) in ids_new and id(m.id_classifier.weight) in ids_new

    batch = tiny_batch()
    opt = torch.optim.Adam(groups)
    m.train()
    losses = []
    for _ in range(6):
        loss = m(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses


def test_lora_targets_exist(model):
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(CFAMModel.lora_target_modules) <= names
    assert any(n.startswith("granularity_decoder.") and n.endswith("q_proj") for n, _ in model.named_modules())
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = get_peft_model(CFAMModel(tiny_config()), LoraConfig(r=2, target_modules=CFAMModel.lora_target_modules))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("vision_model" in n for n in trainable) and any("matcher" in n for n in trainable)
    out = lora(**tiny_batch())
    out.loss.backward()
    assert all(p.grad is not None for n, p in lora.named_parameters() if p.requires_grad and "lora_B" in n)


# -------------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("share", [True, False])
def test_save_load_automodel(tmp_path, share):
    torch.manual_seed(0)
    m = CFAMModel(tiny_config(share_decoder=share)).eval()
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    assert "cfam" in tbps_hf.METHODS
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is CFAMModel and loaded.config.share_decoder == share
    batch = tiny_batch()
    with torch.no_grad():
        a, b = m(**batch), loaded(**batch)
    for field in ("image_embeds", "text_embeds", "local_similarity", "match_logits", "id_logits", "loss"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field))


# ------------------------------------------------------------------------------------------------------ processor


@pytest.fixture(scope="module")
def processor():
    cfg = CFAMConfig.from_preset("tiny", max_text_length=24)
    return CFAMProcessor.from_config(cfg, captions=CAPTIONS * 3, text_mask_probability=0.5)


def _examples(seeds, processor):
    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((80, 40, 3)) * 255).astype("uint8"))
    return [dict(image=img, caption=CAPTIONS[i % 6], label=i % 3, seed=s) for i, s in enumerate(seeds)]


def test_text_masking_is_deterministic_per_seed(processor):
    a = processor.training_batch(_examples([1, 2, 3, 4], processor))
    b = processor.training_batch(_examples([1, 2, 3, 4], processor))
    c = processor.training_batch(_examples([5, 6, 7, 8], processor))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert not torch.equal(a["input_ids"], c["input_ids"])
    assert a["person_ids"].tolist() == [0, 1, 2, 0]
    # the same example gives the same tokens whatever batch it is in
    d = processor.training_batch(_examples([9, 2], processor))
    assert torch.equal(d["input_ids"][1], a["input_ids"][1])


def test_text_masking_touches_only_word_tokens(processor):
    examples = _examples(list(range(40)), processor)
    clean = processor.encode_text([ex["caption"] for ex in examples])
    aug = processor.training_batch(examples)
    assert torch.equal(aug["attention_mask"], clean["attention_mask"])
    special = torch.tensor(sorted(processor.tokenizer.all_special_ids))
    is_special = torch.isin(clean["input_ids"], special)
    assert torch.equal(aug["input_ids"][is_special], clean["input_ids"][is_special])  # [CLS]/[SEP]/[PAD] kept
    words = ~is_special
    changed = (aug["input_ids"] != clean["input_ids"]) & words
    masked = (aug["input_ids"] == processor.tokenizer.mask_token_id) & words
    n = words.sum().item()
    # p = 0.5 chosen; 80 % of those masked, 10 % replaced (a replacement can equal the original token)
    assert 0.32 < masked.sum().item() / n < 0.48
    assert 0.01 < (changed & ~masked).sum().item() / n < 0.10
    assert not torch.isin(aug["input_ids"][changed & ~masked], special).any()
    off = CFAMProcessor(processor.image_processor, processor.tokenizer, max_text_length=24, text_mask_probability=0)
    assert torch.equal(off.training_batch(examples)["input_ids"], clean["input_ids"])


def test_processor_settings_round_trip_and_validation(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is CFAMProcessor and loaded.text_mask_probability == 0.5
    ex = _examples([3, 4], processor)
    assert torch.equal(loaded.training_batch(ex)["input_ids"], processor.training_batch(ex)["input_ids"])
    kw = dict(image_processor=processor.image_processor, tokenizer=processor.tokenizer)
    with pytest.raises(ValueError, match="text_mask_probability"):
        CFAMProcessor(**kw, text_mask_probability=1.5)
    with pytest.raises(ValueError, match="mask_ratio \\+ replace_ratio"):
        CFAMProcessor(**kw, mask_ratio=0.8, replace_ratio=0.3)
    with pytest.raises(ValueError, match="mask_token_id"):
        CFAMProcessor(**kw, mask_token_id=10_000)
    assert CFAMProcessor(**kw, mask_token_id=7).resolved_mask_token_id == 7


# ----------------------------------------------------------------------------------------------- pretrained towers


def test_position_table_resizing():
    w = torch.randn(77, 8)
    ext = extend_text_positions(w, 168)
    assert ext.shape == (168, 8)
    torch.testing.assert_close(ext[:20], w[:20])
    torch.testing.assert_close(ext[-1], w[-1])
    # rows 20..76 are stretched over rows 20..167: new offset j sits at old offset 56 * j / 147 (j = 21 → 8)
    torch.testing.assert_close(ext[20 + 21], w[20 + 8])
    torch.testing.assert_close(ext[20 + 1], w[20] + (w[21] - w[20]) * 56 / 147)
    assert torch.equal(extend_text_positions(w, 40), w[:40])
    v = torch.randn(1 + 14 * 14, 8)
    r = resize_position_table(v, (24, 8), mode="bicubic")
    assert r.shape == (1 + 24 * 8, 8) and torch.equal(r[0], v[0])
    torch.testing.assert_close(resize_position_table(v, (14, 14), mode="bicubic"), v)
    const = torch.ones(1 + 16, 3)
    torch.testing.assert_close(resize_position_table(const, (6, 2), mode="bicubic"), torch.ones(13, 3))
    with pytest.raises(ValueError, match="square"):
        resize_position_table(torch.randn(1 + 15, 8), (3, 5), mode="bicubic")


def _tiny_clip(tmp_path):
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=98, bos_token_id=97,
                         pad_token_id=0, projection_dim=24),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=24),
        projection_dim=24,
    )
    clip = CLIPModel(config).eval()
    path = tmp_path / "tiny-clip"
    clip.save_pretrained(path)
    return clip, path


def test_from_backbones_local_clip(tmp_path):
    clip, path = _tiny_clip(tmp_path)
    # Square crops and text no longer than the kept rows: CFAM's global embeddings are exactly CLIP's.
    model = CFAMModel.from_backbones(clip=path, preset="tiny", image_size=(32, 32), max_text_length=40, num_identities=3)
    model.eval()
    assert model.config.tokenizer_name == str(path) and model.config.projection_dim == 24
    assert not model.config.embedding_batch_norm  # a from-scratch aid; the tiny preset has it on
    assert model.text_model.embeddings.position_embedding.weight.shape == (40, 32)
    ids = torch.tensor([[97, 5, 6, 7, 98, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(ids, mask), clip.get_text_features(ids, mask).pooler_output)
        torch.testing.assert_close(model.get_image_features(px), clip.get_image_features(px).pooler_output)
        out = model(pixel_values=px, input_ids=ids.repeat(2, 1), attention_mask=mask.repeat(2, 1),
                    person_ids=torch.tensor([0, 1]))
    assert torch.isfinite(out.loss)
    # Person-crop grid: the square 4x4 position table is resized to 8x4.
    rect = CFAMModel.from_backbones(clip=path, preset="tiny", image_size=(64, 32))
    assert rect.vision_model.embeddings.position_embedding.weight.shape == (1 + 8 * 4, 32)
    torch.testing.assert_close(rect.visual_projection.weight, clip.visual_projection.weight)
    with torch.no_grad():
        assert rect.get_image_features(torch.randn(1, 3, 64, 32)).shape == (1, 24)
    # a given config keeps its own fields but takes the tower sizes from the checkpoint
    from_config = CFAMModel.from_backbones(config=tiny_config(), clip=path)
    assert from_config.config.projection_dim == 24 and from_config.config.backbone_checkpoints == {"clip": str(path)}
    # roles not given come from config.backbone_checkpoints
    assert CFAMModel.from_backbones(config=from_config.config).config.vision_config.hidden_size == 32
    with pytest.raises(ValueError, match="needs the role clip"):
        CFAMModel.from_backbones(preset="tiny")
    with pytest.raises(OSError):
        CFAMModel.from_backbones(clip=tmp_path / "missing")


# --------------------------------------------------------------------------------------------- full-size presets


def test_full_presets_build_and_forward():
    """clip-b16: a training forward with every loss; clip-l14: the inference features (its training forward costs
    minutes on 2 CPU cores). Weights are random (`no_init_weights` + one normal fill: CLIP's init alone takes ~45 s
    for L/14 here)."""
    start = time.time()
    torch.manual_seed(0)
    for name in ("clip-b16", "clip-l14"):
        cfg = CFAMConfig.from_preset(name, num_identities=10)
        with no_init_weights():
            m = CFAMModel(cfg)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, 0.02)
        px = torch.randn(2, 3, 384, 128)
        ids = torch.randint(0, 49405, (2, 16))
        mask = torch.ones_like(ids)
        mask[1, 10:] = 0
        if name == "clip-b16":
            assert m.vision_model.embeddings.position_embedding.weight.shape[0] == 1 + 24 * 8
            assert m.text_model.embeddings.position_embedding.weight.shape[0] == 168
            with torch.no_grad():
                out = m(pixel_values=px, input_ids=ids, attention_mask=mask, person_ids=torch.tensor([0, 1]))
            assert torch.isfinite(out.loss) and out.match_logits.shape == (6,)
            assert out.image_granularity_embeds.shape == (2, 4, 512) and out.image_embeds.shape == (2, 512)
        else:
            assert m.vision_model.embeddings.grid_size == (27, 9)
            assert isinstance(m.granularity_decoder.input_proj, torch.nn.Linear)  # 768 → 512
            m.eval()
            with torch.inference_mode():
                img = m.get_image_features(px[:1])
                txt = m.get_text_features(ids, mask)
            assert img.shape == (1, 768) and txt.shape == (2, 768) and torch.isfinite(img).all()
        del m
    print(f"full presets: {time.time() - start:.1f}s")
