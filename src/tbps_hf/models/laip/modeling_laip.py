"""LAIP: Local Alignment from Image-Phrase modeling (``papers/laip.txt``) on an ALBEF cross-encoder.

Towers (transformers' own layers): a ViT image encoder (`ViTModel`), a 6-layer BERT text encoder (`BertModel`), a
fusion encoder of `BlipTextLayer(is_decoder=True)` layers (bidirectional self-attention → cross-attention over the
image tokens → FFN: ALBEF's xbert layers 6-11, same parameter names), 256-d ITC projections, an ITM head and a BERT
MLM head tied to the word embeddings. Training adds EMA momentum encoders and feature queues (ALBEF).

Losses (``LAIPOutput``):
- global: ITC (momentum features + queues, identity-aware targets, momentum distillation), ITM with hard negatives
  sampled in the batch, fusion triplet on the ITM positive probability (Eq. 20, margin 0.6);
- local (per noun phrase, stage 2): BidirAtt (Eq. 4-10) and MPM (Eq. 11) from one fusion pass over (image, masked
  phrase); total = L_global + mean over a caption's phrases of (L_ba + L_mpm) (Eq. 12).

Retrieval is two-stage: `similarity` is the ITC cosine ([-1, 1], first stage, FAISS-ready); `rerank` scores a
query's top-k candidates with the ITM probability ([0, 1]); `tbps_hf.reranking.rerank_similarity` merges both.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, ViTModel
from transformers import initialization as init
from transformers.models.bert.modeling_bert import BertOnlyMLMHead
from transformers.models.blip.modeling_blip_text import BlipTextLayer
from transformers.utils import ModelOutput

from ...modeling_utils import TBPSPreTrainedModel, patch_attention_map
from .configuration_laip import STAGE_ONE_LOSSES, LAIPConfig

MASKED_LOGIT = -1e4  # stands for -inf in similarity logits (keeps 0 * log-prob finite for zero targets)


# ----------------------------------------------------------------------------------------------------------------
# Outputs and features
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class LAIPOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): the paper's total (Eq. 12): `loss_itc + loss_itm +
        loss_triplet + loss_bidiratt + loss_mpm` over the terms active in the current stage.
    loss_itc (`()`, *optional*): image-text contrastive loss with momentum distillation (Eq. 17).
    loss_itm (`()`, *optional*): image-text matching loss on positives and hard negatives (Eq. 19).
    loss_triplet (`()`, *optional*): fusion triplet loss on the ITM positive probability (Eq. 20).
    loss_bidiratt (`()`, *optional*): BidirAtt local alignment, mean over a caption's phrases, then over captions.
    loss_mpm (`()`, *optional*): mask phrase modeling cross-entropy, averaged the same way.
    text_embeds (`[B, embed_dim]`): L2-normalized ITC text embeddings.
    image_embeds (`[B, embed_dim]`): L2-normalized ITC image embeddings.
    logits_per_text (`[B, B]`, *optional*): cosine similarity of `text_embeds` and `image_embeds` (inference).
    itm_logits (`[B + n_neg, 2]`, *optional*): ITM logits of the positive pairs then the negatives (training).
    training_stage (`int`, *optional*): 1 (ITC + ITM) or 2 (all losses) during training.
    """

    loss: torch.FloatTensor | None = None
    loss_itc: torch.FloatTensor | None = None
    loss_itm: torch.FloatTensor | None = None
    loss_triplet: torch.FloatTensor | None = None
    loss_bidiratt: torch.FloatTensor | None = None
    loss_mpm: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    training_stage: int | None = None


@dataclass
class LAIPTextFeatures:
    """What both retrieval stages need from a batch of captions.

    text_embeds (`[T, embed_dim]`): L2-normalized ITC embeddings (first stage; FAISS inner product = cosine).
    hidden_states (`[T, L, hidden_size]`): text-encoder outputs, the fusion encoder's input (re-ranking).
    attention_mask (`[T, L]`): 1 for real tokens.
    """

    text_embeds: torch.Tensor
    hidden_states: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class LAIPImageFeatures:
    """What both retrieval stages need from a batch of person crops.

    image_embeds (`[I, embed_dim]`): L2-normalized ITC embeddings (first stage).
    hidden_states (`[I, 1 + num_patches, vision_hidden_size]`): ViT outputs, the fusion encoder's cross-attention
        memory (re-ranking).
    """

    image_embeds: torch.Tensor
    hidden_states: torch.Tensor


@dataclass
class LAIPPhraseAttentionMaps(ModelOutput):
    r"""
    forward_maps (`[P, rows, cols]`): heads-averaged cross-attention of each phrase's [CLS] over the patches in
        fusion layer `bidiratt_layer` (Eq. 4), each map summing to 1.
    bidirectional_maps (`[P, rows, cols]`): the BidirAtt weights (Eq. 7): forward × clamped backward attention,
        normalized to sum 1.
    backward_maps (`[P, rows, cols]`): the clamped, heads-averaged gradient (Eq. 6), unnormalized.
    """

    forward_maps: torch.FloatTensor | None = None
    bidirectional_maps: torch.FloatTensor | None = None
    backward_maps: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Momentum encoders and queues (training state, never shipped by save_pretrained)
# ----------------------------------------------------------------------------------------------------------------


