"""LAIP: presets, each loss term, hard negatives, queues, BidirAtt's gradient path, MPM masking, re-ranking (order,
keys/values once per image), save/load, the training hooks, the converter and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

import tbps_hf  # noqa: F401  (registers the Auto classes)
from tbps_hf.models.laip import LAIPConfig, LAIPModel, LAIPProcessor, modeling_laip
from tbps_hf.models.laip.modeling_laip import (
    LAIPImageFeatures,
    LAIPMomentumState,
    bidirectional_weights,
    fusion_triplet_loss,
    identity_targets,
    sample_hard_negatives,
)
from tbps_hf.models.laip.processing_laip import IGNORE_INDEX
from tbps_hf.reranking import CANDIDATE_FLOOR, check_rerank_k, merge_scores, rerank_similarity

CAPTIONS = [
    "A woman in a red coat carrying a black backpack. She wears blue jeans, white shoes.",
    "The man wears a grey hoodie, black shorts and white sneakers.",
    "A young girl with long brown hair, a yellow dress and a pink bag.",
    "An old man in a green jacket, brown trousers and black shoes. He holds a white umbrella.",
]


def make(**overrides):
    values = dict(vocab_size=1000, queue_size=16)
    values.update(overrides)
    config = LAIPConfig.from_preset("tiny", **values)
    processor = LAIPProcessor.from_config(config, captions=CAPTIONS * 2)
    config.vocab_size = len(processor.tokenizer)
    torch.manual_seed(0)
    return LAIPModel(config), processor


def examples(n=4, ids=(0, 0, 1, 1), captions=None):
    rng = np.random.default_rng(0)
    captions = captions or CAPTIONS
    return [
        {
            "image": Image.fromarray(rng.integers(0, 255, (80, 40, 3), dtype=np.uint8)),
            "caption": captions[i % len(captions)],
            "label": ids[i % len(ids)],
            "seed": 100 + i,
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny():
    return make()


# ------------------------------------------------------------------------------------------------ config


def test_albef_preset_holds_the_stand_ins():
    c = LAIPConfig.from_preset("albef-b16")
    assert c.image_size == (384, 128) and c.grid_size == (24, 8) and c.max_text_length == 50
    assert (c.num_text_layers, c.num_fusion_layers, c.hidden_size, c.embed_dim) == (6, 6, 768, 256)
    assert (c.momentum, c.queue_size, c.temp, c.itc_distill_alpha) == (0.995, 65536, 0.07, 0.4)
    assert (c.triplet_margin, c.rerank_k, c.bidiratt_layer, c.mask_mode) == (0.6, 128, 2, "phrase")
    d = c.training_defaults
    assert (d["optimizer"], d["learning_rate"], d["weight_decay"], d["lr_scheduler_type"]) == ("adamw", 1e-5, 0.02, "cosine")
    assert d["num_train_epochs"] == 45 and abs(c.stage_one_fraction * 45 - 30) < 1e-9
    assert c.backbone_checkpoints and c.is_cross_encoder and c.rerank_range == (0.0, 1.0)
    assert LAIPConfig.from_preset("tiny").backbone_checkpoints is None
    doc = LAIPConfig.__doc__
    assert doc.count("stand-in") >= 5


@pytest.mark.parametrize("layer", [-1, 2, 7])
def test_bidiratt_layer_out_of_range_is_refused(layer):
    with pytest.raises(ValueError, match="bidiratt_layer"):
        LAIPConfig.from_preset("tiny", bidiratt_layer=layer)


def test_last_fusion_layer_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="last fusion layer.*zero"):
        LAIPConfig.from_preset("tiny", bidiratt_layer=1)
    LAIPConfig.from_preset("tiny", bidiratt_layer=1, use_bidiratt=False)  # fine without BidirAtt


def test_bad_fields_are_refused():
    for field, value in [("mask_mode", "word"), ("rerank_k", 0), ("max_phrases_per_caption", 0)]:
        with pytest.raises(ValueError, match=field):
            LAIPConfig.from_preset("tiny", **{field: value})
    with pytest.raises(ValueError, match="every loss"):
        LAIPConfig.from_preset("tiny", use_itc=False, use_itm=False, use_triplet=False, use_bidiratt=False, use_mpm=False)


# ------------------------------------------------------------------------------------------------ processor (MPM)


def _words_of(processor, caption):
    return processor.units(caption)


def test_mpm_masks_exactly_one_whole_word_per_phrase(tiny):
    _, processor = tiny
    exs = examples(4)
    batch = processor.phrase_batch(exs)
    ids, labels, index = batch["phrase_input_ids"], batch["phrase_labels"], batch["phrase_example_index"]
    mask_id = processor.tokenizer.mask_token_id
    assert ids.shape[0] == index.shape[0] > 0
    for row in range(ids.shape[0]):
        masked = (ids[row] == mask_id).nonzero().squeeze(1).tolist()
        assert masked and (labels[row] != IGNORE_INDEX).nonzero().squeeze(1).tolist() == masked
        # the masked positions are one contiguous word: exactly the pieces of one word of the phrase
        units = processor.units(exs[int(index[row])]["caption"])
        restored = ids[row].clone()
        restored[masked] = labels[row][masked]
        body = restored[1 : int(batch["phrase_attention_mask"][row].sum()) - 1].tolist()
        matching = [u for u in units if sum(u, []) == body]
        assert matching, "the row is one of the caption's phrases"
        starts = np.cumsum([0] + [len(w) for w in matching[0]])
        spans = [(a + 1, b + 1) for a, b in zip(starts[:-1], starts[1:])]
        assert (masked[0], masked[-1] + 1) in spans and masked == list(range(masked[0], masked[-1] + 1))
    # at most max_phrases_per_caption per caption; same seeds → same batch
    assert torch.bincount(index).max() <= processor.max_phrases_per_caption
    again = processor.phrase_batch(exs)
    assert all(torch.equal(again[k], batch[k]) for k in batch)


def test_mpm_draw_depends_on_the_seed(tiny):
    _, processor = tiny
    draws = set()
    for seed in range(12):
        ex = {**examples(1)[0], "seed": seed}
        b = processor.phrase_batch([ex])
        draws.add(tuple(b["phrase_input_ids"].flatten().tolist()))
    assert len(draws) > 1


def test_phrase_longer_than_the_length_keeps_whole_words(tiny):
    _, processor = tiny
    long_caption = "a " + " ".join(["very"] * 3) + " long black and white striped knee-length woollen overcoat"
    short = LAIPProcessor(
        image_processor=processor.image_processor, tokenizer=processor.tokenizer, max_text_length=64, max_phrase_length=5
    )
    b = short.phrase_batch([{"caption": long_caption, "seed": 1, "image": None, "label": 0}])
    assert b["phrase_input_ids"].shape[1] <= 5
    assert (b["phrase_input_ids"] == processor.tokenizer.mask_token_id).any(dim=1).all()
    assert ((b["phrase_labels"] != IGNORE_INDEX).sum(dim=1) >= 1).all()


def test_caption_without_noun_phrase_gives_no_phrase_and_no_nan(tiny):
    model, processor = tiny
    exs = examples(4, captions=["is walking quickly", "and then", "is walking quickly", "and then"])
    batch = processor.training_batch(exs)
    assert batch["phrase_input_ids"].shape[0] == 0
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.loss_bidiratt == 0 and out.loss_mpm == 0
    out.loss.backward()
    model.zero_grad()


def test_sentence_mode_masks_words_of_the_whole_caption(tiny):
    _, processor = tiny
    sent = LAIPProcessor(
        image_processor=processor.image_processor, tokenizer=processor.tokenizer, max_text_length=64, mask_mode="sentence"
    )
    b = sent.phrase_batch(examples(2))
    assert b["phrase_input_ids"].shape[0] == 2  # one unit per caption
    n_words = [len(sent.units(c)[0]) for c in CAPTIONS[:2]]
    for row, n in enumerate(n_words):
        masked_words = (b["phrase_labels"][row] != IGNORE_INDEX).sum().item()
        assert masked_words >= max(1, round(0.15 * n))


# ------------------------------------------------------------------------------------------------ loss pieces


def test_identity_targets_cover_every_same_person_entry_and_skip_empty_slots():
    ids = torch.tensor([3, 5])
    ids_all = torch.tensor([3, 5, 3, -1, 7, 5])
    t = identity_targets(ids, ids_all)
    assert torch.allclose(t[0], torch.tensor([0.5, 0, 0.5, 0, 0, 0]))
    assert torch.allclose(t[1], torch.tensor([0, 0.5, 0, 0, 0, 0.5]))


def test_hard_negatives_exclude_same_identity_and_follow_softmax():
    torch.manual_seed(0)
    sim = torch.tensor([[0.0, 2.0, 0.0, -5.0], [1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    ids = torch.tensor([0, 1, 1, 2])
    same = ids[:, None] == ids[None]
    counts = torch.zeros(4, 4)
    for _ in range(3000):
        index, valid = sample_hard_negatives(sim, same)
        assert valid.all()
        assert not same[torch.arange(4), index].any()
        counts[torch.arange(4), index] += 1
    p = counts[0] / counts[0].sum()
    expected = torch.softmax(torch.tensor([2.0, 0.0, -5.0]), 0)
    assert torch.allclose(p[[1, 2, 3]], expected, atol=0.03)


def test_row_with_no_other_identity_is_marked_invalid_not_sampled():
    ids = torch.tensor([4, 4, 4])
    index, valid = sample_hard_negatives(torch.randn(3, 3), ids[:, None] == ids[None])
    assert not valid.any()
    model, processor = make()
    model.train()
    batch = processor.training_batch(examples(3, ids=(4,)))
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.loss_triplet == 0
    assert out.itm_logits.shape[0] == 3  # positives only


def test_negative_schedule_goes_from_uniform_to_albef_hard_negatives():
    model, processor = make(itm_negative_schedule=(0.25, 0.5))
    hardness = []
    for step in (0, 24, 25, 30, 37, 50, 99):
        model.set_training_progress(step, 100, 0.0)
        hardness.append(model.negative_hardness)
    assert hardness == pytest.approx([0.0, 0.0, 0.0, 0.2, 0.48, 1.0, 1.0])
    model._progress = None
    assert model.negative_hardness == 1.0  # outside the training loop: ALBEF
    assert make()[0].config.itm_negative_schedule == (0.35, 0.5)  # the tiny preset's
    albef = LAIPModel(LAIPConfig.from_preset("tiny", itm_negative_schedule=(0, 0)))
    albef.set_training_progress(0, 100, 0.0)
    assert albef.negative_hardness == 1.0  # (0, 0): hard negatives from the first step (the paper preset's)
    assert LAIPConfig.from_preset("albef-b16").itm_negative_schedule == (0.0, 0.0)
    for bad in [(0.5, 0.25), (-0.1, 0.2), (0.2, 1.5), (0.3,)]:
        with pytest.raises(ValueError, match="itm_negative_schedule"):
            LAIPConfig.from_preset("tiny", itm_negative_schedule=bad)


def test_uniform_phase_draws_negatives_ignoring_similarity(monkeypatch):
    """At hardness 0 the ITM negatives of a text follow no similarity: a column with a huge similarity is drawn
    about as often as the others (at hardness 1 it would be drawn almost always)."""
    model, processor = make(itm_negative_schedule=(0.5, 0.75))
    model.train()
    seen = []
    original = sample_hard_negatives

    def spy(similarity, same):
        seen.append(similarity.clone())
        return original(similarity, same)

    monkeypatch.setattr(modeling_laip, "sample_hard_negatives", spy)
    batch = processor.training_batch(examples(4))
    model.set_training_progress(0, 100, 0.0)
    model(**batch)
    assert torch.all(seen[-1] == 0)
    model.set_training_progress(99, 100, 0.0)
    model(**batch)
    assert seen[-1].abs().max() > 0
    model._progress = None


def test_fusion_initializer_range_applies_to_the_fusion_and_itm_head_only():
    torch.manual_seed(0)
    model = LAIPModel(LAIPConfig.from_preset("tiny", fusion_initializer_range=0.1))
    fusion_std = model.fusion_layers[0].crossattention.self.query.weight.std().item()
    head_std = model.itm_head.weight.std().item()
    text_std = model.text_encoder.encoder.layer[0].attention.self.query.weight.std().item()
    assert fusion_std == pytest.approx(0.1, rel=0.1) and head_std == pytest.approx(0.1, rel=0.3)
    assert text_std == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ValueError, match="fusion_initializer_range"):
        LAIPConfig.from_preset("tiny", fusion_initializer_range=0.0)


def test_fusion_triplet_is_the_hinge_of_eq20():
    p_pos, p_neg = torch.tensor([0.9, 0.5]), torch.tensor([0.1, 0.4])
    assert torch.isclose(fusion_triplet_loss(p_pos, p_neg, 0.6), torch.tensor((0.0 + 0.5) / 2))
    assert fusion_triplet_loss(p_pos, torch.zeros(0), 0.6) == 0


def test_each_loss_term_is_finite_and_the_total_is_their_sum(tiny):
    model, processor = tiny
    model.train()
    model._progress = None
    out = model(**processor.training_batch(examples(4)))
    terms = [out.loss_itc, out.loss_itm, out.loss_triplet, out.loss_bidiratt, out.loss_mpm]
    assert all(t is not None and torch.isfinite(t) and t > 0 for t in terms)
    assert torch.isclose(out.loss, sum(terms))
    assert out.training_stage == 2


@pytest.mark.parametrize("switch", ["itc", "itm", "triplet", "bidiratt", "mpm"])
def test_switches_turn_one_term_off(switch):
    model, processor = make(**{f"use_{switch}": False})
    model.train()
    out = model(**processor.training_batch(examples(4)))
    assert getattr(out, f"loss_{switch}") is None
    others = [n for n in ("itc", "itm", "triplet", "bidiratt", "mpm") if n != switch]
    assert all(getattr(out, f"loss_{n}") is not None for n in others)


def test_two_stage_switch_is_a_function_of_progress(tiny):
    model, processor = tiny
    model.train()
    batch = processor.training_batch(examples(4))
    model.set_training_progress(0, 30, 0.0)
    assert model.training_stage == 1 and model.distill_alpha == 0.0
    out = model(**batch)
    assert out.loss_bidiratt is None and out.loss_mpm is None and out.loss_triplet is None
    assert out.loss_itc is not None and out.loss_itm is not None and out.training_stage == 1
    model.set_training_progress(20, 30, 2.5)
    assert model.training_stage == 2 and model.distill_alpha == pytest.approx(0.4)
    assert model(**batch).loss_mpm is not None
    model.set_training_progress(19, 30, 0.5)
    assert model.training_stage == 1 and model.distill_alpha == pytest.approx(0.2)
    model._progress = None


def test_itc_uses_the_queue_and_distillation(tiny):
    model, processor = tiny
    state = model.momentum_state
    before = state.idx_queue.clone()
    model.train()
    model(**processor.training_batch(examples(4)))
    assert (state.idx_queue >= 0).sum() >= (before >= 0).sum()
    batch_ids = set(state.idx_queue[state.idx_queue >= 0].tolist())
    assert batch_ids <= {0, 1}
    # momentum weights moved towards the online ones, but are not them
    p, p_m = model.text_proj.weight, state.text_proj.weight
    assert p_m.requires_grad is False and p_m.data_ptr() != p.data_ptr()


def test_queue_wraps_around():
    model, _ = make(queue_size=5)
    state = model.momentum_state
    for step in range(3):
        feats = torch.full((2, model.config.embed_dim), float(step))
        state.enqueue(feats, feats, torch.tensor([10 * step, 10 * step + 1]))
    # writes at 0-1, 2-3, then 4 and 0 (wrap): the oldest row (id 0) is overwritten
    assert state.idx_queue.tolist() == [21, 1, 10, 11, 20]
    assert int(state.queue_ptr) == 6 % 5


# ------------------------------------------------------------------------------------------------ BidirAtt


def test_bidirectional_weights_normalize_the_product_and_detach_the_gradient():
    forward = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]], requires_grad=True)
    grad = torch.tensor([[[1.0, -2.0, 0.5], [1.0, 0.0, 0.5]]], requires_grad=True)
    w, fwd, bwd = bidirectional_weights(forward, grad)
    assert torch.allclose(bwd, torch.tensor([[1.0, 0.0, 0.5]]))
    expected = torch.tensor([[0.3 * 1.0, 0.2 * 0.0, 0.5 * 0.5]])
    assert torch.allclose(w, expected / expected.sum())
    w.sum().backward()
    assert grad.grad is None and forward.grad is not None
    # no positive gradient at all → the forward attention alone
    w2, _, _ = bidirectional_weights(forward.detach(), -torch.ones_like(forward))
    assert torch.allclose(w2, fwd.detach() / fwd.detach().sum())


def test_backward_attention_of_the_last_layer_is_zero_and_of_earlier_layers_is_not(tiny):
    model, processor = tiny
    model.eval()
    inputs = processor.phrase_inputs(CAPTIONS[0])
    pixels = processor(images=[examples(1)[0]["image"]])["pixel_values"].expand(inputs["input_ids"].shape[0], -1, -1, -1)
    image = model._image_hidden(pixels)
    text = model._text_hidden(inputs["input_ids"], inputs["attention_mask"])
    for layer, zero in [(model.config.num_fusion_layers - 1, True), (model.config.bidiratt_layer, False)]:
        hidden, cross = model.fusion(text, inputs["attention_mask"], image_hidden=image, return_cross_attention_layer=layer)
        score = model._masked_word_scores(model.mlm_head(hidden), inputs["labels"]).sum()
        grad = torch.autograd.grad(score, cross)[0][:, :, 0, 1:]
        assert (grad.abs().max() == 0) == zero


def test_bidiratt_loss_reaches_the_projections_and_the_cross_attention(tiny):
    model, processor = tiny
    model.train()
    model.zero_grad()
    out = model(**processor.training_batch(examples(4)))
    out.loss_bidiratt.backward()
    layer = model.fusion_layers[model.config.bidiratt_layer]
    assert model.vision_proj.weight.grad.abs().sum() > 0 and model.text_proj.weight.grad.abs().sum() > 0
    assert layer.crossattention.self.query.weight.grad.abs().sum() > 0  # through the forward attention
    # nothing after the chosen layer's cross-attention is on the BidirAtt path except through the MPM score,
    # which is detached: the last layer's FFN gets no BidirAtt gradient
    last = model.fusion_layers[-1]
    assert last.output.dense.weight.grad is None or last.output.dense.weight.grad.abs().sum() == 0
    model.zero_grad()


def test_phrase_attention_maps(tiny):
    model, processor = tiny
    inputs = processor.phrase_inputs(CAPTIONS[0])
    pixels = processor(images=[examples(1)[0]["image"]])["pixel_values"]
    maps = model.get_phrase_attention_maps(inputs["input_ids"], inputs["attention_mask"], pixels, labels=inputs["labels"])
    n = inputs["input_ids"].shape[0]
    assert n == len(inputs["phrases"]) >= 2
    assert maps.forward_maps.shape == maps.bidirectional_maps.shape == (n, *model.config.grid_size)
    assert torch.allclose(maps.forward_maps.sum((1, 2)), torch.ones(n), atol=1e-5)
    assert torch.allclose(maps.bidirectional_maps.sum((1, 2)), torch.ones(n), atol=1e-5)
    no_labels = model.get_phrase_attention_maps(inputs["input_ids"], inputs["attention_mask"], pixels)
    assert torch.allclose(no_labels.forward_maps, maps.forward_maps)
    image_maps = model.get_image_attention_maps(pixels)
    assert image_maps.shape == (1, *model.config.grid_size)
    with pytest.raises(ValueError, match="no noun phrase"):
        processor.phrase_inputs("is walking")


# ------------------------------------------------------------------------------------------------ re-ranking


def _features(model, processor, n_text=3, n_image=5):
    model.eval()
    x = processor(text=(CAPTIONS * 2)[:n_text], images=[e["image"] for e in examples(n_image)])
    with torch.no_grad():
        return model.get_text_features(x["input_ids"], x["attention_mask"]), model.get_image_features(x["pixel_values"])


def test_cached_key_values_match_the_layers_own_cross_attention(tiny):
    model, processor = tiny
    text, images = _features(model, processor)
    pairs = torch.tensor([[0, 4], [2, 1], [3, 3]])
    scores = model.rerank(text, images, pairs)
    with torch.no_grad():
        for t, row in enumerate(pairs.tolist()):
            for j, i in enumerate(row):
                hidden, _ = model.fusion(text.hidden_states[[t]], text.attention_mask[[t]], image_hidden=images.hidden_states[[i]])
                p = model.itm_head(hidden[:, 0]).softmax(-1)[0, 1]
                assert torch.isclose(scores[t, j], p, atol=1e-5)


def test_rerank_computes_keys_values_once_per_image_and_layer(tiny):
    model, processor = tiny
    text, images = _features(model, processor, n_text=3, n_image=5)
    rows = []
    hooks = [layer.crossattention.self.key.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
             for layer in model.fusion_layers]  # fmt: skip
    try:
        candidates = torch.tensor([[0, 1, 2], [2, 3, 1], [4, 2, 0]])
        model.rerank(text, images, candidates, image_block_size=2, pair_batch_size=2)
    finally:
        for h in hooks:
            h.remove()
    assert sum(rows) == 5 * model.config.num_fusion_layers  # 5 distinct images, each once per layer


def test_rerank_similarity_orders_candidates_then_the_rest_in_first_stage_order(tiny):
    model, processor = tiny
    text, images = _features(model, processor, n_text=3, n_image=6)
    first = model.similarity(text, images)
    final = rerank_similarity(model, text, images, first, k=2)
    assert final.shape == first.shape and final.min() >= 0 and final.max() <= 1
    top2 = torch.argsort(-first, dim=1, stable=True)[:, :2]
    scores = model.rerank(text, images, top2)
    for t in range(3):
        cand = set(top2[t].tolist())
        rest = [i for i in torch.argsort(-first[t], stable=True).tolist() if i not in cand]
        order = torch.argsort(-final[t], stable=True).tolist()
        assert set(order[:2]) == cand and order[2:] == rest
        assert torch.allclose(final[t, top2[t]], scores[t].clamp_min(CANDIDATE_FLOOR))
    # re-ranked ITM decides the order among candidates
    m = merge_scores(torch.tensor([[0.9, 0.8, 0.1]]), torch.tensor([[0, 1]]), torch.tensor([[0.2, 0.7]]))
    assert torch.argsort(-m[0]).tolist() == [1, 0, 2] and 0 <= m[0, 2] < 0.2


def test_rerank_k_bounds(tiny):
    model, processor = tiny
    text, images = _features(model, processor, n_text=2, n_image=3)
    with pytest.raises(ValueError, match="rerank_k must be >= 1"):
        rerank_similarity(model, text, images, k=0)
    assert check_rerank_k(50, 3) == 3
    final = rerank_similarity(model, text, images, k=50)  # clamped to the gallery: every image re-ranked
    every = torch.arange(3).repeat(2, 1)
    assert torch.allclose(final, model.rerank(text, images, every).clamp_min(CANDIDATE_FLOOR))


def test_evaluate_model_reports_first_stage_and_reranked(tiny, tmp_path):
    from types import SimpleNamespace

    from tbps_hf.evaluation import evaluate_model

    model, processor = tiny
    exs = examples(6, ids=(0, 1, 2))
    view = SimpleNamespace(
        gallery_images=[e["image"] for e in exs], gallery_ids=np.array([0, 1, 2, 0, 1, 2]),
        queries=CAPTIONS[:3], query_ids=np.array([0, 1, 2]), query_groups={},
    )  # fmt: skip
    results = evaluate_model(model, processor, view, progress=False, output_dir=tmp_path, rerank_k=4, grid_queries=2)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert Path(saved["files"]["phrase_maps"]).is_file() and Path(saved["files"]["attention_maps"]).is_file()
    assert saved["rerank_k"] == 4 and "R@1" in saved["first_stage"] and "R@1" in saved["overall"]
    streamed = evaluate_model(model, processor, view, progress=False, streaming=True, rerank_k=4, grid_queries=0)
    assert streamed["overall"]["R@1"] == pytest.approx(results["overall"]["R@1"])
    assert streamed["first_stage"]["R@1"] == pytest.approx(results["first_stage"]["R@1"])


# ------------------------------------------------------------------------------------------------ save / load / hooks


def test_save_load_through_auto_classes_without_momentum_state(tiny, tmp_path):
    model, processor = tiny
    model.train()
    model(**processor.training_batch(examples(4)))  # creates the momentum state
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any("queue" in k or "momentum" in k for k in keys)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    proc = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is LAIPModel and type(proc) is LAIPProcessor and proc.mask_mode == "phrase"
    assert loaded.mlm_head.predictions.decoder.weight is loaded.text_encoder.embeddings.word_embeddings.weight
    model.eval()
    a, b = _features(model, processor), _features(loaded, proc)
    assert torch.allclose(model.similarity(*a), loaded.similarity(*b), atol=1e-6)
    assert torch.allclose(model.rerank(*a, torch.tensor([[0, 1]] * 3)), loaded.rerank(*b, torch.tensor([[0, 1]] * 3)), atol=1e-6)


def test_training_state_dict_round_trip(tiny):
    model, processor = tiny
    model.train()
    model(**processor.training_batch(examples(4)))
    state = {k: v.clone() for k, v in model.training_state_dict().items()}
    assert "momentum.image_queue" in state and "momentum.queue_ptr" in state
    fresh, _ = make()
    fresh.load_training_state_dict(state)
    assert all(torch.equal(v, fresh.training_state_dict()[k]) for k, v in state.items())
    with pytest.raises(ValueError, match="momentum"):
        fresh.load_training_state_dict({})
    assert model.find_unused_parameters() is True


def test_optimizer_groups_scale_new_heads_and_skip_decay_on_norms():
    model, _ = make(lr_multipliers={"mlm_head.": 10.0})
    groups = model.optimizer_param_groups(1e-4, 0.02)
    head = {id(p) for n, p in model.named_parameters() if n.startswith("mlm_head.")}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        if ids & head:
            assert ids <= head and g["lr"] == pytest.approx(1e-3)
        if any(p.dim() < 2 for p in g["params"]):
            assert g["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


def test_momentum_state_follows_dtype():
    model, _ = make()
    state = model.momentum_state
    model.to(torch.float64)
    assert state.image_queue.dtype == torch.float64 and state.idx_queue.dtype == torch.long
    assert isinstance(state, LAIPMomentumState)


# ------------------------------------------------------------------------------------------------ converter


def _albef_state(config, pretraining: bool):
    """A state dict in exactly ALBEF's key layout (random values, tiny sizes)."""
    torch.manual_seed(1)
    h, v, e = config.hidden_size, config.vision_hidden_size, config.embed_dim
    bert = "text_encoder.bert." if pretraining else "text_encoder."
    s = {
        "visual_encoder.cls_token": torch.randn(1, 1, v),
        "visual_encoder.pos_embed": torch.randn(1, 1 + 16 * 16, v),  # a square 256x256 grid
        "visual_encoder.patch_embed.proj.weight": torch.randn(v, 3, config.patch_size, config.patch_size),
        "visual_encoder.patch_embed.proj.bias": torch.randn(v),
        "visual_encoder.norm.weight": torch.randn(v), "visual_encoder.norm.bias": torch.randn(v),
        f"{bert}embeddings.word_embeddings.weight": torch.randn(config.vocab_size, h),
        f"{bert}embeddings.position_embeddings.weight": torch.randn(config.max_position_embeddings, h),
        f"{bert}embeddings.token_type_embeddings.weight": torch.randn(2, h),
        f"{bert}embeddings.LayerNorm.weight": torch.randn(h), f"{bert}embeddings.LayerNorm.bias": torch.randn(h),
        f"{bert}embeddings.position_ids": torch.arange(config.max_position_embeddings)[None],
        "vision_proj.weight": torch.randn(e, v), "vision_proj.bias": torch.randn(e),
        "text_proj.weight": torch.randn(e, h), "text_proj.bias": torch.randn(e),
        "itm_head.weight": torch.randn(2, h), "itm_head.bias": torch.randn(2), "temp": torch.tensor(0.07),
        "image_queue": torch.randn(e, 32), "text_queue": torch.randn(e, 32), "queue_ptr": torch.zeros(1, dtype=torch.long),
    }  # fmt: skip
    if not pretraining:
        s["idx_queue"] = torch.full((1, 32), -100)
    for i in range(config.vision_num_hidden_layers):
        b = f"visual_encoder.blocks.{i}."
        for name, shape in [("norm1", (v,)), ("norm2", (v,))]:
            s[b + name + ".weight"], s[b + name + ".bias"] = torch.randn(*shape), torch.randn(*shape)
        s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"] = torch.randn(3 * v, v), torch.randn(3 * v)
        s[b + "attn.proj.weight"], s[b + "attn.proj.bias"] = torch.randn(v, v), torch.randn(v)
        s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"] = torch.randn(config.vision_intermediate_size, v), torch.randn(config.vision_intermediate_size)
        s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"] = torch.randn(v, config.vision_intermediate_size), torch.randn(v)
    for i in range(config.num_text_layers + config.num_fusion_layers):
        b = f"{bert}encoder.layer.{i}."
        blocks = ["attention"] + (["crossattention"] if i >= config.num_text_layers else [])
        for block in blocks:
            width = v if block == "crossattention" else h
            s[b + f"{block}.self.query.weight"], s[b + f"{block}.self.query.bias"] = torch.randn(h, h), torch.randn(h)
            s[b + f"{block}.self.key.weight"], s[b + f"{block}.self.key.bias"] = torch.randn(h, width), torch.randn(h)
            s[b + f"{block}.self.value.weight"], s[b + f"{block}.self.value.bias"] = torch.randn(h, width), torch.randn(h)
            s[b + f"{block}.output.dense.weight"], s[b + f"{block}.output.dense.bias"] = torch.randn(h, h), torch.randn(h)
            s[b + f"{block}.output.LayerNorm.weight"], s[b + f"{block}.output.LayerNorm.bias"] = torch.randn(h), torch.randn(h)
        s[b + "intermediate.dense.weight"], s[b + "intermediate.dense.bias"] = torch.randn(config.intermediate_size, h), torch.randn(config.intermediate_size)
        s[b + "output.dense.weight"], s[b + "output.dense.bias"] = torch.randn(h, config.intermediate_size), torch.randn(h)
        s[b + "output.LayerNorm.weight"], s[b + "output.LayerNorm.bias"] = torch.randn(h), torch.randn(h)
    if pretraining:
        s["text_encoder.cls.predictions.bias"] = torch.randn(config.vocab_size)
        s["text_encoder.cls.predictions.transform.dense.weight"] = torch.randn(h, h)
        s["text_encoder.cls.predictions.transform.dense.bias"] = torch.randn(h)
        s["text_encoder.cls.predictions.transform.LayerNorm.weight"] = torch.randn(h)
        s["text_encoder.cls.predictions.transform.LayerNorm.bias"] = torch.randn(h)
        s["text_encoder.cls.predictions.decoder.weight"] = s[f"{bert}embeddings.word_embeddings.weight"]
        s["text_encoder.cls.predictions.decoder.bias"] = s["text_encoder.cls.predictions.bias"]
    # momentum copies are dropped
    for key in [k for k in s if k.startswith(("visual_encoder.", "vision_proj", "text_proj", "text_encoder."))]:
        head, rest = key.split(".", 1)
        s[f"{head}_m.{rest}"] = s[key].clone()
    return s


