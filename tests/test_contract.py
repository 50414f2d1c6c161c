"""The contract every registered method keeps (docs/architecture.md), checked for each method in the registry, plus
a minimal method defined only here that trains, evaluates and gets a model card through the package's own code
paths — what a maintainer adding a method writes: its folder (here: this file's classes) and its test."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from conftest import CAPTIONS, person_images, training_examples
from tbps_hf.configuration_utils import TBPSConfig
from tbps_hf.modeling_utils import TBPSAttention, TBPSPreTrainedModel, patch_attention_map
from tbps_hf.models import METHODS, MethodInfo, method_names, register_method
from tbps_hf.processing import TBPSProcessor

# ------------------------------------------------------------------------------------------ a minimal method


@strict(accept_kwargs=True)
class ContractToyConfig(TBPSConfig):
    """One shared attention layer over patch / word embeddings, projected to a joint space."""

    model_type = "tbps-contract-toy"
    presets: ClassVar[dict] = {
        "tiny": {
            "config": {"image_size": [64, 32], "vocab_size": 1000, "max_text_length": 48, "hidden_size": 32},
            "training": {"optimizer": "adamw", "learning_rate": 3e-3, "weight_decay": 0.01,
                         "lr_scheduler_type": "cosine", "warmup_epochs": 0, "num_train_epochs": 5,
                         "per_device_train_batch_size": 8, "images_per_identity": 2},
        }
    }

    hidden_size: int = 32
    num_attention_heads: int = 4
    patch_size: int = 8

    def validate_heads(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size


class ToyLayer(GradientCheckpointingLayer):
    def __init__(self, config: ContractToyConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.attention = TBPSAttention(config, config.hidden_size, config.num_attention_heads)
        self.mlp = nn.Sequential(nn.LayerNorm(config.hidden_size), nn.Linear(config.hidden_size, config.hidden_size))

    def forward(self, hidden_states, key_mask=None, output_attentions=False):
        attended, weights = self.attention(self.norm(hidden_states), key_mask=key_mask, output_attentions=output_attentions)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(hidden_states), weights


@dataclass
class ToyOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    loss_contrastive: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None


class ContractToyModel(TBPSPreTrainedModel):
    config_class = ContractToyConfig
    base_model_prefix = "toy"
    lora_target_modules = ["q_proj", "v_proj"]

    def __init__(self, config: ContractToyConfig):
        super().__init__(config)
        d = config.hidden_size
        self.patch = nn.Conv2d(3, d, config.patch_size, config.patch_size)
        self.image_positions = nn.Parameter(torch.zeros(1, math.prod(config.grid_size), d))
        self.words = nn.Embedding(config.vocab_size, d)
        self.text_positions = nn.Parameter(torch.zeros(1, config.max_text_length, d))
        self.layer = ToyLayer(config)
        self.image_projection = nn.Linear(d, d)
        self.text_projection = nn.Linear(d, d)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.1)
        if isinstance(module, ContractToyModel):
            nn.init.normal_(module.image_positions, std=0.1)
            nn.init.normal_(module.text_positions, std=0.1)

    def _image(self, pixel_values, output_attentions=False):
        tokens = self.patch(pixel_values).flatten(2).transpose(1, 2) + self.image_positions
        hidden, weights = self.layer(tokens, output_attentions=output_attentions)
        return self.image_projection(hidden.mean(dim=1)), weights

    def get_image_features(self, pixel_values):
        return self._image(pixel_values)[0]

    def get_text_features(self, input_ids, attention_mask=None):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        tokens = self.words(input_ids) + self.text_positions[:, : input_ids.shape[1]]
        hidden = self.layer(tokens, key_mask=mask.bool())[0]
        return self.text_projection((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))

    def get_image_attention_maps(self, pixel_values):
        weights = self._image(pixel_values, output_attentions=True)[1]  # [I, heads, P, P]
        return patch_attention_map(weights.float().mean(dim=(1, 2)), self.config.grid_size)

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, person_ids=None, return_loss=True, **kwargs):
        text = self.get_text_features(input_ids, attention_mask)
        image = self.get_image_features(pixel_values)
        logits = self.similarity(text, image)
        loss = None
        if return_loss and person_ids is not None:
            same = (person_ids[:, None] == person_ids[None, :]).float()
            target = same / same.sum(1, keepdim=True)
            loss = -(target * F.log_softmax(logits / 0.1, dim=1)).sum(1).mean()
        return ToyOutput(loss=loss, loss_contrastive=loss, text_embeds=text, image_embeds=image, logits_per_text=logits)


class ContractToyProcessor(TBPSProcessor):
    pass


TOY_INFO = MethodInfo(
    title="Toy",
    paper="(defined in tests/test_contract.py)",
    architecture="one attention layer shared by patches and words; cosine similarity",
    backbone_roles=(),
    loss_terms=("contrastive",),
)

# the package's methods (found without importing them) and the one defined here
ALL_METHODS = method_names() + ["toy"]


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    """Registered while this module runs, so other test modules see only the package's methods."""
    register_method("toy", ContractToyConfig, ContractToyModel, ContractToyProcessor, TOY_INFO)
    yield
    METHODS.pop("toy", None)