class LAIPMomentumState(nn.Module):
    """EMA copies of the image encoder, text encoder and both projections (ALBEF's `*_m`), and the feature queues.

    Queues hold momentum features `[queue_size, embed_dim]` row by row with the person id of each row
    (`idx_queue`, -1 = empty slot: excluded from the contrastive softmax until filled, instead of ALBEF's random
    initial features) and the next write position `queue_ptr`.
    """

    def __init__(self, model: "LAIPModel"):
        super().__init__()
        config = model.config
        self.vision_model = copy.deepcopy(model.vision_model)
        self.vision_proj = copy.deepcopy(model.vision_proj)
        self.text_encoder = copy.deepcopy(model.text_encoder)
        self.text_proj = copy.deepcopy(model.text_proj)
        self.vision_embed_norm = copy.deepcopy(model.vision_embed_norm)
        self.text_embed_norm = copy.deepcopy(model.text_embed_norm)
        self.requires_grad_(False)
        device = model.vision_proj.weight.device
        self.register_buffer("image_queue", torch.zeros(config.queue_size, config.embed_dim, device=device))
        self.register_buffer("text_queue", torch.zeros(config.queue_size, config.embed_dim, device=device))
        self.register_buffer("idx_queue", torch.full((config.queue_size,), -1, dtype=torch.long, device=device))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long, device=device))

    def pairs(self, model: "LAIPModel"):
        return [
            (model.vision_model, self.vision_model),
            (model.vision_proj, self.vision_proj),
            (model.text_encoder, self.text_encoder),
            (model.text_proj, self.text_proj),
            *(((model.vision_embed_norm, self.vision_embed_norm), (model.text_embed_norm, self.text_embed_norm))
              if model.vision_embed_norm is not None else ()),
        ]  # fmt: skip

    @torch.no_grad()
    def update(self, model: "LAIPModel", momentum: float) -> None:
        """θ_m ← m θ_m + (1 − m) θ for every momentum parameter."""
        for online, ema in self.pairs(model):
            for p, p_m in zip(online.parameters(), ema.parameters()):
                p_m.mul_(momentum).add_(p.detach().to(p_m.dtype), alpha=1.0 - momentum)

    @torch.no_grad()
    def enqueue(self, image_feat: torch.Tensor, text_feat: torch.Tensor, idx: torch.Tensor) -> None:
        """Write a (gathered) batch at `queue_ptr`, wrapping around (the newest `queue_size` rows win)."""
        size = self.image_queue.shape[0]
        image_feat, text_feat, idx = image_feat[-size:], text_feat[-size:], idx[-size:]
        positions = (self.queue_ptr + torch.arange(idx.shape[0], device=idx.device)) % size
        self.image_queue[positions] = image_feat.to(self.image_queue.dtype)
        self.text_queue[positions] = text_feat.to(self.text_queue.dtype)
        self.idx_queue[positions] = idx
        self.queue_ptr.fill_(int((self.queue_ptr + idx.shape[0]) % size))