@pytest.fixture(scope="module")
def bert_tokenizer_dir(tmp_path_factory):
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("bert_tok")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "woman", "red", "coat", "black", "backpack", "in"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder / "tok")
    return folder / "tok"


CONVERT_OVERRIDES = dict(
    image_size=[64, 32], num_attention_heads=4, vision_num_attention_heads=4, max_text_length=16, bidiratt_layer=0,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)


@pytest.mark.parametrize("pretraining", [True, False], ids=["ALBEF.pth-layout", "mscoco.pth-layout"])
def test_converter_maps_albef_layouts(tmp_path, bert_tokenizer_dir, pretraining):
    from tbps_hf.models.laip.convert_laip_original_to_hf import convert

    config = LAIPConfig.from_preset(
        "tiny", vocab_size=40, vision_num_hidden_layers=2, num_text_layers=2, num_fusion_layers=2,
        vision_num_attention_heads=4, bidiratt_layer=0, max_position_embeddings=64, patch_size=8,
    )  # fmt: skip
    state = _albef_state(config, pretraining)
    path = tmp_path / "albef.pth"
    torch.save({"model": state, "epoch": 3}, path, _use_new_zipfile_serialization=False)  # legacy serialization
    report = convert(path, tmp_path / "out", tokenizer=str(bert_tokenizer_dir), config_overrides=dict(CONVERT_OVERRIDES))
    loaded = AutoModel.from_pretrained(tmp_path / "out")
    AutoProcessor.from_pretrained(tmp_path / "out")
    bert = "text_encoder.bert." if pretraining else "text_encoder."
    ours = loaded.state_dict()
    assert loaded.config.num_text_layers == 2 and loaded.config.num_fusion_layers == 2
    assert torch.equal(ours["fusion_layers.1.crossattention.self.key.weight"], state[f"{bert}encoder.layer.3.crossattention.self.key.weight"])
    assert torch.equal(ours["text_encoder.encoder.layer.1.output.dense.weight"], state[f"{bert}encoder.layer.1.output.dense.weight"])
    qkv = state["visual_encoder.blocks.1.attn.qkv.weight"]
    assert torch.equal(ours["vision_model.layers.1.attention.k_proj.weight"], qkv[128:256])
    assert ours["vision_model.embeddings.position_embeddings"].shape == (1, 1 + 8 * 4, 128)
    assert torch.equal(ours["vision_model.embeddings.position_embeddings"][:, 0], state["visual_encoder.pos_embed"][:, 0])
    assert torch.equal(ours["itm_head.weight"], state["itm_head.weight"])
    if pretraining:
        assert torch.equal(ours["mlm_head.predictions.transform.dense.weight"], state["text_encoder.cls.predictions.transform.dense.weight"])
    assert loaded.mlm_head.predictions.decoder.weight is loaded.text_encoder.embeddings.word_embeddings.weight
    saved = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert saved == report and report["text_prefix"] == bert and report["grid"] == [8, 4]
    assert any(k.startswith("visual_encoder_m.") for k in report["dropped"]) and "image_queue" in report["dropped"]
    assert bool(report["missing"]) == (not pretraining)  # a retrieval checkpoint has no MLM head
    assert (tmp_path / "out" / "README.md").exists() and loaded.config.is_cross_encoder


