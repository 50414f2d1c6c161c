"""CFAM configuration (Zuo et al., "UFineBench: Towards Text-based Person Retrieval with Ultra-fine Granularity",
CVPR 2024, §4 and supplement §8-9; ``papers/ufinebench-cfam.txt``)."""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import CLIPTextConfig, CLIPVisionConfig

from ...configuration_utils import TBPSConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

HARD_NEGATIVE_SOURCES = ("global", "local")
# the pretrained CLIP parts; the paper trains everything else at 5x their learning rate (`lr_multipliers`)
CLIP_MODULES = ("vision_model", "text_model", "visual_projection", "text_projection")
GLOBAL_LOSS_TYPES = ("sdm", "infonce")

@strict(accept_kwargs=True)
class CFAMConfig(TBPSConfig):
    r"""
    Configuration of [`CFAMModel`]: CLIP image and text towers, a granularity decoder shared by both modalities,
    a Matcher on hard negatives, global + local SDM and the cross-modal identity classifying loss.

    Besides the [`TBPSConfig`] fields (`image_size`, `vocab_size`, `max_text_length`, `num_identities`, …):

    vision_config (`CLIPVisionConfig` or `dict`): the CLIP image tower. Its `image_size` is the pre-training
        resolution and is not used: the patch grid is `image_size // patch_size` of the top-level (height, width),
        e.g. 24x8 for 384x128 / 16 (L/14: 27x9, the convolution drops the 6+2 border pixels that do not fill a
        patch). Pretrained square position embeddings are resized to the grid (bicubic) by `from_backbones`.
    text_config (`CLIPTextConfig` or `dict`): the CLIP text tower. `vocab_size` and `max_position_embeddings` are
        kept equal to the top-level `vocab_size` and `max_text_length` (168 in the paper, §5.1).
    projection_dim (`int`): width of the global embeddings and of the projected token embeddings the decoder reads
        (CLIP: 512 for B/16, 768 for L/14).
    decoder_hidden_size (`int`): width of the granularity decoder and of the Matcher (512, §5.1). When it differs
        from `projection_dim` (L/14) a linear layer maps the token embeddings into the decoder.
    decoder_num_layers (`int`): transformer blocks of the granularity decoder (2, §5.1 and Table 9).
    decoder_num_heads (`int`): attention heads of the decoder and the Matcher (8, §5.1).
    decoder_intermediate_size (`int`): MLP width inside decoder and Matcher blocks (not stated: 4 x hidden).
    num_granularity_queries (`int`): K learnable granularity queries. **The paper contradicts itself**: §5.1 says
        "the number of granularity queries is set to 16", while supplement §9 says the default is the best row of
        Table 9, "No.4", whose listed K is **4** (shared decoder, depth 2, K=4: 72.87 R@1 / 64.92 mAP / 50.20 mSD,
        the exact numbers of the main CUHK-PEDES result and of Table 8's full model), although its sentence says
        "2 and 16". The default here is **4**, the configuration that produced the published numbers; set 16 for
        the §5.1 wording.
    share_decoder (`bool`): one decoder for both modalities (the paper's design) or one per modality (Table 9,
        No.0-3). The K queries are shared in both cases so that query k means the same slot in both modalities.
    matcher_num_layers (`int`): transformer blocks of the Matcher (2, §5.1).
    hard_negative_similarity (`str`): which similarity picks the hardest different-identity partner for the
        Matcher: `"global"` (global embeddings, as for the identity loss in supplement §8 and as ALBEF/BLIP pick
        ITM negatives; default) or `"local"` (the mean per-query cosine). §4.3 only says "highest similarity".
    sdm_temperature (`float`): temperature of both SDM losses (IRRA's 0.02, i.e. logit scale 50; the paper uses
        "the commonly used SDM loss [11]").
    global_loss_type (`str`): `"sdm"` (CFAM) or `"infonce"` (CLIP's loss, the Table 8 No.0 baseline).
    use_global_sdm / use_local_sdm / use_matcher / use_id_loss (`bool`): each loss on or off (Table 8). The
        decoder is built only when the local SDM or the Matcher is on, the Matcher and the identity head only
        when their loss is on.
    global_sdm_weight, local_sdm_weight, match_weight, id_weight (`float`): the loss weights (λ1-λ3 = 1, §4.4).
    id_hidden_size (`int`): output width of the identity MLP (Linear, LayerNorm, GELU); 0 means `projection_dim`.
    lr_multipliers: see [`TBPSConfig`]; the paper presets train the randomly initialized modules at 5x the CLIP
        towers' rate (5e-5 / 1e-5, §5.1): `{"vision_model": 1, "text_model": 1, "visual_projection": 1,
        "text_projection": 1, "*": 5}` (`new_module_lr_ratio` in the first release).
    initializer_range (`float`): std of the normal initializer of the new modules.
    embedding_batch_norm (`bool`): not in the paper (off by default; on in `tiny`): a BatchNorm1d per modality on
        the global embeddings and one on the K granularity outputs, before the losses and the similarity. Randomly
        initialized towers give every sample nearly the same embedding (one shared direction), so every similarity
        starts flat; centering across the batch removes that direction. For training from scratch; pretrained CLIP
        towers do not need it.
    """

    model_type = "cfam"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig, "text_config": CLIPTextConfig}

    # Presets: presets/clip-b16.json and presets/clip-l14.json (§5.1 and Tables 5-7: CLIP towers, recipe) and
    # presets/tiny.json (CPU); the measurements behind the tiny preset are in docs/benchmarks.md ("Preset notes").
    deprecated_fields: ClassVar[dict[str, str]] = {"new_module_lr_ratio": "lr_multipliers"}

    vision_config: dict | CLIPVisionConfig | None = None
    text_config: dict | CLIPTextConfig | None = None
    projection_dim: int = 512
    decoder_hidden_size: int = 512
    decoder_num_layers: int = 2
    decoder_num_heads: int = 8
    decoder_intermediate_size: int = 2048
    num_granularity_queries: int = 4
    share_decoder: bool = True
    matcher_num_layers: int = 2
    hard_negative_similarity: str = "global"
    sdm_temperature: float = 0.02
    global_loss_type: str = "sdm"
    use_global_sdm: bool = True
    use_local_sdm: bool = True
    use_matcher: bool = True
    use_id_loss: bool = True
    global_sdm_weight: float = 1.0
    local_sdm_weight: float = 1.0
    match_weight: float = 1.0
    id_weight: float = 1.0
    id_hidden_size: int = 0
    initializer_range: float = 0.02
    embedding_batch_norm: bool = False

    def __post_init__(self, **kwargs):
        if isinstance(self.vision_config, dict) or self.vision_config is None:
            self.vision_config = CLIPVisionConfig(**(self.vision_config or {}))
        if isinstance(self.text_config, dict) or self.text_config is None:
            self.text_config = CLIPTextConfig(**(self.text_config or {}))
        self.sync_text_config()
        super().__post_init__(**kwargs)

    def _rename_deprecated(self, old: str, new: str, value: Any) -> None:
        if float(value) != 1.0:  # new_module_lr_ratio: everything but the CLIP towers and projections
            self.lr_multipliers = {**{p: 1.0 for p in CLIP_MODULES}, "*": float(value)}

    def validate_choices(self):
        if self.hard_negative_similarity not in HARD_NEGATIVE_SOURCES:
            raise ValueError(
                f"hard_negative_similarity must be one of {HARD_NEGATIVE_SOURCES}, got {self.hard_negative_similarity!r}"
            )
        if self.global_loss_type not in GLOBAL_LOSS_TYPES:
            raise ValueError(f"global_loss_type must be one of {GLOBAL_LOSS_TYPES}, got {self.global_loss_type!r}")

    def validate_decoder(self):
        for name in ("num_granularity_queries", "decoder_num_layers", "matcher_num_layers", "decoder_hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_hidden_size % self.decoder_num_heads:
            raise ValueError(
                f"decoder_hidden_size ({self.decoder_hidden_size}) must be a multiple of decoder_num_heads "
                f"({self.decoder_num_heads})"
            )
        if self.sdm_temperature <= 0:
            raise ValueError(f"sdm_temperature must be > 0, got {self.sdm_temperature}")

    def validate_patch_grid(self):
        patch = self.vision_config.patch_size
        if min(self.image_size) < patch:
            raise ValueError(f"image_size {self.image_size} is smaller than the patch size {patch}")

    def sync_text_config(self) -> None:
        """Keep the text tower's vocabulary and position table equal to the top-level fields (the caller may set
        `vocab_size` after training a tokenizer)."""
        self.text_config.vocab_size = self.vocab_size
        self.text_config.max_position_embeddings = self.max_text_length

    @property
    def uses_decoder(self) -> bool:
        return self.use_local_sdm or self.use_matcher

    @property
    def grid_size(self) -> tuple[int, int]:
        patch = self.vision_config.patch_size
        return self.image_size[0] // patch, self.image_size[1] // patch


__all__ = ["CFAMConfig"]