@pytest.fixture(params=ALL_METHODS)
def built(request, built_methods, one_thread):
    return built_methods(request.param)


def _texts_and_images(built, texts=3, images=5):
    batch = built.processor(text=CAPTIONS[:texts], images=person_images(images, seed=1), return_tensors="pt")
    return batch


def _training_batch(built):
    batch = built.processor.training_batch(training_examples(num_identities=4, per_identity=2))
    return {k: v for k, v in batch.items()}


def _finish_training_stages(model):
    # multi-stage methods (LAIP) use every loss only in their last stage
    model.set_training_progress(999, 1000, 1000.0)


# ------------------------------------------------------------------------------------------ configs


def test_config_round_trip_and_save_time_validation(built, tmp_path):
    config = built.config
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "training_defaults" not in saved  # the recipe stays with the preset
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is type(config)
    strip = lambda c: {k: v for k, v in c.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert strip(reloaded) == strip(config)
    assert reloaded.training_defaults == config.training_defaults and config.training_defaults
    # a config broken after it was built cannot be saved
    broken = copy.deepcopy(config)
    broken.image_size = (0, 32)
    with pytest.raises(Exception, match="image_size"):
        broken.save_pretrained(tmp_path / "broken")
    assert not (tmp_path / "broken" / "config.json").exists()


def test_from_preset_returns_independent_copies(built):
    cls = type(built.config)
    first = cls.from_preset("tiny")
    first.training_defaults["learning_rate"] = -1.0
    for value in first.__dict__.values():
        if isinstance(value, dict):
            value["__changed__"] = True
    second = cls.from_preset("tiny")
    assert second.training_defaults["learning_rate"] != -1.0
    assert not any(isinstance(v, dict) and "__changed__" in v for v in second.__dict__.values())


# ------------------------------------------------------------------------------------------ models


def test_auto_classes_reload_model_and_processor(built, tmp_path):
    built.model.save_pretrained(tmp_path)
    built.processor.save_pretrained(tmp_path)
    model = AutoModel.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(model) is type(built.model) and type(processor) is type(built.processor)
    state = built.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_similarity_is_text_by_image_within_range_and_indexable(built):
    model, batch = built.model, _texts_and_images(built)
    with torch.no_grad():
        texts = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        images = model.get_image_features(batch["pixel_values"])
        sim = model.similarity(texts, images)
    assert sim.shape == (3, 5) and torch.isfinite(sim).all()
    low, high = built.config.similarity_range
    assert low - 1e-4 <= sim.min() and sim.max() <= high + 1e-4
    index = model.index_features(texts) @ model.index_features(images).t()
    torch.testing.assert_close(index, sim, atol=1e-4, rtol=1e-4)


def test_training_batch_gives_every_declared_loss_term(built):
    model = copy.deepcopy(built.model).train()
    _finish_training_stages(model)
    torch.manual_seed(0)
    out = model(**_training_batch(built))
    assert torch.isfinite(out.loss)
    assert built.method.info.loss_terms, "MethodInfo.loss_terms lists the terms a training forward fills"
    for term in built.method.info.loss_terms:
        value = out[f"loss_{term}"] if f"loss_{term}" in out else None
        assert value is not None and torch.isfinite(value), f"loss_{term} missing or not finite"
    assert out.text_embeds is not None and out.image_embeds is not None


def test_parameter_groups_cover_each_trainable_parameter_once(built):
    groups = built.model.optimizer_param_groups(1e-3, weight_decay=0.01)
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in built.model.parameters() if p.requires_grad}
    assert len(seen) == len(set(seen)) and set(seen) == trainable
    assert all(g["lr"] >= 0 and "weight_decay" in g for g in groups)