def test_converter_refuses_other_layouts(tmp_path, bert_tokenizer_dir):
    from tbps_hf.models.laip.convert_laip_original_to_hf import CheckpointLayoutError, convert

    config = LAIPConfig.from_preset(
        "tiny", vocab_size=40, vision_num_hidden_layers=2, num_text_layers=2, num_fusion_layers=2,
        vision_num_attention_heads=4, bidiratt_layer=0, max_position_embeddings=64, patch_size=8,
    )  # fmt: skip
    state = _albef_state(config, True)
    extra = dict(state, **{"some_new_head.weight": torch.zeros(2)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointLayoutError, match="unexpected key.*some_new_head.weight"):
        convert(tmp_path / "extra.pth", tmp_path / "o1", tokenizer=str(bert_tokenizer_dir), config_overrides=dict(CONVERT_OVERRIDES))
    missing = {k: v for k, v in state.items() if k != "itm_head.weight"}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointLayoutError, match="missing key.*itm_head.weight"):
        convert(tmp_path / "missing.pth", tmp_path / "o2", tokenizer=str(bert_tokenizer_dir), config_overrides=dict(CONVERT_OVERRIDES))
    torch.save({"model": {"encoder_vl.cls_token": torch.zeros(1, 1, 8)}}, tmp_path / "ivt.pth")
    with pytest.raises(CheckpointLayoutError, match="not an ALBEF"):
        convert(tmp_path / "ivt.pth", tmp_path / "o3", tokenizer=str(bert_tokenizer_dir))
    with pytest.raises(FileNotFoundError):
        convert(tmp_path / "nope.pth", tmp_path / "o4")


