"""CFAM: Cross-modal Fine-grained Aligning and Matching (UFineBench, CVPR 2024, §4; ``papers/ufinebench-cfam.txt``).

CLIP image and text towers give token embeddings; a granularity decoder *shared by both modalities* turns K learnable
queries into K fine-grained embeddings per image and per text. Training: global SDM on the global embeddings, local
SDM on the mean per-query cosine, a Matcher (BCE) on B positive and 2B hard-negative pairs, and the cross-modal
identity classifying loss with an extra "unmatched" class (supplement §8). Inference: global embeddings only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings
from transformers.utils import ModelOutput

from ...losses.sdm import sdm_loss
from ...modeling_utils import TBPSAttention, TBPSPreTrainedModel, patch_attention_map, resize_position_table
from .configuration_cfam import CFAMConfig


@dataclass
class CFAMOutput(ModelOutput):
    r"""
    loss (`torch.Tensor`, scalar): the paper's total, L_gs + λ1 L_ls + λ2 L_m + λ3 L_cid (§4.4), over the enabled terms.
    loss_global_sdm (`torch.Tensor`): SDM (or InfoNCE, `global_loss_type`) on the global cosine similarities.
    loss_local_sdm (`torch.Tensor`): SDM on the local similarities (mean cosine over the K query outputs, §4.2).
    loss_match (`torch.Tensor`): Matcher BCE over B positives and up to 2B hard negatives (§4.3).
    loss_id (`torch.Tensor`): cross-modal identity classifying loss with the "unmatched" class (supplement §8).
    image_embeds (`[B, projection_dim]`), text_embeds (`[B, projection_dim]`): global embeddings (not normalized).
    image_granularity_embeds (`[B, K, decoder_hidden_size]`), text_granularity_embeds: the decoder outputs.
    logits_per_text (`[B, B]`): global cosine similarity, text rows × image columns (the layout of `similarity`).
    logits_per_image (`[B, B]`): its transpose, image rows × text columns (the layout SDM is written in).
    local_similarity (`[B, B]`): mean per-query cosine of the granularity embeddings, image rows × text columns.
    match_logits (`[M]`), match_labels (`[M]`): Matcher logits (sigmoid → match probability) and 1/0 targets; the
        first B are the positives. match_image_index / match_text_index (`[M]`): the batch rows of each Matcher pair.
    id_logits (`[M, num_identities + 1]`), id_labels (`[M]`): identity head logits and targets (negatives get
        `num_identities`).
    """

    loss: torch.Tensor | None = None
    loss_global_sdm: torch.Tensor | None = None
    loss_local_sdm: torch.Tensor | None = None
    loss_match: torch.Tensor | None = None
    loss_id: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_granularity_embeds: torch.Tensor | None = None
    text_granularity_embeds: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    local_similarity: torch.Tensor | None = None
    match_logits: torch.Tensor | None = None
    match_labels: torch.Tensor | None = None
    match_image_index: torch.Tensor | None = None
    match_text_index: torch.Tensor | None = None
    id_logits: torch.Tensor | None = None
    id_labels: torch.Tensor | None = None


class CFAMVisionEmbeddings(CLIPVisionEmbeddings):
    """CLIP's patch + position embeddings on a non-square (height, width) patch grid (person crops are 384x128)."""

    def __init__(self, config, image_size: tuple[int, int]):
        nn.Module.__init__(self)  # CLIPVisionEmbeddings.__init__ assumes a square image; set the fields here
        self.config = config
        self.embed_dim = config.hidden_size
        self.patch_size = config.patch_size
        self.image_size = tuple(image_size)
        self.grid_size = (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)
        self.class_embedding = nn.Parameter(torch.randn(self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=False
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_positions = self.num_patches + 1
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)
        self.position_ids = nn.Buffer(torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[-2:]) != self.image_size:
            raise ValueError(
                f"pixel_values must be [B, {self.config.num_channels}, {self.image_size[0]}, {self.image_size[1]}] "
                f"(config.image_size), got {tuple(pixel_values.shape)}"
            )
        batch_size = pixel_values.shape[0]
        patch_embeds = self.patch_embedding(pixel_values.to(dtype=self.patch_embedding.weight.dtype))
        patch_embeds = patch_embeds.flatten(2).transpose(1, 2)
        class_embeds = self.class_embedding.expand(batch_size, 1, -1)
        embeddings = torch.cat([class_embeds, patch_embeds], dim=1)
        return embeddings + self.position_embedding(self.position_ids)


class CFAMBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: self-attention, optional cross-attention to a memory, MLP. The attention
    projections are named as CLIP's, so one `lora_target_modules` list covers towers, decoder and Matcher."""

    def __init__(self, config: CFAMConfig, cross_attention: bool):
        super().__init__()
        hidden_size, num_heads = config.decoder_hidden_size, config.decoder_num_heads
        self.self_attn_norm = nn.LayerNorm(hidden_size)
        self.self_attn = TBPSAttention(config, hidden_size, num_heads)
        self.cross_attn_norm = nn.LayerNorm(hidden_size) if cross_attention else None
        self.cross_attn = TBPSAttention(config, hidden_size, num_heads) if cross_attention else None
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, config.decoder_intermediate_size)
        self.fc2 = nn.Linear(config.decoder_intermediate_size, hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states `[B, Lq, D]`, memory `[B, Lk, D]`, memory_mask `[B, Lk]` (1 = may be attended) →
        (`[B, Lq, D]`, cross-attention weights `[B, heads, Lq, Lk]` when `output_attentions`)."""
        hidden_states = hidden_states + self.self_attn(self.self_attn_norm(hidden_states))[0]
        weights = None
        if self.cross_attn is not None:
            attended, weights = self.cross_attn(
                self.cross_attn_norm(hidden_states), memory, key_mask=memory_mask, output_attentions=output_attentions
            )
            hidden_states = hidden_states + attended
        return hidden_states + self.fc2(F.gelu(self.fc1(self.mlp_norm(hidden_states)))), weights


class CFAMGranularityDecoder(nn.Module):
    """Transformer decoder: the K granularity queries attend to one modality's token embeddings (§4.2)."""

    def __init__(self, config: CFAMConfig):
        super().__init__()
        dim = config.decoder_hidden_size
        # Identity for B/16 (512 = 512); L/14's 768-d tokens are mapped to the 512-d decoder of §5.1.
        self.input_proj = nn.Identity() if config.projection_dim == dim else nn.Linear(config.projection_dim, dim)
        self.layers = nn.ModuleList(CFAMBlock(config, cross_attention=True) for _ in range(config.decoder_num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """queries `[K, D]`, tokens `[B, L, projection_dim]`, token_mask `[B, L]` → (`[B, K, D]`, per-layer
        cross-attention weights `[B, heads, K, L]` when `output_attentions`)."""
        memory = self.input_proj(tokens)
        hidden = queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        attentions = []
        for layer in self.layers:
            hidden, weights = layer(hidden, memory, token_mask, output_attentions=output_attentions)
            attentions.append(weights)
        return self.norm(hidden), (tuple(attentions) if output_attentions else None)


class CFAMMatcher(nn.Module):
    """Transformer blocks + MLP on the 2K concatenated granularity embeddings of a pair → one match logit (§4.3).

    Learnable position embeddings over the 2K slots tell the self-attention which modality and which query each
    token is (the paper does not say how; without them the blocks would see an unordered set).
    """

    def __init__(self, config: CFAMConfig):
        super().__init__()
        dim = config.decoder_hidden_size
        self.position_embeddings = nn.Parameter(torch.zeros(2 * config.num_granularity_queries, dim))
        self.layers = nn.ModuleList(CFAMBlock(config, cross_attention=False) for _ in range(config.matcher_num_layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, image_granularity: torch.Tensor, text_granularity: torch.Tensor) -> torch.Tensor:
        """`[M, K, D]` each → match logits `[M]` (sigmoid gives the match probability p(V̄, W̄))."""
        hidden = torch.cat([image_granularity, text_granularity], dim=1) + self.position_embeddings
        for layer in self.layers:
            hidden = layer(hidden)[0]
        return self.head(self.norm(hidden).mean(dim=1)).squeeze(-1)


def hardest_negatives(similarity: torch.Tensor, person_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    For each row (image) the column (text) of highest similarity among those of a *different* identity.

    Args:
        similarity (`[B, B]`): image rows × text columns.
        person_ids (`[B]`): identity of pair i (image i and text i).

    Returns:
        `(index [B], valid [B])`: the chosen column per row, and whether the row has any different-identity column
        (rows without one get index 0 and `valid=False`). Apply to `similarity.t()` for the hardest image per text.
    """
    different = person_ids[:, None] != person_ids[None, :]
    masked = similarity.detach().masked_fill(~different, float("-inf"))
    return masked.argmax(dim=1), different.any(dim=1)


def extend_text_positions(weight: torch.Tensor, length: int, keep: int = 20) -> torch.Tensor:
    """
    Stretch CLIP's text position table `[L0, d]` (77 rows) to `[length, d]` (168 for CFAM).

    The first `keep` rows, which short captions rely on most, are kept as they are and the rest is linearly
    interpolated to fill the new length (Long-CLIP's knowledge-preserving stretching; the paper does not say how it
    went from 77 to 168). A shorter target keeps the first `length` rows.
    """
    old = weight.shape[0]
    if length <= old:
        return weight[:length].clone()
    keep = min(keep, old - 1)
    rest = weight[keep:].t().unsqueeze(0)  # [1, d, L0 - keep]
    stretched = F.interpolate(rest.float(), size=length - keep, mode="linear", align_corners=True)
    return torch.cat([weight[:keep], stretched[0].t().to(weight.dtype)], dim=0)


class CFAMPreTrainedModel(TBPSPreTrainedModel):
    config_class = CFAMConfig
    config: CFAMConfig
    base_model_prefix = "cfam"
    _no_split_modules = ["CLIPEncoderLayer", "CFAMBlock"]

    @torch.no_grad()
    def _init_weights(self, module):
        # The CLIP towers are PreTrainedModels and initialize themselves (CLIP's scheme); this covers the new modules.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CFAMMatcher):
            init.normal_(module.position_embeddings, mean=0.0, std=std)
        elif isinstance(module, CFAMModel):
            init.normal_(module.granularity_queries, mean=0.0, std=std)


class CFAMModel(CFAMPreTrainedModel):
    r"""
    CFAM for text-based person search.

    Inference uses the global embeddings only (§4.4): `get_image_features` / `get_text_features` return `[N, d]`
    projected CLIP embeddings (image: the class token; text: the last non-padding token), and `similarity` is their
    cosine, range [-1, 1].

    Text pooling: CLIP pools at the end-of-text token, which `CLIPTextModel` finds by `argmax(input_ids)` or by
    `eos_token_id`; neither holds for a WordPiece tokenizer (`[SEP]` is id 3). Every tokenizer used here puts its
    end token last before the right padding (CLIP: `<|endoftext|>`, WordPiece: `[SEP]`), so the pooled position is
    `attention_mask.sum(1) - 1`.
    """

    # Attention projections of the CLIP towers, the decoder and the Matcher (PEFT LoRA target names).
    lora_target_modules = ["q_proj", "k_proj", "v_proj", "out_proj"]

    def __init__(self, config: CFAMConfig):
        super().__init__(config)
        config.sync_text_config()
        self.vision_model = CLIPVisionModel(config.vision_config)
        self.vision_model.embeddings = CFAMVisionEmbeddings(config.vision_config, config.image_size)
        self.text_model = CLIPTextModel(config.text_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)

        if config.uses_decoder:
            self.granularity_queries = nn.Parameter(
                torch.zeros(config.num_granularity_queries, config.decoder_hidden_size)
            )
            if config.share_decoder:  # one decoder for both modalities (the paper's design)
                self.granularity_decoder = CFAMGranularityDecoder(config)
            else:  # Table 9 No.0-3: one per modality
                self.image_decoder = CFAMGranularityDecoder(config)
                self.text_decoder = CFAMGranularityDecoder(config)
        self.matcher = CFAMMatcher(config) if config.use_matcher else None
        if config.use_id_loss and config.num_identities > 0:
            id_hidden = config.id_hidden_size or config.projection_dim
            self.id_mlp = nn.Sequential(
                nn.Linear(2 * config.projection_dim, id_hidden), nn.LayerNorm(id_hidden), nn.GELU()
            )
            self.id_classifier = nn.Linear(id_hidden, config.num_identities + 1)  # last class = "unmatched"
        else:
            self.id_mlp = self.id_classifier = None
        if config.embedding_batch_norm:  # opt-in (not in the paper), see CFAMConfig.embedding_batch_norm
            self.image_embedding_norm = nn.BatchNorm1d(config.projection_dim)
            self.text_embedding_norm = nn.BatchNorm1d(config.projection_dim)
            if config.uses_decoder:
                k_by_d = config.num_granularity_queries * config.decoder_hidden_size
                self.image_granularity_norm = nn.BatchNorm1d(k_by_d)
                self.text_granularity_norm = nn.BatchNorm1d(k_by_d)
        self.post_init()

    # ----- towers -------------------------------------------------------------------------------------------------

    def encode_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values `[B, 3, H, W]` → (global `[B, P]`, projected tokens `[B, 1 + h*w, P]`)."""
        hidden = self.vision_model(pixel_values=pixel_values).last_hidden_state
        # CLIP applies post_layernorm + projection to the class token only; all tokens get them here (as in IRRA)
        # so the decoder reads embeddings in the same space as the global one.
        tokens = self.visual_projection(self.vision_model.post_layernorm(hidden))
        return self._batch_norm(tokens[:, 0], "image_embedding_norm"), tokens

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids `[B, L]` (right-padded) → (global `[B, P]` at the last non-padding token, tokens `[B, L, P]`)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_text_length:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens, more than config.max_text_length="
                f"{self.config.max_text_length}"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        tokens = self.text_projection(hidden)  # last_hidden_state is already final-layer-normed
        last = (attention_mask.long().sum(dim=1) - 1).clamp(min=0)
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
        return self._batch_norm(pooled, "text_embedding_norm"), tokens

    def _batch_norm(self, embeds: torch.Tensor, norm_name: str) -> torch.Tensor:
        """With `embedding_batch_norm`: `[B, ...]` batch-normalized over the flattened trailing dims; else unchanged."""
        if not self.config.embedding_batch_norm:
            return embeds
        return getattr(self, norm_name)(embeds.flatten(1)).view_as(embeds)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Global image embeddings `[B, projection_dim]` (not normalized; `similarity` normalizes)."""
        return self.encode_image(pixel_values)[0]

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Global text embeddings `[B, projection_dim]`."""
        return self.encode_text(input_ids, attention_mask)[0]

    # ----- granularity ------------------------------------------------------------------------------------------

    def image_granularity(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """`[B, L, P]` → `[B, K, D]`."""
        decoder = self.granularity_decoder if self.config.share_decoder else self.image_decoder
        return self._batch_norm(decoder(self.granularity_queries, image_tokens)[0], "image_granularity_norm")

    def text_granularity(self, text_tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """`[B, L, P]` → `[B, K, D]`; padding tokens are not attended."""
        decoder = self.granularity_decoder if self.config.share_decoder else self.text_decoder
        granularity = decoder(self.granularity_queries, text_tokens, attention_mask)[0]
        return self._batch_norm(granularity, "text_granularity_norm")

    def get_image_attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """`pixel_values [I, 3, H, W]` → `[I, rows, cols]`: where the K granularity queries look in the last decoder
        layer's cross-attention (mean over heads and queries, renormalized over the patches, class token left out);
        None without a decoder."""
        if not self.config.uses_decoder:
            return None
        decoder = self.granularity_decoder if self.config.share_decoder else self.image_decoder
        attentions = decoder(self.granularity_queries, self.encode_image(pixel_values)[1], output_attentions=True)[1]
        return patch_attention_map(attentions[-1].float().mean(dim=(1, 2))[:, 1:], self.config.grid_size)

    @staticmethod
    def local_similarity(image_granularity: torch.Tensor, text_granularity: torch.Tensor) -> torch.Tensor:
        """Mean over the K queries of the cosine between image i's and text j's k-th outputs → `[B_img, B_txt]`."""
        v = F.normalize(image_granularity, dim=-1)
        w = F.normalize(text_granularity, dim=-1)
        return torch.einsum("ikd,jkd->ij", v, w) / v.shape[1]

    # ----- training -----------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        person_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> CFAMOutput:
        r"""
        input_ids `[B, L]`, attention_mask `[B, L]`, pixel_values `[B, 3, H, W]`: B aligned image–text pairs.
        person_ids `[B]`: contiguous identity labels `0..num_identities-1`; needed for the losses.
        Without `person_ids` (or with `return_loss=False`) only the embeddings are returned.
        """
        out = CFAMOutput()
        text_tokens = image_tokens = None
        if pixel_values is not None:
            out.image_embeds, image_tokens = self.encode_image(pixel_values)
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            out.text_embeds, text_tokens = self.encode_text(input_ids, attention_mask)
        if image_tokens is None or text_tokens is None:
            return out
        if image_tokens.shape[0] != text_tokens.shape[0]:
            raise ValueError(
                f"forward needs aligned pairs: {image_tokens.shape[0]} images but {text_tokens.shape[0]} captions"
            )

        cfg = self.config
        global_similarity = F.normalize(out.image_embeds, dim=-1) @ F.normalize(out.text_embeds, dim=-1).t()  # [I, T]
        out.logits_per_image, out.logits_per_text = global_similarity, global_similarity.t()
        if cfg.uses_decoder:
            out.image_granularity_embeds = self.image_granularity(image_tokens)
            out.text_granularity_embeds = self.text_granularity(text_tokens, attention_mask)
            out.local_similarity = self.local_similarity(out.image_granularity_embeds, out.text_granularity_embeds)
        if not return_loss or person_ids is None:
            return out

        person_ids = person_ids.reshape(-1).to(global_similarity.device)
        if person_ids.shape[0] != image_tokens.shape[0]:
            raise ValueError(f"person_ids has {person_ids.shape[0]} entries for a batch of {image_tokens.shape[0]}")
        logit_scale = 1.0 / cfg.sdm_temperature
        total = global_similarity.new_zeros(())

        if cfg.use_global_sdm:
            if cfg.global_loss_type == "sdm":
                out.loss_global_sdm = sdm_loss(global_similarity, person_ids, logit_scale)
            else:  # CLIP's symmetric InfoNCE with the pair index as the label (Table 8, No.0)
                logits = logit_scale * global_similarity
                target = torch.arange(logits.shape[0], device=logits.device)
                out.loss_global_sdm = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
            total = total + cfg.global_sdm_weight * out.loss_global_sdm

        if cfg.use_local_sdm:
            out.loss_local_sdm = sdm_loss(out.local_similarity, person_ids, logit_scale)
            total = total + cfg.local_sdm_weight * out.loss_local_sdm

        if cfg.use_matcher:
            source = global_similarity if cfg.hard_negative_similarity == "global" else out.local_similarity
            image_index, text_index, labels = self._match_pairs(source, person_ids)
            out.match_image_index, out.match_text_index = image_index, text_index
            out.match_logits = self.matcher(
                out.image_granularity_embeds[image_index], out.text_granularity_embeds[text_index]
            )
            out.match_labels = labels.to(out.match_logits.dtype)
            out.loss_match = F.binary_cross_entropy_with_logits(out.match_logits, out.match_labels)
            total = total + cfg.match_weight * out.loss_match

        if cfg.use_id_loss:
            if self.id_classifier is None:
                raise ValueError(
                    "use_id_loss=True needs config.num_identities > 0 when the model is built (the number of training "
                    "identities); set it, or set use_id_loss=False"
                )
            if int(person_ids.max()) >= cfg.num_identities or int(person_ids.min()) < 0:
                raise ValueError(
                    f"person_ids must be contiguous labels in [0, {cfg.num_identities}), got range "
                    f"[{int(person_ids.min())}, {int(person_ids.max())}]"
                )
            # Supplement §8: hard negatives picked by the global embeddings' similarity.
            image_index, text_index, labels = self._match_pairs(global_similarity, person_ids)
            fused = torch.cat([out.image_embeds[image_index], out.text_embeds[text_index]], dim=-1)
            out.id_logits = self.id_classifier(self.id_mlp(fused))
            out.id_labels = torch.where(labels.bool(), person_ids[image_index], torch.full_like(labels, cfg.num_identities))
            out.loss_id = F.cross_entropy(out.id_logits, out.id_labels)
            total = total + cfg.id_weight * out.loss_id

        out.loss = total
        return out

    @staticmethod
    def _match_pairs(similarity: torch.Tensor, person_ids: torch.Tensor):
        """B positive pairs (i, i), then the hardest different-identity text per image and image per text (§4.3).

        Returns `(image_index [M], text_index [M], labels [M])` with labels 1 for positives, 0 for negatives;
        rows without any different-identity partner in the batch contribute no negative.
        """
        batch = similarity.shape[0]
        arange = torch.arange(batch, device=similarity.device)
        text_for_image, valid_i = hardest_negatives(similarity, person_ids)
        image_for_text, valid_t = hardest_negatives(similarity.t(), person_ids)
        image_index = torch.cat([arange, arange[valid_i], image_for_text[valid_t]])
        text_index = torch.cat([arange, text_for_image[valid_i], arange[valid_t]])
        labels = torch.cat([torch.ones_like(arange), torch.zeros_like(image_index[batch:])])
        return image_index, text_index, labels

    # ----- pretrained towers --------------------------------------------------------------------------------------

    backbone_preset = "clip-b16"

    @classmethod
    def _from_backbone_checkpoints(cls, config: CFAMConfig, checkpoints: dict) -> "CFAMModel":
        """
        CFAM with its towers (and projections) from a CLIP checkpoint, role `clip`: a hub id such as
        "openai/clip-vit-base-patch16", a local folder saved with `CLIPModel.save_pretrained`, or a loaded
        `CLIPModel` (see `from_backbones`).

        The tower sizes, `projection_dim`, `vocab_size` and `tokenizer_name` come from the checkpoint and
        `embedding_batch_norm` is turned off (a from-scratch aid). The text position table is stretched to
        `max_text_length` (`extend_text_positions`) and the square vision position grid is resized to the crop's
        patch grid (`resize_position_table`, bicubic).
        """
        clip = checkpoints.get("clip")
        if clip is None:
            raise ValueError("CFAM.from_backbones needs the role clip (pass it, or set config.backbone_checkpoints)")
        clip_model = clip if isinstance(clip, nn.Module) else CLIPModel.from_pretrained(clip)
        clip_config = clip_model.config
        vision = clip_config.vision_config.to_dict()
        text = clip_config.text_config.to_dict()
        text["max_position_embeddings"] = config.max_text_length  # stretched below
        config.vision_config = CLIPVisionConfig(**vision)
        config.text_config = CLIPTextConfig(**text)
        config.projection_dim = clip_config.projection_dim
        config.vocab_size = clip_config.text_config.vocab_size
        if not isinstance(clip, nn.Module):
            config.tokenizer_name = str(clip)
            config.backbone_checkpoints = {"clip": str(clip)}
        config.embedding_batch_norm = False  # a from-scratch aid (tiny preset); pretrained towers do not need it
        config.sync_text_config()
        config.check()

        model = cls(config)
        vision_state = clip_model.vision_model.state_dict()
        key = "embeddings.position_embedding.weight"
        vision_state[key] = resize_position_table(vision_state[key], config.grid_size, mode="bicubic")  # as IRRA
        model.vision_model.load_state_dict(vision_state)
        text_state = clip_model.text_model.state_dict()
        text_state[key] = extend_text_positions(text_state[key], config.max_text_length)
        model.text_model.load_state_dict(text_state)
        model.visual_projection.load_state_dict(clip_model.visual_projection.state_dict())
        model.text_projection.load_state_dict(clip_model.text_projection.state_dict())
        return model


__all__ = ["CFAMModel", "CFAMOutput", "CFAMPreTrainedModel", "extend_text_positions"]
