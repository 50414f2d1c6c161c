"""IVT: Implicit Visual-Textual network (Shu et al., ECCV Workshops 2022; ``papers/ivt.txt``).

One ViT-style stack encodes both modalities (§3.2, Eq. 3-4): every block shares its LayerNorms and multi-head
self-attention between images and text, and switches between an image MLP and a text MLP. Images enter as patch
embeddings with a class token, position and type embeddings (Eq. 1); text enters as BERT word embeddings with
[CLS]/[SEP], position and token-type embeddings (Eq. 2). The class tokens after the final LayerNorm are the
embeddings; retrieval is a dual encoder with cosine similarity (range [-1, 1]).

Training: CMPM in both directions (Eq. 5-7) plus bidirectional mask modeling (BMM, §3.3): a ratio of image patches
and text word tokens is hidden from attention in every training forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ...losses.cmpm import cmpm_loss
from ...modeling_utils import TBPSAttention, TBPSPreTrainedModel, patch_attention_map, resize_position_table
from .configuration_ivt import IVTConfig


@dataclass
class IVTOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): the paper's total, `loss_cmpm_i2t + loss_cmpm_t2i` (Eq. 7).
    loss_cmpm_i2t (`torch.FloatTensor` of shape `()`, *optional*): CMPM, images projected onto texts.
    loss_cmpm_t2i (`torch.FloatTensor` of shape `()`, *optional*): CMPM, texts projected onto images.
    text_embeds (`torch.FloatTensor` of shape `[B, hidden_size]`): text class tokens after the final LayerNorm.
    image_embeds (`torch.FloatTensor` of shape `[B, hidden_size]`): image class tokens after the final LayerNorm.
    logits_per_text (`torch.FloatTensor` of shape `[T, I]`): their cosine similarity (`similarity`).
    text_bmm_mask (`torch.BoolTensor` of shape `[B, L]`, *optional*): text tokens hidden by BMM (True = masked).
    image_bmm_mask (`torch.BoolTensor` of shape `[B, num_patches]`, *optional*): patches dropped by BMM.
    """

    loss: torch.FloatTensor | None = None
    loss_cmpm_i2t: torch.FloatTensor | None = None
    loss_cmpm_t2i: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_bmm_mask: torch.BoolTensor | None = None
    image_bmm_mask: torch.BoolTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# BMM: random masks (torch's global RNG, so accelerate checkpoints restore it)
# ----------------------------------------------------------------------------------------------------------------


def _num_to_mask(counts: torch.Tensor, ratio: float, sampling: str) -> torch.Tensor:
    """Per-sample number of tokens to mask out of `counts` maskable ones."""
    upper = torch.floor(counts.float() * ratio + 1e-6).long()
    if sampling == "uniform":  # public code: a count drawn uniformly in [0, floor(ratio * n)] per step
        draw = torch.rand((), device=counts.device)
        upper = torch.floor(draw * (upper + 1).float()).long().clamp_max(upper)
    return upper


def random_patch_mask(batch_size: int, num_patches: int, ratio: float, sampling: str = "fixed", device=None):
    """Choose the patches BMM drops.

    Returns `(keep_index [B, K_keep], masked [B, K] bool)`: the same number of patches is dropped in every sample
    (so the kept ones stack into one tensor), positions differ per sample.
    """
    counts = torch.full((1,), num_patches, device=device)
    num_masked = int(_num_to_mask(counts, ratio, sampling)[0])
    order = torch.rand(batch_size, num_patches, device=device).argsort(dim=1)
    keep_index = order[:, num_masked:].sort(dim=1).values
    masked = torch.ones(batch_size, num_patches, dtype=torch.bool, device=device)
    masked.scatter_(1, keep_index, False)
    return keep_index, masked


