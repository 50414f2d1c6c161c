"""PCC: part-level cross-modal correspondence for text-based person search (Park et al., ECCV 2024).

Image / text backbone → linear projection to ``d`` → global max pooling (g) and a one-MHSA encoder with residual
per modality → a multi-head cross-attention decoder *shared by both modalities* with D learnable tokens (coarse
embeddings C). Image fine embeddings: the decoder's mean cross-attention map re-weights the encoded features
(M + A ⊗ M), which are cut into P horizontal stripes and max-pooled. Text fine embeddings: P extra text tokens
through the same decoder. Losses (Eq. 13): identity classification with classifiers shared by the modalities on
g, C and F; hardest-negative ranking on g and C; commonality-based margin ranking (CMR) on F.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, CLIPTextModel, CLIPVisionModel, ResNetModel, ViTModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ...losses.identity import SharedIdentityClassifier, identity_classification_loss
from ...losses.ranking import commonality_margin_ranking_loss, hardest_negative_ranking_loss
from ...modeling_utils import TBPSAttention, TBPSPreTrainedModel, resize_position_table
from .configuration_pcc import IMAGE_BACKBONES, TEXT_BACKBONES, PCCConfig


@dataclass
class PCCFeatures:
    r"""
    Embeddings of one modality (un-normalized; `similarity` / `index_features` normalize each part).

    global_embeds (`torch.FloatTensor` of shape `[N, d]`): g, global max pooling of the projected backbone features.
    coarse_embeds (`torch.FloatTensor` of shape `[N, D, d]`): C, the shared-token decoder outputs (`D = 0` when
        `use_coarse` is off).
    fine_embeds (`torch.FloatTensor` of shape `[N, P, d]`): F, stripe (image) or text-token (text) embeddings
        (`P = 0` when `use_fine` is off).
    """

    global_embeds: torch.Tensor
    coarse_embeds: torch.Tensor
    fine_embeds: torch.Tensor

    def __len__(self) -> int:
        return self.global_embeds.shape[0]


@dataclass
class PCCOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`): the total of Eq. 13 (when `person_ids` are given).
    loss_id_global / loss_id_coarse / loss_id_fine (`torch.FloatTensor` of shape `()`): identity classification
        loss (Eq. 7-8) on g / C / F, image + text (each set averaged over its slots).
    loss_rank_global (`torch.FloatTensor`): hardest-negative ranking loss (Eq. 9) on g.
    loss_rank_coarse (`torch.FloatTensor`): ranking loss on C (None with `cmr_on_coarse`).
    loss_cmr_coarse (`torch.FloatTensor`): CMR on C (only with `cmr_on_coarse`, Table 3).
    loss_cmr (`torch.FloatTensor`): CMR (Eq. 12) on F (with `use_cmr`).
    loss_rank_fine (`torch.FloatTensor`): plain ranking loss on F (when `use_cmr` is off, Table 2 row 3).
    logits_per_text (`torch.FloatTensor` of shape `[T, I]`): the inference similarity (Eq. 14) of the batch.
    text_embeds / image_embeds ([`PCCFeatures`]): the embeddings (g, C, F of each modality).
    image_attention_map (`torch.FloatTensor` of shape `[I, h, w]`): A_avg, the foreground map of Eq. 5 (None when
        neither coarse nor fine embeddings are used).
    """

    loss: torch.FloatTensor | None = None
    loss_id_global: torch.FloatTensor | None = None
    loss_id_coarse: torch.FloatTensor | None = None
    loss_id_fine: torch.FloatTensor | None = None
    loss_rank_global: torch.FloatTensor | None = None
    loss_rank_coarse: torch.FloatTensor | None = None
    loss_cmr_coarse: torch.FloatTensor | None = None
    loss_cmr: torch.FloatTensor | None = None
    loss_rank_fine: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: PCCFeatures | None = None
    image_embeds: PCCFeatures | None = None
    image_attention_map: torch.FloatTensor | None = None