# ------------------------------------------------------------------------------------------------ full size


@pytest.mark.slow
def test_albef_b16_forward_on_cpu():
    from transformers import BertTokenizer  # noqa: F401

    config = LAIPConfig.from_preset("albef-b16", tokenizer_name=None, queue_size=64)
    model = LAIPModel(config).train()
    proc_config = LAIPConfig.from_preset("albef-b16", tokenizer_name=None, vocab_size=1000)
    processor = LAIPProcessor.from_config(proc_config, captions=CAPTIONS * 2)
    batch = processor.training_batch(examples(2, ids=(0, 1)))
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.loss_bidiratt is not None and out.loss_mpm is not None
    assert out.text_embeds.shape == (2, 256)


# ------------------------------------------------------------------------------------------------ training loop

SMALL = {"num_train_identities": 24, "num_test_identities": 8, "num_test_3c_identities": 8, "images_per_identity": 2}




def _train_args(out, cache_dir, **training):
    from tbps_hf.training import DataArguments, ModelArguments, TrainingArguments

    training.setdefault("max_steps", 6)
    # stage 1 for steps 0-2, stage 2 from step 3; a small queue that wraps within the run
    overrides = json.dumps({"stage_one_fraction": 0.5, "queue_size": 24, "max_phrases_per_caption": 1})
    return (
        ModelArguments(model="laip", preset="tiny", config_overrides=overrides),
        DataArguments(dataset="procpedes", cache_dir=cache_dir, dataset_options=json.dumps(SMALL), eval_split="none"),
        TrainingArguments(output_dir=str(out), report_to="none", logging_steps=1, per_device_train_batch_size=8,
                          images_per_identity=2, **training),  # fmt: skip
    )