def random_text_mask(attention_mask: torch.Tensor, ratio: float, sampling: str = "fixed") -> torch.Tensor:
    """Choose the word tokens BMM hides: `[B, L]` bool, True = masked.

    Only real word tokens can be masked: never padding, never [CLS] (position 0) nor [SEP] (the last real token).
    Each sample masks `floor(ratio * n_words)` of its own words.
    """
    valid = attention_mask.bool()
    lengths = valid.sum(dim=1)  # [B]
    positions = torch.arange(valid.shape[1], device=valid.device).unsqueeze(0)
    maskable = valid & (positions > 0) & (positions < (lengths - 1).unsqueeze(1))
    num_masked = _num_to_mask(maskable.sum(dim=1), ratio, sampling)  # [B]
    scores = torch.rand(valid.shape, device=valid.device).masked_fill(~maskable, float("inf"))
    rank = scores.argsort(dim=1).argsort(dim=1)  # rank of each position among the sample's maskable tokens
    return (rank < num_masked.unsqueeze(1)) & maskable


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------


class IVTDropPath(nn.Module):
    """Stochastic depth per sample (hand-written: timm is not a dependency for one line)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)
        return hidden_states * hidden_states.new_empty(shape).bernoulli_(keep).div_(keep)


class IVTImageEmbeddings(nn.Module):
    """Eq. 1: `[cls, patch_1 … patch_K] + position + type`; patches from one strided convolution."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_stride
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.type_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor, keep_index: torch.Tensor | None = None) -> torch.Tensor:
        """`pixel_values [B, C, H, W]` → `[B, 1 + K, hidden]` (or `[B, 1 + K_keep, hidden]` with `keep_index`)."""
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[-2:]) != tuple(self.config.image_size):
            raise ValueError(
                f"pixel_values must be [B, {self.config.num_channels}, {self.config.image_size[0]}, "
                f"{self.config.image_size[1]}] for this IVT config, got {tuple(pixel_values.shape)}"
            )
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)  # [B, K, hidden]
        patches = patches + self.position_embeddings[:, 1:] + self.type_embedding
        cls = self.cls_token + self.position_embeddings[:, :1] + self.type_embedding
        if keep_index is not None:  # BMM: dropped patches never enter the stack (as in the public code)
            patches = patches.gather(1, keep_index.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        embeddings = torch.cat([cls.expand(patches.shape[0], -1, -1), patches], dim=1)
        return self.dropout(embeddings)


class IVTTextEmbeddings(nn.Module):
    """Eq. 2: BERT embeddings, `word + position + token type`, then LayerNorm and dropout."""

    def __init__(self, config: IVTConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_text_length, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.text_layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`input_ids [B, L]` → `[B, L, hidden]`."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        if length > self.config.max_text_length:
            raise ValueError(
                f"input_ids has {length} tokens but this IVT config has max_text_length={self.config.max_text_length}"
            )
        if input_ids.numel() and (int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0):
            raise ValueError(
                f"input_ids contain ids outside [0, vocab_size={self.config.vocab_size}); tokenizer and config differ"
            )
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
        token_types = torch.zeros_like(input_ids)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_types)
        )
        return self.dropout(self.layer_norm(embeddings))


class IVTMLP(nn.Module):
    def __init__(self, config: IVTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(hidden_states)))))