class PCCEncoder(GradientCheckpointingLayer):
    """Modality-specific encoder (Eq. 3): learnable position embeddings, then ``M + MHSA(M)``."""

    def __init__(self, config: PCCConfig, num_positions: int, grid: tuple[int, int] | None = None):
        super().__init__()
        self.grid = grid  # image: (h, w) of the position embeddings, resized when the input grid differs
        self.position_embedding = nn.Parameter(torch.zeros(1, num_positions, config.hidden_size))
        self.attention = _attention(config)

    def forward(
        self, features: torch.Tensor, key_padding_mask: torch.Tensor | None = None, grid: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """features `[B, r, d]` (image: flattened `grid` = (h, w), row-major) → self-attended features `[B, r, d]`."""
        pos = self.position_embedding
        if grid is not None and pos.shape[1] != features.shape[1]:
            pos = resize_position_table(pos, grid, old_grid=self.grid, num_prefix_tokens=0)
        pos = pos[:, : features.shape[1]]
        hidden = features + pos.to(features.dtype)
        key_mask = None if key_padding_mask is None else ~key_padding_mask
        return hidden + self.attention(hidden, key_mask=key_mask)[0]


class PCCDecoder(GradientCheckpointingLayer):
    """Decoder (Eq. 4, 6): cross-attention from learnable tokens to encoded features, no residual (C = MHA(D, M)).

    Holds the D coarse tokens and, for the decoder the text passes through, the P text (fine) tokens.
    """

    def __init__(self, config: PCCConfig, with_part_tokens: bool):
        super().__init__()
        self.tokens = nn.Parameter(torch.zeros(config.num_coarse_tokens, config.hidden_size))
        self.part_tokens = (
            nn.Parameter(torch.zeros(config.num_fine_parts, config.hidden_size)) if with_part_tokens else None
        )
        self.attention = _attention(config)

    def forward(
        self,
        memory: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        part: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """memory `[B, r, d]` → (embeddings `[B, D or P, d]`, weights `[B, heads, D or P, r]` when
        `output_attentions`)."""
        tokens = self.part_tokens if part else self.tokens
        query = tokens.to(memory.dtype).unsqueeze(0).expand(memory.shape[0], -1, -1)
        key_mask = None if key_padding_mask is None else ~key_padding_mask
        return self.attention(query, memory, key_mask=key_mask, output_attentions=output_attentions)


def _attention(config: PCCConfig) -> TBPSAttention:
    # Logits and softmax in float32 even under fp16 autocast: q·k of un-normalized backbone features (max-pooled
    # ResNet maps reach hundreds) overflows float16's 65504 and the whole similarity turns NaN.
    return TBPSAttention(
        config, config.hidden_size, config.num_attention_heads, dropout=config.attention_dropout, float32_logits=True
    )


def _feature_grid(config: PCCConfig) -> tuple[int, int]:
    """Spatial grid (h, w) of the image backbone's last feature map for `config.image_size`."""
    height, width = config.image_size
    image = config.vision_config
    if image.model_type == "resnet":
        backbone = config.backbone_config("image")
        # stem: 7x7 conv stride 2 + 3x3 max-pool stride 2; then every stage but the first halves (ceil) the map
        strides = 2 + len(backbone.depths) - (0 if backbone.downsample_in_first_stage else 1)
        for _ in range(strides):
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        return height, width
    patch = int(image.patch_size)
    return height // patch, width // patch


class PCCPreTrainedModel(TBPSPreTrainedModel):
    config_class = PCCConfig
    base_model_prefix = "pcc"
    main_input_name = "pixel_values"

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, PCCEncoder):
            init.normal_(module.position_embedding, std=std)
        elif isinstance(module, PCCDecoder):
            # query tokens start diverse (as DETR's N(0, 1) object queries) so they attend to different content
            init.normal_(module.tokens, std=1.0)
            if module.part_tokens is not None:
                init.normal_(module.part_tokens, std=1.0)
        elif isinstance(module, SharedIdentityClassifier):
            init.normal_(module.weight, std=0.001)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # Xavier (as torch's nn.MultiheadAttention): keeps feature scale through the attention stacks, so the
            # decoder's tokens shape its attention from the start and the embeddings are not born near-zero
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class PCCModel(PCCPreTrainedModel):
    r"""
    PCC dual encoder. Inputs: `input_ids` / `attention_mask` `[T, L]`, `pixel_values` `[I, 3, H, W]`.

    Example:
    ```python
    >>> model = PCCModel(PCCConfig.from_preset("tiny", num_identities=100))
    >>> out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, person_ids=labels)
    >>> out.loss, out.loss_cmr
    >>> sim = model.similarity(model.get_text_features(ids, mask), model.get_image_features(pixels))  # [T, I]
    ```
    """

    # attention projections of BERT / ViT ("query", "key", "value"), CLIP and PCC's own encoder / decoder
    # ("q_proj", "k_proj", "v_proj"), for PEFT LoRA.
    lora_target_modules = ["query", "key", "value", "q_proj", "k_proj", "v_proj"]

    def __init__(self, config: PCCConfig):
        super().__init__(config)
        self.image_backbone = _build_backbone(self._tower_config("image"), config.vision_config.model_type)
        self.text_backbone = _build_backbone(self._tower_config("text"), config.text_config.model_type)
        text_positions = getattr(self.text_backbone.config, "max_position_embeddings", None)
        if text_positions is not None and config.max_text_length > text_positions:
            raise ValueError(
                f"max_text_length ({config.max_text_length}) exceeds the text backbone's max_position_embeddings "
                f"({text_positions})"
            )
        d = config.hidden_size
        image_width = _backbone_width(self.image_backbone.config, config.vision_config.model_type)
        self.image_projection = nn.Linear(image_width, d)
        self.text_projection = nn.Linear(self.text_backbone.config.hidden_size, d)

        self.grid = _feature_grid(config)
        self.uses_decoder = bool(config.use_coarse or config.use_fine)
        if self.uses_decoder:
            if config.use_fine and self.grid[0] < config.num_fine_parts:
                raise ValueError(
                    f"the image feature map has {self.grid[0]} rows at image_size {config.image_size}; it cannot be "
                    f"cut into num_fine_parts={config.num_fine_parts} stripes"
                )
            self.image_encoder = PCCEncoder(config, self.grid[0] * self.grid[1], grid=self.grid)
            self.text_encoder = PCCEncoder(config, config.max_text_length)
            if config.share_decoder:
                self.decoder = PCCDecoder(config, with_part_tokens=config.use_fine)
            else:
                self.image_decoder = PCCDecoder(config, with_part_tokens=False)
                self.text_decoder = PCCDecoder(config, with_part_tokens=config.use_fine)
        # one identity classifier per embedding slot (g, c_1..c_D, f_1..f_P), each shared by image and text
        self.num_slots = 1 + config.num_coarse_tokens * bool(config.use_coarse) + config.num_fine_parts * bool(
            config.use_fine
        )
        self.classifier = (
            SharedIdentityClassifier(d, config.num_identities, self.num_slots) if config.num_identities > 0 else None
        )
        if config.embedding_batch_norm:  # opt-in (not in the paper), see PCCConfig.embedding_batch_norm
            self.image_embedding_norm = nn.BatchNorm1d(self.num_slots * d)
            self.text_embedding_norm = nn.BatchNorm1d(self.num_slots * d)
        self.post_init()
        if config.freeze_text_backbone:
            self.text_backbone.requires_grad_(False)

    # ------------------------------------------------------------------ helpers
    def _tower_config(self, which: str):
        """The backbone's transformers config, with this model's attention implementation (eager | sdpa) for the
        towers that have attention (ResNet has none)."""
        tower = self.config.backbone_config(which)
        tower._attn_implementation = "eager" if tower.model_type == "resnet" else self.config._attn_implementation
        return tower

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_text_backbone:
            self.text_backbone.eval()  # a frozen backbone is used as a fixed feature extractor (no dropout)
        return self

    def _decoder_for(self, modality: str) -> PCCDecoder:
        if self.config.share_decoder:
            return self.decoder
        return self.image_decoder if modality == "image" else self.text_decoder

    def _empty(self, reference: torch.Tensor) -> torch.Tensor:
        return reference.new_zeros(reference.shape[0], 0, self.config.hidden_size)

    def _normalize_slots(self, features: PCCFeatures, modality: str) -> PCCFeatures:
        """With `embedding_batch_norm`: batch-normalize every embedding (each slot of g, C, F has its own statistics)."""
        if not self.config.embedding_batch_norm:
            return features
        norm = self.image_embedding_norm if modality == "image" else self.text_embedding_norm
        slots = self._slots(features)
        n, k, d = slots.shape
        slots = norm(slots.reshape(n, k * d)).reshape(n, k, d)
        n_coarse = features.coarse_embeds.shape[1]
        return PCCFeatures(slots[:, 0], slots[:, 1 : 1 + n_coarse], slots[:, 1 + n_coarse :])

    def _image_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Backbone features `[B, h*w, C]` (row-major) and the grid (h, w)."""
        kind = self.config.vision_config.model_type
        pixel_values = pixel_values.to(self.image_projection.weight.dtype)
        if kind == "resnet":
            fmap = self.image_backbone(pixel_values).last_hidden_state  # [B, C, h, w]
            return fmap.flatten(2).transpose(1, 2), (fmap.shape[2], fmap.shape[3])
        backbone_config = self.image_backbone.config
        size = backbone_config.image_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        interpolate = tuple(pixel_values.shape[-2:]) != size
        patch = backbone_config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        if kind == "vit":
            hidden = self.image_backbone(pixel_values, interpolate_pos_encoding=interpolate).last_hidden_state
        else:  # CLIP: the tower's last hidden states with its final LayerNorm (as CLIP applies to the pooled token)
            hidden = self.image_backbone(pixel_values, interpolate_pos_encoding=interpolate).last_hidden_state
            tower = getattr(self.image_backbone, "vision_model", self.image_backbone)  # older layouts nest it
            hidden = tower.post_layernorm(hidden)
        return hidden[:, 1:], grid  # drop the class token: V is the patch grid

    def _text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        trainable = any(p.requires_grad for p in self.text_backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            return self.text_backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def _encode_image(self, pixel_values: torch.Tensor) -> tuple[PCCFeatures, torch.Tensor | None]:
        tokens, grid = self._image_tokens(pixel_values)
        v = self.image_projection(tokens)  # [B, r, d]
        g = v.amax(dim=1)
        if not self.uses_decoder:
            return self._normalize_slots(PCCFeatures(g, self._empty(v), self._empty(v)), "image"), None
        m = self.image_encoder(v, grid=grid)
        coarse, weights = self._decoder_for("image")(m, output_attentions=True)  # Eq. 5 reads the weights
        a_avg = weights.mean(dim=(1, 2))  # [B, r]: mean over heads and tokens (Eq. 5's A_avg)
        fine = self._empty(v)
        if self.config.use_fine:
            foreground = m + a_avg.unsqueeze(-1) * m  # Eq. 5
            fmap = foreground.transpose(1, 2).reshape(v.shape[0], -1, grid[0], grid[1])
            fine = F.adaptive_max_pool2d(fmap, (self.config.num_fine_parts, 1)).flatten(2).transpose(1, 2)
        if not self.config.use_coarse:
            coarse = self._empty(v)
        return self._normalize_slots(PCCFeatures(g, coarse, fine), "image"), a_avg.reshape(-1, grid[0], grid[1])

    def _encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> PCCFeatures:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if input_ids.shape[1] > self.config.max_text_length:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens; the model takes at most max_text_length="
                f"{self.config.max_text_length}"
            )
        t = self.text_projection(self._text_tokens(input_ids, attention_mask).to(self.text_projection.weight.dtype))
        padding = attention_mask == 0
        g = t.masked_fill(padding.unsqueeze(-1), float("-inf")).amax(dim=1)  # GMP over the caption's tokens
        if not self.uses_decoder:
            return self._normalize_slots(PCCFeatures(g, self._empty(t), self._empty(t)), "text")
        m = self.text_encoder(t, key_padding_mask=padding)
        decoder = self._decoder_for("text")
        coarse = decoder(m, padding)[0] if self.config.use_coarse else self._empty(t)
        fine = decoder(m, padding, part=True)[0] if self.config.use_fine else self._empty(t)  # Eq. 6
        return self._normalize_slots(PCCFeatures(g, coarse, fine), "text")

    # ------------------------------------------------------------------ retrieval interface
    def get_image_features(self, pixel_values: torch.Tensor) -> PCCFeatures:
        """pixel_values `[I, 3, H, W]` → `PCCFeatures` (g `[I, d]`, C `[I, D, d]`, F `[I, P, d]`)."""
        return self._encode_image(pixel_values)[0]

    def get_image_attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """`pixel_values [I, 3, H, W]` → the foreground map A_avg of Eq. 5 `[I, h, w]` on the backbone's feature grid
        (the image decoder's cross-attention, mean over heads and tokens); None without the decoder."""
        return self._encode_image(pixel_values)[1]

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> PCCFeatures:
        """input_ids / attention_mask `[T, L]` → `PCCFeatures` (g `[T, d]`, C `[T, D, d]`, F `[T, P, d]`)."""
        return self._encode_text(input_ids, attention_mask)

    def index_features(self, features: PCCFeatures) -> torch.Tensor:
        """`[N, (1 + D + P) * d]`: every part L2-normalized and concatenated, so that
        ``index(text) @ index(image).T`` is the similarity of Eq. 14."""
        if isinstance(features, torch.Tensor):
            raise TypeError("PCC features are PCCFeatures (global, coarse, fine), not a single tensor")
        parts = torch.cat(
            [features.global_embeds.unsqueeze(1), features.coarse_embeds, features.fine_embeds], dim=1
        ).float()
        return F.normalize(parts, dim=-1).flatten(1)

    def similarity(self, text_features: PCCFeatures, image_features: PCCFeatures) -> torch.Tensor:
        """Eq. 14: ``s(g) + Σ_i s(c_i) + Σ_j s(f_j)`` (cosines) → `[T, I]` in ``config.similarity_range``."""
        return self.index_features(text_features) @ self.index_features(image_features).t()

    # ------------------------------------------------------------------ training
    def _slots(self, features: PCCFeatures) -> torch.Tensor:
        return torch.cat([features.global_embeds.unsqueeze(1), features.coarse_embeds, features.fine_embeds], dim=1)

    def compute_losses(
        self, text_features: PCCFeatures, image_features: PCCFeatures, person_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The terms of Eq. 13 for a batch of matching pairs (`person_ids` `[N]`, contiguous labels)."""
        config = self.config
        if self.classifier is None:
            raise ValueError(
                "config.num_identities is 0: set it to the number of training identities before building the model "
                "(the identity classification loss needs it)"
            )
        n = len(image_features)
        if len(text_features) != n or person_ids.shape != (n,):
            raise ValueError(
                f"a training batch needs as many captions as images and one person id per pair; got {len(text_features)} "
                f"captions, {n} images, person_ids of shape {tuple(person_ids.shape)}"
            )
        logits_v = self.classifier(self._slots(image_features))  # [N, slots, c]
        logits_t = self.classifier(self._slots(text_features))
        n_coarse = image_features.coarse_embeds.shape[1]
        coarse = slice(1, 1 + n_coarse)
        fine = slice(1 + n_coarse, None)
        margin, reduction = float(config.margin), config.ranking_reduction

        def id_loss(part: slice) -> torch.Tensor:
            return identity_classification_loss(logits_v[:, part], person_ids) + identity_classification_loss(
                logits_t[:, part], person_ids
            )

        losses = {
            "loss_id_global": id_loss(slice(0, 1)),
            "loss_rank_global": hardest_negative_ranking_loss(
                image_features.global_embeds, text_features.global_embeds, person_ids, margin, reduction=reduction
            ),
        }
        if config.use_coarse:
            losses["loss_id_coarse"] = id_loss(coarse)
            args = (image_features.coarse_embeds, text_features.coarse_embeds)
            if config.cmr_on_coarse:
                losses["loss_cmr_coarse"] = commonality_margin_ranking_loss(
                    *args, logits_v[:, coarse], logits_t[:, coarse], person_ids, margin, reduction
                )
            else:
                losses["loss_rank_coarse"] = hardest_negative_ranking_loss(*args, person_ids, margin, reduction=reduction)
        if config.use_fine:
            losses["loss_id_fine"] = id_loss(fine)
            args = (image_features.fine_embeds, text_features.fine_embeds)
            if config.use_cmr:
                losses["loss_cmr"] = commonality_margin_ranking_loss(
                    *args, logits_v[:, fine], logits_t[:, fine], person_ids, margin, reduction
                )
            else:
                losses["loss_rank_fine"] = hardest_negative_ranking_loss(*args, person_ids, margin, reduction=reduction)
        losses["loss"] = sum(losses.values())  # Eq. 13: every term with weight 1
        return losses

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        person_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> PCCOutput:
        r"""
        Args:
            input_ids / attention_mask (`torch.LongTensor` of shape `[N, L]`): captions.
            pixel_values (`torch.FloatTensor` of shape `[N, 3, H, W]`): person crops; pair *k* is caption *k*, image *k*.
            person_ids (`torch.LongTensor` of shape `[N]`): contiguous identity labels `0..num_identities-1`.
            return_loss (`bool`): compute the losses of Eq. 13 (needs `person_ids`; without them no loss is returned).

        Returns: [`PCCOutput`].
        """
        text_features = image_features = attention_map = None
        if input_ids is not None:
            text_features = self._encode_text(input_ids, attention_mask)
        if pixel_values is not None:
            image_features, attention_map = self._encode_image(pixel_values)
        out = {}
        if text_features is not None and image_features is not None:
            out["logits_per_text"] = self.similarity(text_features, image_features)
            if return_loss and person_ids is not None:
                out.update(self.compute_losses(text_features, image_features, person_ids))
        elif return_loss and person_ids is not None:
            raise ValueError("the losses need both captions (input_ids) and images (pixel_values)")
        return PCCOutput(
            **out, text_embeds=text_features, image_embeds=image_features, image_attention_map=attention_map
        )

    # ------------------------------------------------------------------ pretrained backbones
    backbone_preset = "rn50-bert"

    @classmethod
    def _from_backbone_checkpoints(cls, config: PCCConfig, checkpoints: dict) -> "PCCModel":
        r"""
        PCC whose towers are loaded from pretrained checkpoints and whose new layers are freshly initialized (see
        `from_backbones`). Roles: `image` — a ResNet (`ResNetModel` / `ResNetForImageClassification`), ViT or CLIP
        checkpoint (a full CLIP checkpoint gives its vision tower); `text` — a BERT or CLIP checkpoint (CLIP: its
        text tower), which also becomes `config.tokenizer_name`. A role without a checkpoint keeps a random tower.
        The backbone configs and `vocab_size` come from the checkpoints.
        """
        image, text = checkpoints.get("image"), checkpoints.get("text")
        image_model = _load_backbone(image, "image") if image is not None else None
        text_model = _load_backbone(text, "text") if text is not None else None
        values = config.to_dict()
        values["training_defaults"] = config.training_defaults
        if image_model is not None:
            values["vision_config"] = {**image_model.config.to_diff_dict(), "model_type": image_model.config.model_type}
        if text_model is not None:
            values["text_config"] = {**text_model.config.to_diff_dict(), "model_type": text_model.config.model_type}
            values["vocab_size"] = text_model.config.vocab_size
            values["tokenizer_name"] = None if isinstance(text, nn.Module) else str(text)
        values["backbone_checkpoints"] = {
            r: str(v) for r, v in checkpoints.items() if v is not None and not isinstance(v, nn.Module)
        } or None
        for key in ("model_type", "transformers_version", "architectures"):
            values.pop(key, None)
        model = cls(PCCConfig(**values))
        if image_model is not None:
            model.image_backbone.load_state_dict(image_model.state_dict())
        if text_model is not None:
            model.text_backbone.load_state_dict(text_model.state_dict())
        return model


def _build_backbone(backbone_config, kind: str) -> nn.Module:
    if kind == "resnet":
        return ResNetModel(backbone_config)
    if kind == "vit":
        return ViTModel(backbone_config, add_pooling_layer=False)
    if kind == "clip_vision_model":
        return CLIPVisionModel(backbone_config)
    if kind == "bert":
        return BertModel(backbone_config, add_pooling_layer=False)
    if kind == "clip_text_model":
        return CLIPTextModel(backbone_config)
    raise ValueError(f"unsupported backbone type {kind!r}; valid: {IMAGE_BACKBONES + TEXT_BACKBONES}")


def _backbone_width(backbone_config, kind: str) -> int:
    return backbone_config.hidden_sizes[-1] if kind == "resnet" else backbone_config.hidden_size


def _load_backbone(name_or_path: str | os.PathLike, modality: str) -> nn.Module:
    """Load an image or text tower from a hub id or folder, choosing the class from its config's model type (an
    already loaded tower is returned as it is)."""
    from transformers import AutoConfig

    if isinstance(name_or_path, nn.Module):
        return name_or_path
    try:
        model_type = AutoConfig.from_pretrained(name_or_path).model_type
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read a transformers config from {modality} backbone {str(name_or_path)!r}: {error}")
    if modality == "image":
        classes = {"resnet": ResNetModel, "vit": ViTModel, "clip": CLIPVisionModel, "clip_vision_model": CLIPVisionModel}
    else:
        classes = {"bert": BertModel, "clip": CLIPTextModel, "clip_text_model": CLIPTextModel}
    if model_type not in classes:
        raise ValueError(
            f"{modality} backbone {str(name_or_path)!r} has model_type {model_type!r}; PCC supports {sorted(classes)}"
        )
    model_class = classes[model_type]
    kwargs = {"add_pooling_layer": False} if model_class in (ViTModel, BertModel) else {}
    return model_class.from_pretrained(name_or_path, **kwargs)


__all__ = ["PCCModel", "PCCPreTrainedModel", "PCCFeatures", "PCCOutput"]