def test_lora_targets_exist(built):
    targets = getattr(built.model, "lora_target_modules", None)
    if not targets:
        pytest.skip(f"{built.name} declares no LoRA targets")
    leaves = {name.rsplit(".", 1)[-1] for name, module in built.model.named_modules() if isinstance(module, nn.Linear)}
    assert set(targets) <= leaves


def test_attention_maps_sum_to_one(built):
    pixels = _texts_and_images(built, texts=1, images=3)["pixel_values"]
    with torch.no_grad():
        maps = built.model.get_image_attention_maps(pixels)
    if maps is None:
        pytest.skip(f"{built.name} draws no attention maps in this configuration")
    assert maps.dim() == 3 and maps.shape[0] == 3 and (maps >= 0).all()
    torch.testing.assert_close(maps.sum((1, 2)), torch.ones(3), atol=1e-5, rtol=0)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(built):
    batch = _training_batch(built)
    results = []
    for checkpointing in (False, True):
        model = copy.deepcopy(built.model).train()
        _finish_training_stages(model)
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        torch.manual_seed(0)
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_eager_and_sdpa_agree(built):
    batch = _texts_and_images(built)
    sims = {}
    for implementation in ("eager", "sdpa"):
        model = built.fresh_model(attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            sims[implementation] = model.similarity(
                model.get_text_features(batch["input_ids"], batch["attention_mask"]),
                model.get_image_features(batch["pixel_values"]),
            )
    torch.testing.assert_close(sims["eager"], sims["sdpa"], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------ the package's paths


@pytest.mark.slow
def test_a_method_defined_outside_the_package_trains_evaluates_and_gets_a_card(tmp_path):
    """The toy method goes through `tbps_hf.training.train` (ProcPEDES, tokenizer, sampler, optimizer groups,
    checkpoint, card), `load_model_and_processor` + `evaluate_model`, with nothing edited outside this file."""
    from accelerate.state import AcceleratorState, GradientState

    from tbps_hf.data import EvaluationView, load_tbps_dataset
    from tbps_hf.evaluation import evaluate_model, load_model_and_processor
    from tbps_hf.training import DataArguments, ModelArguments, TrainingArguments, train

    small = {"num_train_identities": 16, "num_test_identities": 8, "num_test_3c_identities": 8, "images_per_identity": 2}
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    out = tmp_path / "toy"
    summary = train(
        ModelArguments(model="toy", preset="tiny"),
        DataArguments(dataset="procpedes", cache_dir=str(tmp_path / "cache"), dataset_options=json.dumps(small),
                      eval_split="none"),
        TrainingArguments(output_dir=str(out), report_to="none", max_steps=6, logging_steps=1,
                          per_device_train_batch_size=8, images_per_identity=2),
    )
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    assert summary["global_step"] == 6 and math.isfinite(summary.get("train_loss", 0.0))
    model, processor = load_model_and_processor(out)
    assert type(model) is ContractToyModel and model.config.training_defaults["learning_rate"] == 3e-3
    dataset = load_tbps_dataset("procpedes", cache_dir=str(tmp_path / "cache"), **small)
    metrics = evaluate_model(model, processor, EvaluationView(dataset["test"]), progress=False)
    overall = metrics.get("overall", metrics)
    assert 0 <= overall["R@1"] <= 100 and overall["num_queries"] > 0
    card = (out / "README.md").read_text()
    assert "Toy" in card and "(defined in tests/test_contract.py)" in card


def test_the_command_line_help_imports_no_model():
    """`tbps --help` lists the methods from the registry without importing torch, transformers or any method (the
    methods register with the Auto classes on transformers' first lookup instead)."""
    import subprocess
    import sys

    code = ("import sys, tbps_hf, tbps_hf.cli; tbps_hf.cli.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'transformers', 'tbps_hf.models.ivt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_builds_without_identities_and_the_identity_loss_says_so(built_methods):
    """`num_identities=0` (not known yet): the model builds without an identity classifier, encodes, and only a loss
    that needs the classifier refuses — naming num_identities."""
    for name in ALL_METHODS:
        entry = built_methods(name)
        config = copy.deepcopy(entry.config)
        config.num_identities = 0
        model = entry.method.model_class(config).train()
        batch = _training_batch(entry)
        with torch.no_grad():
            assert model.get_text_features(batch["input_ids"], batch["attention_mask"]) is not None
        try:
            out = model(**batch)
        except ValueError as error:
            assert "num_identities" in str(error), f"{name}: {error}"
        else:
            assert torch.isfinite(out.loss), name