def test_resume_across_the_stage_boundary_equals_the_uninterrupted_run(tmp_path, fresh_accelerate_state):
    from safetensors.torch import load_file

    from tbps_hf.training import train

    cache = str(tmp_path / "cache")
    stages = {}

    def record(step, logs):
        stages[step] = logs

    train(*_train_args(tmp_path / "straight", cache), step_callback=record)

    class Crash(Exception):
        pass

    def crash(step, logs):
        if step == 2:
            raise Crash

    with pytest.raises(Crash):
        train(*_train_args(tmp_path / "resumed", cache, save_steps=2), step_callback=crash)
    train(*_train_args(tmp_path / "resumed", cache, save_steps=2, resume_from_checkpoint="latest"))
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=f"{key} differs after resume")
    # stage 1 (ITC + ITM) for the first half of the steps, then every loss
    assert all("loss_mpm" not in stages[s] and "loss_itm" in stages[s] for s in (1, 2, 3))
    assert all("loss_mpm" in stages[s] and "loss_bidiratt" in stages[s] for s in (4, 5, 6))


def test_tbps_convert_cli_with_laip(tmp_path, bert_tokenizer_dir, capsys):
    from tbps_hf.cli import main

    config = LAIPConfig.from_preset(
        "tiny", vocab_size=40, vision_num_hidden_layers=2, num_text_layers=2, num_fusion_layers=2,
        vision_num_attention_heads=4, bidiratt_layer=0, max_position_embeddings=64, patch_size=8,
    )  # fmt: skip
    torch.save({"model": _albef_state(config, False)}, tmp_path / "mscoco.pth", _use_new_zipfile_serialization=False)
    code = main([
        "convert", "--model", "laip", "--checkpoint", str(tmp_path / "mscoco.pth"), "--output_dir", str(tmp_path / "m"),
        "--tokenizer", str(bert_tokenizer_dir), "--config_overrides", json.dumps(CONVERT_OVERRIDES),
    ])  # fmt: skip
    assert code == 0 and "converted" in capsys.readouterr().out
    assert type(AutoModel.from_pretrained(tmp_path / "m")) is LAIPModel
    torch.save({"model": {"visual_encoder.cls_token": torch.zeros(1)}}, tmp_path / "bad.pth")
    code = main(["convert", "--model", "laip", "--checkpoint", str(tmp_path / "bad.pth"), "--output_dir", str(tmp_path / "b")])
    assert code == 1 and "not an ALBEF" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_processes_train_laip_and_share_the_queue(tmp_path):
    """`train.py` under 2 CPU DDP processes across the stage boundary: both ranks enqueue the gathered batch."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp"
    overrides = json.dumps({"stage_one_fraction": 0.5, "queue_size": 64, "max_phrases_per_caption": 1})
    cmd = [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(root / "train.py"),
        "--model", "laip", "--preset", "tiny", "--config_overrides", overrides, "--cache_dir", str(tmp_path / "cache"),
        "--dataset_options", json.dumps(SMALL), "--output_dir", str(out), "--max_steps", "4", "--save_steps", "2",
        "--per_device_train_batch_size", "4", "--images_per_identity", "2", "--report_to", "none",
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run_summary.json").read_text())["world_size"] == 2
    states = [torch.load(p, weights_only=True) for p in sorted((out / "checkpoint-2").glob("custom_checkpoint_*.pkl"))]
    queue = next(s for s in states if "momentum.idx_queue" in s)
    # 2 steps x 2 processes x 4 pairs: the gathered batches, not one rank's
    assert int((queue["momentum.idx_queue"] >= 0).sum()) == 16 and int(queue["momentum.queue_ptr"]) == 16


def test_from_backbones_vit_bert_and_albef_folder(tmp_path):
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    config = LAIPConfig.from_preset("tiny", vocab_size=50, embedding_batch_norm=False)
    torch.manual_seed(3)
    vit = ViTModel(ViTConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                             image_size=224, patch_size=8, layer_norm_eps=1e-6), add_pooling_layer=False)  # fmt: skip
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                intermediate_size=512, max_position_embeddings=64), add_pooling_layer=False)  # fmt: skip
    model = LAIPModel.from_backbones(config=config, vit=vit, bert=bert)
    ours = model.state_dict()
    assert torch.equal(ours["vision_model.layers.3.mlp.fc2.weight"], vit.state_dict()["layers.3.mlp.fc2.weight"])
    pos = ours["vision_model.embeddings.position_embeddings"]
    assert pos.shape == (1, 1 + 8 * 4, 128) and torch.equal(pos[:, 0], vit.state_dict()["embeddings.position_embeddings"][:, 0])
    b = bert.state_dict()
    assert torch.equal(ours["text_encoder.encoder.layer.1.output.dense.weight"], b["encoder.layer.1.output.dense.weight"])
    assert torch.equal(ours["fusion_layers.1.attention.self.query.weight"], b["encoder.layer.3.attention.self.query.weight"])
    assert model.mlm_head.predictions.decoder.weight is model.text_encoder.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path / "albef")
    again = LAIPModel.from_backbones(config=LAIPConfig.from_preset("tiny", vocab_size=50, rerank_k=4), albef=tmp_path / "albef")
    assert again.config.rerank_k == 4
    assert torch.equal(again.state_dict()["fusion_layers.1.attention.self.query.weight"], ours["fusion_layers.1.attention.self.query.weight"])
    with pytest.raises(ValueError, match="albef=.*vit=.*bert="):
        LAIPModel.from_backbones(config=LAIPConfig.from_preset("tiny"))


README_CONVERT_LAIP = "tbps convert --model laip --checkpoint mscoco.pth --output_dir albef-mscoco --tokenizer bert-base-uncased"


def test_readme_convert_command_as_written(tmp_path, bert_tokenizer_dir, monkeypatch):
    """The README's LAIP conversion exactly as written: `mscoco.pth` in ALBEF's retrieval layout (a small one the
    test writes) and a local `bert-base-uncased` tokenizer folder in the working directory."""
    import shlex
    import shutil

    from tbps_hf.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert README_CONVERT_LAIP in readme
    config = LAIPConfig.from_preset(
        "tiny", vocab_size=40, vision_num_hidden_layers=2, num_text_layers=2, num_fusion_layers=2,
        vision_num_attention_heads=4, bidiratt_layer=0, max_position_embeddings=64, patch_size=8,
    )  # fmt: skip
    torch.save({"model": _albef_state(config, False)}, tmp_path / "mscoco.pth", _use_new_zipfile_serialization=False)
    shutil.copytree(bert_tokenizer_dir, tmp_path / "bert-base-uncased")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(README_CONVERT_LAIP)[1:]) == 0
    model = AutoModel.from_pretrained(tmp_path / "albef-mscoco")
    processor = AutoProcessor.from_pretrained(tmp_path / "albef-mscoco")
    assert type(model) is LAIPModel and model.config.is_cross_encoder
    assert model.config.image_size == (384, 128)  # the TBPS crop, position table resized from ALBEF's square grid
    text = processor(text=["a man in a red coat"], return_tensors="pt", padding=True)
    assert model.get_text_features(**text).text_embeds.shape[-1] == config.embed_dim