class IVTLayer(GradientCheckpointingLayer):
    """One block (Eq. 3-4): shared pre-LN self-attention, then the modality's own pre-LN MLP."""

    def __init__(self, config: IVTConfig, drop_path: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = TBPSAttention(
            config,
            config.hidden_size,
            config.num_attention_heads,
            dropout=config.attention_probs_dropout_prob,
            qkv_bias=config.qkv_bias,
        )
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_image = IVTMLP(config)
        self.mlp_text = IVTMLP(config)
        self.drop_path = IVTDropPath(drop_path)

    def forward(
        self,
        hidden_states: torch.Tensor,
        modality: str,
        key_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states [B, N, hidden]`, `key_mask [B, N]` (True = may be attended) → (`[B, N, hidden]`,
        attention weights `[B, heads, N, N]` when `output_attentions`)."""
        attended, weights = self.attention(
            self.layernorm_before(hidden_states), key_mask=key_mask, output_attentions=output_attentions
        )
        hidden_states = hidden_states + self.drop_path(attended)
        mlp = self.mlp_image if modality == "image" else self.mlp_text
        return hidden_states + self.drop_path(mlp(self.layernorm_after(hidden_states))), weights


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


class IVTPreTrainedModel(TBPSPreTrainedModel):
    config_class = IVTConfig
    config: IVTConfig
    base_model_prefix = "ivt"
    _no_split_modules = ["IVTImageEmbeddings", "IVTTextEmbeddings", "IVTLayer"]

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            if module is getattr(self, "layernorm", None):
                # scale of the output embeddings = CMPM logit scale at the start (see IVTConfig.final_layer_norm_init)
                init.constant_(module.weight, self.config.final_layer_norm_init)
            else:
                init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d):  # the opt-in embedding BatchNorm: same initial scale as above
            init.constant_(module.weight, self.config.final_layer_norm_init)
            init.zeros_(module.bias)
        elif isinstance(module, IVTImageEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.trunc_normal_(module.type_embedding, mean=0.0, std=std)


class IVTModel(IVTPreTrainedModel):
    r"""IVT dual encoder: `get_image_features` / `get_text_features` give `[N, hidden_size]` class tokens;
    `similarity` is their cosine (`[T, I]`, range [-1, 1]).

    Example:

    ```python
    >>> model = IVTModel(IVTConfig.from_preset("tiny"))
    >>> out = model(input_ids, attention_mask, pixel_values, person_ids=labels)   # training: BMM on
    >>> out.loss, out.loss_cmpm_i2t, out.loss_cmpm_t2i
    ```
    """

    # Module names PEFT LoRA targets (the shared attention projections).
    lora_target_modules = ["q_proj", "k_proj", "v_proj", "out_proj"]

    def __init__(self, config: IVTConfig):
        super().__init__(config)
        self.image_embeddings = IVTImageEmbeddings(config)
        self.text_embeddings = IVTTextEmbeddings(config)
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList(IVTLayer(config, rate) for rate in rates)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.embedding_batch_norm:  # opt-in, not in the paper: see IVTConfig.embedding_batch_norm
            self.embedding_norm = nn.ModuleDict(
                {m: nn.BatchNorm1d(config.hidden_size) for m in ("image", "text")}
            )
        self.post_init()

    # -- encoders ------------------------------------------------------------------------------------------------

    def _encode(
        self, hidden_states: torch.Tensor, modality: str, key_mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Token embeddings `[B, N, hidden]` → (class-token embeddings `[B, hidden]`, per-layer attention weights
        `[B, heads, N, N]` when `output_attentions`)."""
        attentions = []
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, modality, key_mask, output_attentions=output_attentions)
            attentions.append(weights)
        embeds = self.layernorm(hidden_states[:, 0])
        if self.config.embedding_batch_norm:
            embeds = self.embedding_norm[modality](embeds)
        return embeds, (tuple(attentions) if output_attentions else None)

    def _image_forward(self, pixel_values: torch.Tensor, bmm: bool):
        masked = keep_index = None
        if bmm:
            keep_index, masked = random_patch_mask(
                pixel_values.shape[0],
                self.config.num_patches,
                self.config.mask_ratio,
                self.config.mask_ratio_sampling,
                device=pixel_values.device,
            )
        embeds = self._encode(self.image_embeddings(pixel_values, keep_index), "image", None)[0]
        return embeds, masked

    def _text_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, bmm: bool):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
            )
        # Drop the all-padding tail columns (processors pad to max_text_length): same output, much less compute.
        full_length = input_ids.shape[1]
        length = max(int(attention_mask.sum(dim=1).max()), 1) if attention_mask.numel() else full_length
        if length < full_length:
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        key_mask = attention_mask.bool()
        masked = None
        if bmm:  # hidden tokens are removed as attention keys: for the class token this equals dropping them
            masked = random_text_mask(attention_mask, self.config.mask_ratio, self.config.mask_ratio_sampling)
            key_mask = key_mask & ~masked
        key_mask = key_mask.clone()
        key_mask[:, 0] = True  # the class token always attends somewhere (no all-masked rows)
        embeds = self._encode(self.text_embeddings(input_ids), "text", key_mask)[0]
        if masked is not None and length < full_length:
            masked = F.pad(masked, (0, full_length - length), value=False)
        return embeds, masked

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`input_ids [T, L]`, `attention_mask [T, L]` → text embeddings `[T, hidden_size]` (no masking)."""
        return self._text_forward(input_ids, attention_mask, bmm=False)[0]

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`pixel_values [I, 3, H, W]` → image embeddings `[I, hidden_size]` (no masking)."""
        return self._image_forward(pixel_values, bmm=False)[0]

    def get_image_attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`pixel_values [I, 3, H, W]` → `[I, rows, cols]`: the class token's attention to the patches in the last
        layer (mean over heads, renormalized over the patches), i.e. what the image embedding is read from. The
        weights come from the model's own forward (`output_attentions`)."""
        attentions = self._encode(self.image_embeddings(pixel_values), "image", None, output_attentions=True)[1]
        return patch_attention_map(attentions[-1][:, :, 0, 1:].float().mean(dim=1), self.config.grid_size)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        person_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> IVTOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `[B, L]`), attention_mask (`[B, L]`): captions (row b pairs
                with image b).
            pixel_values (`torch.FloatTensor` of shape `[B, 3, H, W]`): person crops.
            person_ids (`torch.LongTensor` of shape `[B]`, *optional*): contiguous identity labels; needed for the
                loss.
            return_loss (`bool`): compute CMPM when `person_ids` are given.

        BMM masks patches and words only in training mode (`model.train()`) and when `config.use_bmm`.
        """
        bmm = self.training and self.config.use_bmm and self.config.mask_ratio > 0
        text_embeds = text_mask = image_embeds = image_mask = None
        if input_ids is not None:
            text_embeds, text_mask = self._text_forward(input_ids, attention_mask, bmm)
        if pixel_values is not None:
            image_embeds, image_mask = self._image_forward(pixel_values, bmm)

        loss = loss_i2t = loss_t2i = None
        if return_loss and person_ids is not None:
            if text_embeds is None or image_embeds is None:
                raise ValueError("IVT's loss needs both input_ids and pixel_values")
            loss_i2t, loss_t2i = cmpm_loss(
                image_embeds, text_embeds, person_ids.to(image_embeds.device), epsilon=self.config.cmpm_epsilon
            )
            loss = loss_i2t + loss_t2i
        return IVTOutput(
            loss=loss,
            loss_cmpm_i2t=loss_i2t,
            loss_cmpm_t2i=loss_t2i,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            logits_per_text=None if text_embeds is None or image_embeds is None else self.similarity(text_embeds, image_embeds),
            text_bmm_mask=text_mask,
            image_bmm_mask=image_mask,
        )

    def _no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        """Without `config.decay_norm_and_bias` (public code: decay everything), biases, LayerNorms and the
        cls/position/type embeddings get no weight decay."""
        return not self.config.decay_norm_and_bias and (
            param.dim() < 2 or name.endswith(("cls_token", "position_embeddings", "type_embedding"))
        )

    # -- initialization from pretrained backbones ----------------------------------------------------------------

    backbone_preset = "base"

    @classmethod
    def _from_backbone_checkpoints(cls, config: IVTConfig, checkpoints: dict) -> "IVTModel":
        """IVT from a pretrained ViT (`ViTModel`, role `vit`) and BERT (`BertModel`, role `bert`), as the paper does
        (§4.2: BERT initializes the "txt" modules, the ImageNet ViT everything else); see `from_backbones`.

        From ViT: patch embedding, class token, position embeddings (bilinearly resized to the config's grid, e.g.
        14x14 → 24x8), the shared LayerNorms and attention, the image MLPs and the final LayerNorm.
        From BERT: word / position (first `max_text_length`) / token-type embeddings with their LayerNorm and the
        text MLPs (`intermediate.dense` → `fc1`, `output.dense` → `fc2`). The image type embedding starts at zero.
        The block sizes, vocabulary and `tokenizer_name` (the `bert` name) come from the checkpoints.
        """
        from transformers import BertModel, ViTModel

        missing = [role for role in ("vit", "bert") if checkpoints.get(role) is None]
        if missing:
            raise ValueError(
                f"IVT.from_backbones needs both roles vit and bert; missing {', '.join(missing)} (pass it, or set "
                "config.backbone_checkpoints)"
            )
        vit, bert = checkpoints["vit"], checkpoints["bert"]
        names = {role: str(v) for role, v in checkpoints.items() if not isinstance(v, nn.Module)}
        if not isinstance(vit, nn.Module):
            vit = ViTModel.from_pretrained(vit, add_pooling_layer=False)
        if not isinstance(bert, nn.Module):
            bert = BertModel.from_pretrained(bert, add_pooling_layer=False)
        vit_cfg, bert_cfg = vit.config, bert.config
        config.hidden_size = vit_cfg.hidden_size
        config.num_hidden_layers = vit_cfg.num_hidden_layers
        config.num_attention_heads = vit_cfg.num_attention_heads
        config.intermediate_size = vit_cfg.intermediate_size
        config.hidden_act = vit_cfg.hidden_act
        config.qkv_bias = vit_cfg.qkv_bias
        config.layer_norm_eps = vit_cfg.layer_norm_eps
        config.text_layer_norm_eps = bert_cfg.layer_norm_eps
        config.vocab_size = bert_cfg.vocab_size
        config.type_vocab_size = bert_cfg.type_vocab_size
        patch = vit_cfg.patch_size if isinstance(vit_cfg.patch_size, int) else vit_cfg.patch_size[0]
        if config.patch_stride == config.patch_size:
            config.patch_stride = patch
        config.patch_size = patch
        if "bert" in names:
            config.tokenizer_name = names["bert"]
        config.backbone_checkpoints = names or None
        config.check()
        _check_backbones(config, vit_cfg, bert_cfg)

        model = cls(config)
        vit_state = vit.state_dict()
        bert_state = bert.state_dict()
        ours = dict(model.named_parameters())

        def copy(target: str, value: torch.Tensor) -> None:
            if ours[target].shape != value.shape:
                raise ValueError(f"from_backbones: {target} expects {tuple(ours[target].shape)}, got {tuple(value.shape)}")
            ours[target].data.copy_(value)

        # image side (ViT)
        copy("image_embeddings.patch_embedding.weight", _pick(vit_state, _VIT_PATCH_W))
        copy("image_embeddings.patch_embedding.bias", _pick(vit_state, _VIT_PATCH_B))
        copy("image_embeddings.cls_token", _pick(vit_state, ["embeddings.cls_token"]))
        copy(
            "image_embeddings.position_embeddings",
            resize_position_table(_pick(vit_state, ["embeddings.position_embeddings"]), config.grid_size),
        )
        ours["image_embeddings.type_embedding"].data.zero_()
        for i in range(config.num_hidden_layers):
            for ours_name, candidates in _vit_layer_names(i).items():
                for suffix in ("weight", "bias"):
                    if f"layers.{i}.{ours_name}.{suffix}" in ours:
                        copy(f"layers.{i}.{ours_name}.{suffix}", _pick(vit_state, [f"{c}.{suffix}" for c in candidates]))
        copy("layernorm.weight", _pick(vit_state, ["layernorm.weight"]))
        copy("layernorm.bias", _pick(vit_state, ["layernorm.bias"]))

        # text side (BERT)
        copy("text_embeddings.word_embeddings.weight", bert_state["embeddings.word_embeddings.weight"])
        copy(
            "text_embeddings.position_embeddings.weight",
            bert_state["embeddings.position_embeddings.weight"][: config.max_text_length],
        )
        copy("text_embeddings.token_type_embeddings.weight", bert_state["embeddings.token_type_embeddings.weight"])
        copy("text_embeddings.layer_norm.weight", bert_state["embeddings.LayerNorm.weight"])
        copy("text_embeddings.layer_norm.bias", bert_state["embeddings.LayerNorm.bias"])
        for i in range(config.num_hidden_layers):
            for suffix in ("weight", "bias"):
                copy(f"layers.{i}.mlp_text.fc1.{suffix}", bert_state[f"encoder.layer.{i}.intermediate.dense.{suffix}"])
                copy(f"layers.{i}.mlp_text.fc2.{suffix}", bert_state[f"encoder.layer.{i}.output.dense.{suffix}"])
        return model


# ViT parameter names: transformers >= 5 first, then the 4.x layout (``encoder.layer.N.attention.attention.query``).
_VIT_PATCH_W = ["embeddings.patch_embeddings.projection.weight"]
_VIT_PATCH_B = ["embeddings.patch_embeddings.projection.bias"]


def _vit_layer_names(i: int) -> dict[str, list[str]]:
    new, old = f"layers.{i}", f"encoder.layer.{i}"
    return {
        "layernorm_before": [f"{new}.layernorm_before", f"{old}.layernorm_before"],
        "layernorm_after": [f"{new}.layernorm_after", f"{old}.layernorm_after"],
        "attention.q_proj": [f"{new}.attention.q_proj", f"{old}.attention.attention.query"],
        "attention.k_proj": [f"{new}.attention.k_proj", f"{old}.attention.attention.key"],
        "attention.v_proj": [f"{new}.attention.v_proj", f"{old}.attention.attention.value"],
        "attention.out_proj": [f"{new}.attention.o_proj", f"{old}.attention.output.dense"],
        "mlp_image.fc1": [f"{new}.mlp.fc1", f"{old}.intermediate.dense"],
        "mlp_image.fc2": [f"{new}.mlp.fc2", f"{old}.output.dense"],
    }


def _pick(state: dict[str, torch.Tensor], candidates: list[str]) -> torch.Tensor:
    for name in candidates:
        if name in state:
            return state[name]
    raise KeyError(f"from_backbones: the ViT checkpoint has none of {candidates}")


def _check_backbones(config: IVTConfig, vit_cfg, bert_cfg) -> None:
    vit_patch = vit_cfg.patch_size if isinstance(vit_cfg.patch_size, int) else vit_cfg.patch_size[0]
    problems = []
    for name, ours, vit_value, bert_value in [
        ("hidden_size", config.hidden_size, vit_cfg.hidden_size, bert_cfg.hidden_size),
        ("num_hidden_layers", config.num_hidden_layers, vit_cfg.num_hidden_layers, bert_cfg.num_hidden_layers),
        ("num_attention_heads", config.num_attention_heads, vit_cfg.num_attention_heads, None),
        ("intermediate_size", config.intermediate_size, vit_cfg.intermediate_size, bert_cfg.intermediate_size),
        ("patch_size", config.patch_size, vit_patch, None),
        ("vocab_size", config.vocab_size, None, bert_cfg.vocab_size),
    ]:
        if vit_value is not None and vit_value != ours:
            problems.append(f"{name}: IVT {ours} vs ViT {vit_value}")
        if bert_value is not None and bert_value != ours:
            problems.append(f"{name}: IVT {ours} vs BERT {bert_value}")
    if bert_cfg.max_position_embeddings < config.max_text_length:
        problems.append(
            f"max_text_length {config.max_text_length} exceeds BERT's {bert_cfg.max_position_embeddings} positions"
        )
    if problems:
        raise ValueError("from_backbones: incompatible backbones: " + "; ".join(problems))