def _gather_all(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process (no gradient), like ALBEF's `concat_all_gather`."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    world = torch.distributed.get_world_size()
    if world == 1:
        return tensor
    chunks = [torch.empty_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(chunks, tensor.contiguous())
    return torch.cat(chunks)


def _trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor, *others: torch.Tensor | None):
    """Cut right padding beyond the batch's longest row. Padded positions are masked as keys everywhere and never
    read, so every output at a real position is unchanged; the text and fusion passes just get shorter."""
    length = max(1, int(attention_mask.sum(dim=1).max())) if attention_mask.numel() else input_ids.shape[1]
    if length >= input_ids.shape[1] or bool(attention_mask[:, length:].any()):
        return (input_ids, attention_mask, *others)
    return (input_ids[:, :length], attention_mask[:, :length], *(o[:, :length] if o is not None else None for o in others))


# ----------------------------------------------------------------------------------------------------------------
# Loss pieces (pure functions, tested one by one)
# ----------------------------------------------------------------------------------------------------------------


def identity_targets(ids: torch.Tensor, ids_all: torch.Tensor) -> torch.Tensor:
    """`[B, M]` targets: uniform over the entries of `ids_all` with the same person id (entries with id < 0 are
    empty queue slots and never positive). Every row has at least its own pair as a positive."""
    positive = (ids[:, None] == ids_all[None, :]) & (ids_all[None, :] >= 0)
    positive = positive.float()
    return positive / positive.sum(dim=1, keepdim=True).clamp_min(1.0)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row `-Σ targets · log_softmax(logits)` → `[B]`."""
    return -(F.log_softmax(logits.float(), dim=1) * targets).sum(dim=1)


def sample_hard_negatives(similarity: torch.Tensor, same_identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One hard negative column per row, drawn ∝ softmax(similarity) over the columns of another identity.

    Args:
        similarity: `[B, B]` logits (e.g. text-to-image similarity / temperature).
        same_identity: `[B, B]` bool, True where row and column show the same person (never sampled).

    Returns:
        `(index [B], valid [B] bool)`: a row with no column of another identity gets `valid = False` (its index is
        0 and must be ignored) instead of an error or a positive.
    """
    weights = F.softmax(similarity.float(), dim=1).masked_fill(same_identity, 0.0)
    valid = (weights > 0).any(dim=1)
    # rows without a negative draw from a dummy uniform row; their draw is discarded
    safe = torch.where(valid[:, None], weights, torch.ones_like(weights))
    index = torch.multinomial(safe, 1).squeeze(1)
    return torch.where(valid, index, torch.zeros_like(index)), valid


def fusion_triplet_loss(p_pos: torch.Tensor, p_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 20 for one direction: mean of `max(0, margin − p(T, I) + p(negative pair))` (empty → 0)."""
    if p_neg.numel() == 0:
        return p_pos.sum() * 0.0
    return F.relu(margin - p_pos + p_neg).mean()


def bidirectional_weights(forward: torch.Tensor, grad: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, ...]:
    """BidirAtt weights (Eq. 4-7) from one cross-attention layer.

    Args:
        forward: `[P, heads, num_patches]` the phrase-[CLS] row of the cross-attention weights over the patches.
        grad: same shape, d(score)/d(weights) for those entries.

    Returns:
        `(weights [P, N], forward_mean [P, N], backward [P, N])`: `backward` = heads-averaged gradient clamped at 0
        and detached; `weights` = normalize(forward_mean · backward) to sum 1 — when the product is all zero (no
        positive gradient), the forward attention alone (renormalized) is used for that phrase.
    """
    forward_mean = forward.mean(dim=1)
    backward = grad.detach().mean(dim=1).clamp_min(0.0)
    product = forward_mean * backward
    total = product.sum(dim=1, keepdim=True)
    fallback = forward_mean / forward_mean.sum(dim=1, keepdim=True).clamp_min(eps)
    weights = torch.where(total > eps, product / total.clamp_min(eps), fallback)
    return weights, forward_mean, backward


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


class LAIPPreTrainedModel(TBPSPreTrainedModel):
    config_class = LAIPConfig
    config: LAIPConfig
    base_model_prefix = "laip"
    _no_split_modules = ["ViTLayer", "BertLayer", "BlipTextLayer"]
    _tied_weights_keys = {
        "mlm_head.predictions.decoder.weight": "text_encoder.embeddings.word_embeddings.weight",
        "mlm_head.predictions.decoder.bias": "mlm_head.predictions.bias",
    }

    @torch.no_grad()
    def _init_weights(self, module):
        # fusion layers and the ITM head carry their own std (LAIPConfig.fusion_initializer_range)
        std = getattr(module, "_laip_init_std", None) or self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif type(module).__name__ == "ViTEmbeddings":
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
        elif type(module).__name__ == "BertLMPredictionHead":
            init.zeros_(module.bias)
        elif isinstance(module, LAIPModel):
            init.constant_(module.temp, self.config.temp)


class LAIPModel(LAIPPreTrainedModel):
    r"""LAIP cross-encoder.

    Example:

    ```python
    >>> model = LAIPModel(LAIPConfig.from_preset("tiny"))
    >>> batch = processor.training_batch(examples)           # adds the masked noun phrases
    >>> out = model(**batch, return_loss=True)
    >>> out.loss, out.loss_itc, out.loss_itm, out.loss_triplet, out.loss_bidiratt, out.loss_mpm
    >>> text = model.get_text_features(**processor(text=["a man in a red coat"]))
    >>> images = model.get_image_features(pixel_values)
    >>> first = model.similarity(text, images)                  # [T, I] ITC cosine
    >>> scores = model.rerank(text, images, first.topk(16).indices)   # [T, 16] ITM probabilities
    ```
    """

    # Module names PEFT LoRA targets: the query/value projections of ViT (q_proj, v_proj) and of the BERT text and
    # fusion layers (self- and cross-attention: query, value).
    lora_target_modules = ["q_proj", "v_proj", "query", "value"]

    def __init__(self, config: LAIPConfig):
        super().__init__(config)
        self.vision_model = ViTModel(config.vit_config(), add_pooling_layer=False)
        self.text_encoder = BertModel(config.bert_config(), add_pooling_layer=False)
        fusion_config = config.fusion_layer_config()
        self.fusion_layers = nn.ModuleList(BlipTextLayer(fusion_config, i) for i in range(config.num_fusion_layers))
        self.vision_proj = nn.Linear(config.vision_hidden_size, config.embed_dim)
        self.text_proj = nn.Linear(config.hidden_size, config.embed_dim)
        # opt-in, not in the paper (see LAIPConfig.embedding_batch_norm)
        self.vision_embed_norm = nn.BatchNorm1d(config.embed_dim) if config.embedding_batch_norm else None
        self.text_embed_norm = nn.BatchNorm1d(config.embed_dim) if config.embedding_batch_norm else None
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.mlm_head = BertOnlyMLMHead(config.bert_config())
        self.temp = nn.Parameter(torch.tensor(float(config.temp)))
        if config.fusion_initializer_range is not None:
            for module in [*self.fusion_layers.modules(), self.itm_head]:
                module._laip_init_std = config.fusion_initializer_range
        # training progress (set by the loop before each optimizer step) and the lazily built momentum state
        self._progress: tuple[int, int, float] | None = None
        object.__setattr__(self, "_momentum_state", None)
        self.post_init()

    # -- housekeeping --------------------------------------------------------------------------------------------

    def get_input_embeddings(self):
        return self.text_encoder.embeddings.word_embeddings

    def get_output_embeddings(self):
        return self.mlm_head.predictions.decoder

    def _apply(self, fn, *args, **kwargs):
        # The momentum state is kept outside the module tree (so save_pretrained and DDP's buffer broadcast never see
        # 65k-row queues) but must follow the model across devices and dtypes.
        result = super()._apply(fn, *args, **kwargs)
        state = self.__dict__.get("_momentum_state")
        if state is not None:
            state._apply(fn, *args, **kwargs)
        return result

    @property
    def momentum_state(self) -> LAIPMomentumState:
        """The momentum encoders and queues, created from the current weights on first use (ALBEF `copy_params`)."""
        if self._momentum_state is None:
            object.__setattr__(self, "_momentum_state", LAIPMomentumState(self))
        return self._momentum_state

    # -- training hooks (docs/architecture.md) -------------------------------------------------------------------

    def set_training_progress(self, global_step: int, total_steps: int, epoch: float) -> None:
        """Record where training is; the stage and the distillation ramp are pure functions of these numbers."""
        self._progress = (int(global_step), int(total_steps), float(epoch))

    @property
    def training_stage(self) -> int:
        """1 (ITC + ITM) for the first `stage_one_fraction` of the steps, then 2 (all losses). Without progress
        (the model driven outside the training loop) or with `two_stage` off: 2."""
        if not self.config.two_stage or self._progress is None:
            return 2
        step, total, _ = self._progress
        return 1 if step < round(self.config.stage_one_fraction * total) else 2

    @property
    def distill_alpha(self) -> float:
        """α ramped linearly over the first epoch (ALBEF: `alpha * min(1, i / len(loader))` in epoch 0)."""
        if self._progress is None:
            return float(self.config.itc_distill_alpha)
        return float(self.config.itc_distill_alpha) * min(1.0, self._progress[2])

    @property
    def negative_hardness(self) -> float:
        """Scale of ITM's negative-sampling logits from `itm_negative_schedule`: 0 (uniform) before its start, rising
        linearly to 1 (ALBEF) at its end; 1 outside the training loop."""
        start, end = self.config.itm_negative_schedule
        if self._progress is None or end <= 0:
            return 1.0
        step, total, _ = self._progress
        share = step / max(1, total)
        if share >= end:
            return 1.0
        return 0.0 if share < start or end == start else (share - start) / (end - start)

    def active_losses(self) -> tuple[str, ...]:
        """Loss terms of the current stage that are switched on."""
        switched = [name for name in ("itc", "itm", "triplet", "bidiratt", "mpm") if getattr(self.config, f"use_{name}")]
        if self.training_stage == 1:
            switched = [name for name in switched if name in STAGE_ONE_LOSSES]
        return tuple(switched)

    def training_state_dict(self) -> dict[str, torch.Tensor]:
        """Momentum encoders and queues: restored on resume, never shipped by `save_pretrained`."""
        return {f"momentum.{k}": v for k, v in self.momentum_state.state_dict().items()}

    def load_training_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        inner = {k[len("momentum.") :]: v for k, v in state.items() if k.startswith("momentum.")}
        if not inner:
            raise ValueError("LAIP training state has no 'momentum.*' entries (momentum encoders and queues)")
        self.momentum_state.load_state_dict(inner)

    def find_unused_parameters(self) -> bool:
        # Stage 1 leaves the MLM head unused, and a batch without noun phrases skips the local losses.
        return True

    def optimizer_param_groups(self, learning_rate: float, weight_decay: float = 0.0) -> list[dict]:
        """AdamW groups as in ALBEF/RaSa's optimizer factory: no weight decay on biases, norms and the temperature;
        `lr_multipliers` (module-name prefix → factor) scale the learning rate of new heads."""
        multipliers = dict(self.config.lr_multipliers or {})
        groups: dict[tuple[float, bool], list] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            factor = next((f for prefix, f in multipliers.items() if name.startswith(prefix)), 1.0)
            no_decay = param.dim() < 2
            groups.setdefault((float(factor), no_decay), []).append(param)
        return [
            {"params": params, "lr": learning_rate * factor, "weight_decay": 0.0 if no_decay else weight_decay}
            for (factor, no_decay), params in groups.items()
        ]

    # -- towers --------------------------------------------------------------------------------------------------

    def _image_hidden(self, pixel_values: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        tower = self.momentum_state.vision_model if momentum else self.vision_model
        return tower(pixel_values=pixel_values).last_hidden_state

    def _text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, momentum: bool = False):
        tower = self.momentum_state.text_encoder if momentum else self.text_encoder
        return tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def _image_embed(self, hidden: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        owner = self.momentum_state if momentum else self
        return self._project(hidden[:, 0], owner.vision_proj, owner.vision_embed_norm)

    def _text_embed(self, hidden: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        owner = self.momentum_state if momentum else self
        return self._project(hidden[:, 0], owner.text_proj, owner.text_embed_norm)

    @staticmethod
    def _project(features: torch.Tensor, proj: nn.Linear, norm: nn.BatchNorm1d | None) -> torch.Tensor:
        """ITC projection (Eq. 9/15's W): linear, the opt-in BatchNorm, L2 normalization."""
        projected = proj(features)
        if norm is not None and not (norm.training and projected.shape[0] < 2):
            projected = norm(projected)
        return F.normalize(projected.float(), dim=-1)

    def fusion(
        self,
        text_hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        image_hidden: torch.Tensor | None = None,
        image_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        image_index: torch.Tensor | None = None,
        return_cross_attention_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the fusion encoder.

        Args:
            text_hidden: `[B, L, hidden_size]` text-encoder outputs; attention_mask: `[B, L]`.
            image_hidden: `[B, 1 + N, vision_hidden_size]` image tokens (each layer projects them to keys/values), or
            image_key_values: per layer `(keys, values)` `[I, heads, 1 + N, head_dim]` computed once per image by
                `image_key_values`, with `image_index [B]` naming each row's image (re-ranking).
            return_cross_attention_layer: also return that layer's cross-attention weights `[B, heads, L, 1 + N]`
                (in the autograd graph: BidirAtt differentiates the MPM score with respect to them).

        Returns:
            `(last_hidden_state [B, L, hidden_size], cross_attention or None)`.
        """
        if (image_hidden is None) == (image_key_values is None):
            raise ValueError("pass exactly one of image_hidden and image_key_values")
        mask = attention_mask[:, None, None, :].to(text_hidden.dtype)
        extended = (1.0 - mask) * torch.finfo(text_hidden.dtype).min
        hidden, cross = text_hidden, None
        for i, layer in enumerate(self.fusion_layers):
            attended, _ = layer.attention(hidden, attention_mask=extended)
            if image_key_values is None:
                attended, probs = layer.crossattention(attended, encoder_hidden_states=image_hidden)
            else:
                keys, values = image_key_values[i]
                attended, probs = self._cached_cross_attention(layer, attended, keys[image_index], values[image_index])
            if i == return_cross_attention_layer:
                cross = probs
            hidden = layer.feed_forward_chunk(attended)
        return hidden, cross

    def image_key_values(self, image_hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each fusion layer's cross-attention keys and values of a block of images, `[I, heads, 1 + N, head_dim]`
        per layer: computed once per image and reused for every query that has the image as a candidate."""
        out = []
        for layer in self.fusion_layers:
            attn = layer.crossattention.self
            shape = (*image_hidden.shape[:-1], -1, attn.attention_head_size)
            out.append(
                (
                    attn.key(image_hidden).view(shape).transpose(1, 2),
                    attn.value(image_hidden).view(shape).transpose(1, 2),
                )
            )
        return out

    @staticmethod
    def _cached_cross_attention(layer: BlipTextLayer, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """`layer.crossattention` with precomputed keys/values: the layer's own query and output modules, the same
        arithmetic as `BlipTextSelfAttention` (tests check the two paths agree)."""
        attn = layer.crossattention.self
        query = attn.query(hidden).view(*hidden.shape[:-1], -1, attn.attention_head_size).transpose(1, 2)
        scores = query @ keys.transpose(-1, -2) / math.sqrt(attn.attention_head_size)
        probs = scores.softmax(dim=-1)
        context = (attn.dropout(probs) @ values).transpose(1, 2).reshape(*hidden.shape[:-1], attn.all_head_size)
        return layer.crossattention.output(context, hidden), probs

    # -- retrieval interface -------------------------------------------------------------------------------------

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> LAIPTextFeatures:
        """`input_ids [T, L]` → `LAIPTextFeatures` (ITC embeddings `[T, embed_dim]` + text-encoder states)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask = _trim_padding(input_ids, attention_mask)
        hidden = self._text_hidden(input_ids, attention_mask)
        embeds = self._text_embed(hidden)
        # Padding positions are zeroed and every batch is padded to `max_text_length`, so features of batches padded
        # to their own longest caption concatenate and equal those of fixed-length batches (the fusion encoder
        # masks these positions anyway).
        hidden = hidden * attention_mask[..., None].to(hidden.dtype)
        missing = self.config.max_text_length - hidden.shape[1]
        if missing > 0:
            hidden = F.pad(hidden, (0, 0, 0, missing))
            attention_mask = F.pad(attention_mask, (0, missing))
        return LAIPTextFeatures(embeds, hidden, attention_mask)

    def get_image_features(self, pixel_values: torch.Tensor) -> LAIPImageFeatures:
        """`pixel_values [I, 3, H, W]` → `LAIPImageFeatures` (ITC embeddings `[I, embed_dim]` + ViT tokens)."""
        hidden = self._image_hidden(pixel_values)
        return LAIPImageFeatures(self._image_embed(hidden), hidden)

    def index_features(self, features) -> torch.Tensor:
        """The first-stage vectors `[N, embed_dim]` (already L2-normalized: inner product = ITC cosine)."""
        if isinstance(features, LAIPTextFeatures):
            return features.text_embeds.float()
        if isinstance(features, LAIPImageFeatures):
            return features.image_embeds.float()
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def rerank(
        self,
        text_inputs,
        image_features,
        candidate_indices: torch.Tensor,
        image_block_size: int = 256,
        pair_batch_size: int = 256,
    ) -> torch.Tensor:
        """Cross-encode each query with its first-stage candidates and score them with the ITM probability.

        Each candidate image's cross-attention keys/values are computed once per fusion layer (blocks of
        `image_block_size` distinct candidate images); the (query, candidate) pairs of a block then run the fusion
        encoder `pair_batch_size` at a time, reusing them.

        Args:
            text_inputs: `LAIPTextFeatures` of the T queries, or a mapping with `input_ids` / `attention_mask`.
            image_features: `LAIPImageFeatures` of the gallery (I images), or `pixel_values [I, 3, H, W]`.
            candidate_indices: `[T, k]` gallery indices per query.

        Returns:
            `[T, k]` float32 ITM positive probabilities in [0, 1].
        """
        if not isinstance(text_inputs, LAIPTextFeatures):
            text_inputs = self.get_text_features(text_inputs["input_ids"], text_inputs.get("attention_mask"))
        if not isinstance(image_features, LAIPImageFeatures):
            image_features = self.get_image_features(image_features)
        num_texts, num_images = text_inputs.hidden_states.shape[0], image_features.hidden_states.shape[0]
        candidate_indices = torch.as_tensor(candidate_indices, dtype=torch.long)
        if candidate_indices.dim() != 2 or candidate_indices.shape[0] != num_texts:
            raise ValueError(f"candidate_indices must be [{num_texts}, k], got {tuple(candidate_indices.shape)}")
        if candidate_indices.numel() and (candidate_indices.min() < 0 or candidate_indices.max() >= num_images):
            raise ValueError(f"candidate_indices must lie in [0, {num_images - 1}] (the gallery has {num_images} images)")
        device = text_inputs.hidden_states.device
        flat_images = candidate_indices.reshape(-1).to(device)
        flat_texts = torch.arange(num_texts, device=device).repeat_interleave(candidate_indices.shape[1])
        scores = torch.zeros(flat_images.shape[0], dtype=torch.float32, device=device)
        unique = flat_images.unique()
        position = torch.full((num_images,), -1, dtype=torch.long, device=device)
        for start in range(0, unique.shape[0], image_block_size):
            block = unique[start : start + image_block_size]
            image_hidden = image_features.hidden_states[block.to(image_features.hidden_states.device)].to(device)
            key_values = self.image_key_values(image_hidden)
            position[block] = torch.arange(block.shape[0], device=device)
            pairs = torch.nonzero(torch.isin(flat_images, block)).squeeze(1)
            for p in range(0, pairs.shape[0], pair_batch_size):
                chunk = pairs[p : p + pair_batch_size]
                rows = flat_texts[chunk]
                # text features are padded to max_text_length; the pairs of a chunk only need their longest caption
                _, text_mask, text_hidden = _trim_padding(
                    text_inputs.attention_mask[rows], text_inputs.attention_mask[rows], text_inputs.hidden_states[rows]
                )
                hidden, _ = self.fusion(
                    text_hidden,
                    text_mask,
                    image_key_values=key_values,
                    image_index=position[flat_images[chunk]],
                )
                scores[chunk] = self.itm_head(hidden[:, 0]).float().softmax(dim=-1)[:, 1]
        return scores.view(num_texts, -1)

    def get_image_attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[I, rows, cols]`: the ViT class token's last-layer attention over the patches (heads averaged)."""
        vit_config = self.vision_model.config
        previous = vit_config._attn_implementation
        vit_config._attn_implementation = "eager"  # fused attention never materializes the weights
        try:
            out = self.vision_model(pixel_values=pixel_values, output_attentions=True)
        finally:
            vit_config._attn_implementation = previous
        to_patches = out.attentions[-1][:, :, 0, 1:].float().mean(dim=1)
        return patch_attention_map(to_patches, self.config.grid_size)

    def get_phrase_attention_maps(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> LAIPPhraseAttentionMaps:
        """Forward and bidirectional attention maps of noun phrases over an image grid (the paper's Fig. 7).

        Args:
            input_ids, attention_mask: `[P, Lp]` noun phrases (`processor.phrase_inputs(caption)` tokenizes a
                caption's phrases with one word masked per phrase and gives `labels`).
            pixel_values: `[P, 3, H, W]`, or `[1, 3, H, W]` shared by every phrase.
            labels: `[P, Lp]` ground-truth ids at the masked positions, -100 elsewhere: the backward attention is the
                gradient of their logits (training's MPM score). Without labels, the ITM positive logit of the pair
                is differentiated instead (ALBEF's Grad-CAM grounding score).

        Returns:
            `LAIPPhraseAttentionMaps` with `[P, rows, cols]` maps.
        """
        num = input_ids.shape[0]
        if pixel_values.shape[0] == 1 and num > 1:
            pixel_values = pixel_values.expand(num, -1, -1, -1)
        if pixel_values.shape[0] != num:
            raise ValueError(f"pixel_values has {pixel_values.shape[0]} images for {num} phrases (pass 1 or {num})")
        with torch.enable_grad():
            image_hidden = self._image_hidden(pixel_values).detach()
            text_hidden = self._text_hidden(input_ids, attention_mask).detach()
            hidden, cross = self.fusion(
                text_hidden, attention_mask, image_hidden=image_hidden,
                return_cross_attention_layer=self.config.bidiratt_layer,
            )  # fmt: skip
            if labels is not None:
                score = self._masked_word_scores(self.mlm_head(hidden), labels).sum()
            else:
                score = self.itm_head(hidden[:, 0])[:, 1].sum()
            grad = torch.autograd.grad(score, cross)[0]
        weights, forward, backward = bidirectional_weights(cross[:, :, 0, 1:].detach(), grad[:, :, 0, 1:])
        grid = self.config.grid_size
        return LAIPPhraseAttentionMaps(
            forward_maps=patch_attention_map(forward.float(), grid),
            bidirectional_maps=weights.float().reshape(-1, *grid),
            backward_maps=backward.float().reshape(-1, *grid),
        )

    @staticmethod
    def _masked_word_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. 5: per phrase, the sum of the ground-truth logits at its masked positions → `[P]`."""
        masked = labels != -100
        picked = logits.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return (picked * masked).sum(dim=1)

    # -- training forward ----------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        person_ids: torch.Tensor | None = None,
        phrase_input_ids: torch.Tensor | None = None,
        phrase_attention_mask: torch.Tensor | None = None,
        phrase_labels: torch.Tensor | None = None,
        phrase_example_index: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> LAIPOutput:
        r"""
        Args:
            input_ids, attention_mask: `[B, L]` captions; pixel_values: `[B, 3, H, W]`; person_ids: `[B]`.
            phrase_input_ids, phrase_attention_mask: `[P, Lp]` the batch's masked noun phrases (or masked captions in
                `mask_mode="sentence"`) from `LAIPProcessor.training_batch`; phrase_labels: `[P, Lp]` original ids at
                the masked positions, -100 elsewhere; phrase_example_index: `[P]` the batch row each belongs to.
            return_loss: compute the losses (needs `person_ids`); without them the output holds the embeddings and
                `logits_per_text`.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("LAIP's forward needs input_ids and pixel_values")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask = _trim_padding(input_ids, attention_mask)
        if phrase_input_ids is not None and phrase_input_ids.shape[0] and phrase_attention_mask is not None:
            phrase_input_ids, phrase_attention_mask, phrase_labels = _trim_padding(
                phrase_input_ids, phrase_attention_mask, phrase_labels
            )
        image_hidden = self._image_hidden(pixel_values)
        text_hidden = self._text_hidden(input_ids, attention_mask)
        image_feat, text_feat = self._image_embed(image_hidden), self._text_embed(text_hidden)
        if not return_loss or person_ids is None:
            return LAIPOutput(text_embeds=text_feat, image_embeds=image_feat, logits_per_text=text_feat @ image_feat.t())

        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        ids = person_ids.to(image_feat.device).long()
        active = self.active_losses()
        zero = image_feat.sum() * 0.0
        terms: dict[str, torch.Tensor] = {}
        if "itc" in active:
            terms["itc"] = self._itc_loss(pixel_values, input_ids, attention_mask, image_feat, text_feat, ids)
        itm_logits = None
        if "itm" in active or "triplet" in active:
            itm, triplet, itm_logits = self._itm_losses(image_hidden, text_hidden, attention_mask, image_feat, text_feat, ids)
            if "itm" in active:
                terms["itm"] = itm
            if "triplet" in active:
                terms["triplet"] = triplet
        if ("bidiratt" in active or "mpm" in active) and phrase_input_ids is not None:
            bidiratt, mpm = self._local_losses(
                image_hidden, ids, phrase_input_ids, phrase_attention_mask, phrase_labels, phrase_example_index,
                use_bidiratt="bidiratt" in active, use_mpm="mpm" in active,
            )  # fmt: skip
            if "bidiratt" in active:
                terms["bidiratt"] = bidiratt
            if "mpm" in active:
                terms["mpm"] = mpm
        loss = sum(terms.values(), zero)
        return LAIPOutput(
            loss=loss,
            loss_itc=terms.get("itc"),
            loss_itm=terms.get("itm"),
            loss_triplet=terms.get("triplet"),
            loss_bidiratt=terms.get("bidiratt"),
            loss_mpm=terms.get("mpm"),
            text_embeds=text_feat,
            image_embeds=image_feat,
            itm_logits=itm_logits,
            training_stage=self.training_stage if self.training else None,
        )

    def _itc_loss(self, pixel_values, input_ids, attention_mask, image_feat, text_feat, ids) -> torch.Tensor:
        """Eq. 16-17 with ALBEF's momentum features and queues, identity-aware targets and momentum distillation."""
        state = self.momentum_state
        alpha = self.distill_alpha
        temp = self.temp.float()
        with torch.no_grad():
            state.update(self, self.config.momentum)
            image_feat_m = self._image_embed(self._image_hidden(pixel_values, momentum=True), momentum=True)
            text_feat_m = self._text_embed(self._text_hidden(input_ids, attention_mask, momentum=True), momentum=True)
            image_all = torch.cat([image_feat_m, state.image_queue.float()])
            text_all = torch.cat([text_feat_m, state.text_queue.float()])
            ids_all = torch.cat([ids, state.idx_queue])
            empty = ids_all < 0
            targets = identity_targets(ids, ids_all)
            targets_i2t = targets_t2i = targets
            if alpha > 0:
                sim_i2t_m = (image_feat_m @ text_all.t() / temp).masked_fill(empty[None], MASKED_LOGIT)
                sim_t2i_m = (text_feat_m @ image_all.t() / temp).masked_fill(empty[None], MASKED_LOGIT)
                targets_i2t = alpha * sim_i2t_m.softmax(dim=1) + (1 - alpha) * targets
                targets_t2i = alpha * sim_t2i_m.softmax(dim=1) + (1 - alpha) * targets
        sim_i2t = (image_feat @ text_all.t() / temp).masked_fill(empty[None], MASKED_LOGIT)
        sim_t2i = (text_feat @ image_all.t() / temp).masked_fill(empty[None], MASKED_LOGIT)
        loss = (soft_cross_entropy(sim_i2t, targets_i2t).mean() + soft_cross_entropy(sim_t2i, targets_t2i).mean()) / 2
        if self.training:
            state.enqueue(_gather_all(image_feat_m), _gather_all(text_feat_m), _gather_all(ids))
        return loss

    def _itm_losses(self, image_hidden, text_hidden, attention_mask, image_feat, text_feat, ids):
        """Eq. 18-20: ITM on B positives + one hard negative image per text + one hard negative text per image
        (∝ softmax of the in-batch ITC similarity, other identities only; the logits scaled by `negative_hardness`,
        see `itm_negative_schedule`), and the fusion triplet reusing them."""
        with torch.no_grad():
            sim_t2i = text_feat @ image_feat.t() / self.temp.float() * self.negative_hardness
            same = ids[:, None] == ids[None, :]
            neg_image, valid_t = sample_hard_negatives(sim_t2i, same)  # for each text
            neg_text, valid_i = sample_hard_negatives(sim_t2i.t(), same)  # for each image
        rows_t = torch.nonzero(valid_t).squeeze(1)
        rows_i = torch.nonzero(valid_i).squeeze(1)
        text_all = torch.cat([text_hidden, text_hidden[rows_t], text_hidden[neg_text[rows_i]]])
        mask_all = torch.cat([attention_mask, attention_mask[rows_t], attention_mask[neg_text[rows_i]]])
        image_all = torch.cat([image_hidden, image_hidden[neg_image[rows_t]], image_hidden[rows_i]])
        hidden, _ = self.fusion(text_all, mask_all, image_hidden=image_all)
        logits = self.itm_head(hidden[:, 0]).float()
        batch = ids.shape[0]
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        labels[:batch] = 1
        loss_itm = F.cross_entropy(logits, labels)
        prob = logits.softmax(dim=-1)[:, 1]
        p_pos, p_neg_image = prob[:batch], prob[batch : batch + rows_t.shape[0]]
        p_neg_text = prob[batch + rows_t.shape[0] :]
        margin = self.config.triplet_margin
        loss_triplet = fusion_triplet_loss(p_pos[rows_t], p_neg_image, margin) + fusion_triplet_loss(
            p_pos[rows_i], p_neg_text, margin
        )
        return loss_itm, loss_triplet, logits

    def _local_losses(
        self, image_hidden, ids, phrase_input_ids, phrase_attention_mask, phrase_labels, phrase_example_index,
        use_bidiratt: bool, use_mpm: bool,
    ):  # fmt: skip
        """BidirAtt (Eq. 4-10) and MPM (Eq. 11) from one fusion pass over (image, masked phrase), averaged over a
        caption's phrases then over the captions that have phrases (Eq. 12). No phrase in the batch → zeros.

        Eq. 10's form is lost in our copy; we use the ITC form of Eq. 17 on phrases: an identity-aware contrastive
        loss (both directions, averaged) between the projected weighted images `normalize(vision_proj(Σ_j w_j v_j))`
        (v_j the unimodal patch features of the phrase's image) and the projected phrase [CLS]
        `normalize(text_proj(·))` of the batch's phrases, at the ITC temperature.
        """
        zero = image_hidden.sum() * 0.0
        if phrase_input_ids.shape[0] == 0:
            return zero, zero
        if phrase_labels is None or phrase_example_index is None:
            raise ValueError("the local losses need phrase_labels and phrase_example_index with phrase_input_ids")
        if phrase_attention_mask is None:
            phrase_attention_mask = torch.ones_like(phrase_input_ids)
        index = phrase_example_index.to(image_hidden.device).long()
        with torch.enable_grad():
            phrase_hidden = self._text_hidden(phrase_input_ids, phrase_attention_mask)
            image_rows = image_hidden[index]
            hidden, cross = self.fusion(
                phrase_hidden, phrase_attention_mask, image_hidden=image_rows,
                return_cross_attention_layer=self.config.bidiratt_layer if use_bidiratt else None,
            )  # fmt: skip
            logits = self.mlm_head(hidden)
            masked = phrase_labels != -100
            per_phrase_mpm = F.cross_entropy(
                logits.float().transpose(1, 2), phrase_labels, ignore_index=-100, reduction="none"
            ).sum(dim=1) / masked.sum(dim=1).clamp_min(1)
            per_phrase_ba = torch.zeros_like(per_phrase_mpm)
            if use_bidiratt:
                score = self._masked_word_scores(logits, phrase_labels).sum()
                grad = torch.autograd.grad(score, cross, retain_graph=True)[0]
                weights, _, _ = bidirectional_weights(cross[:, :, 0, 1:], grad[:, :, 0, 1:])
                weighted = (weights.unsqueeze(-1).to(image_rows.dtype) * image_rows[:, 1:]).sum(dim=1)
                image_local = self._project(weighted, self.vision_proj, self.vision_embed_norm)
                phrase_local = self._text_embed(phrase_hidden)
                sim = image_local @ phrase_local.t() / self.temp.float()
                targets = identity_targets(ids[index], ids[index])
                per_phrase_ba = (soft_cross_entropy(sim, targets) + soft_cross_entropy(sim.t(), targets)) / 2
        # mean over each caption's phrases, then over captions with phrases
        batch = ids.shape[0]
        counts = torch.zeros(batch, device=index.device).index_add_(0, index, torch.ones_like(index, dtype=torch.float))
        has = counts > 0

        def per_caption(values: torch.Tensor) -> torch.Tensor:
            sums = torch.zeros(batch, device=index.device, dtype=values.dtype).index_add(0, index, values)
            return (sums[has] / counts[has]).mean()

        return (per_caption(per_phrase_ba) if use_bidiratt else zero), (per_caption(per_phrase_mpm) if use_mpm else zero)

    # -- initialization from pretrained backbones ----------------------------------------------------------------

    @classmethod
    def from_backbones(
        cls,
        config: LAIPConfig | None = None,
        preset: str | None = None,
        albef: str | os.PathLike | None = None,
        vit: str | os.PathLike | nn.Module | None = None,
        bert: str | os.PathLike | nn.Module | None = None,
    ) -> "LAIPModel":
        """LAIP from pretrained parts (docs/architecture.md → Backbones).

        - `albef`: a folder written by `convert_laip_original_to_hf` (a converted ALBEF / RaSa checkpoint, the
          paper's start: ALBEF fine-tuned on COCO) — loaded whole, with `config`/`preset` fields applied on top.
        - `vit` + `bert`: a `ViTModel` (hub id, folder or module) for the image encoder and a `BertModel` whose first
          `num_text_layers` layers become the text encoder and whose next `num_fusion_layers` layers initialize the
          fusion layers' self-attention and FFN (cross-attention starts random, as in ALBEF's pre-training from
          BERT); the MLM head decoder is tied to the word embeddings.

        Roles not given fall back to `config.backbone_checkpoints`.
        """
        if config is None:
            config = LAIPConfig.from_preset(preset or "albef-b16")
        checkpoints = dict(config.backbone_checkpoints or {})
        if albef is None and vit is None and bert is None:
            albef, vit, bert = checkpoints.get("albef"), checkpoints.get("vit"), checkpoints.get("bert")
        if albef is not None:
            overrides = {k: v for k, v in config.to_diff_dict().items() if k in LAIPConfig.__dataclass_fields__}
            for key in ("vocab_size", "model_type", "transformers_version"):
                overrides.pop(key, None)
            return cls.from_pretrained(albef, **overrides)
        if vit is None or bert is None:
            raise ValueError("from_backbones needs albef=..., or both vit=... and bert=... (roles: albef | vit + bert)")
        if not isinstance(vit, nn.Module):
            vit = ViTModel.from_pretrained(vit, add_pooling_layer=False)
        if not isinstance(bert, nn.Module):
            bert = BertModel.from_pretrained(bert, add_pooling_layer=False)
        model = cls(config)
        ours = model.state_dict()
        vit_state = {k: v for k, v in vit.state_dict().items() if not k.startswith("pooler.")}
        loaded = {}
        for key, value in vit_state.items():
            if key == "embeddings.position_embeddings":
                from .convert_laip_original_to_hf import resize_position_embeddings

                value = resize_position_embeddings(value, config.grid_size)
            loaded[f"vision_model.{key}"] = value
        for key, value in bert.state_dict().items():
            if key.startswith("embeddings."):
                if key == "embeddings.position_ids":
                    continue
                loaded[f"text_encoder.{key}"] = value
            elif key.startswith("encoder.layer."):
                layer = int(key.split(".")[2])
                rest = key.split(".", 3)[3]
                if layer < config.num_text_layers:
                    loaded[f"text_encoder.encoder.layer.{layer}.{rest}"] = value
                elif layer < config.num_text_layers + config.num_fusion_layers:
                    loaded[f"fusion_layers.{layer - config.num_text_layers}.{rest}"] = value
        problems = [f"{k}: ours {tuple(ours[k].shape)} vs {tuple(v.shape)}" for k, v in loaded.items() if k in ours and ours[k].shape != v.shape]
        unknown = [k for k in loaded if k not in ours]
        if problems or unknown:
            raise ValueError("from_backbones: incompatible backbones: " + "; ".join(problems + [f"unexpected {k}" for k in unknown]))
        model.load_state_dict(loaded, strict=False)
        model.tie_weights()
        return model


__all__ = [
    "LAIPModel",
    "LAIPPreTrainedModel",
    "LAIPOutput",
    "LAIPTextFeatures",
    "LAIPImageFeatures",
    "LAIPPhraseAttentionMaps",
    "LAIPMomentumState",
    "bidirectional_weights",
    "fusion_triplet_loss",
    "identity_targets",
    "sample_hard_negatives",
    "soft_cross_entropy",
]
