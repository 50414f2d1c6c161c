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
GLOBAL_LOSS_TYPES = ("sdm", "infonce")

# Paper §5.1: Adam, lr 1e-5 for CLIP and 5e-5 for the randomly initialized modules, 5 linear warm-up epochs, cosine
# decay, 60 epochs, batch 64 per GPU. Weight decay is not stated (Adam's default 0 is kept); sampling is plain
# random batches as in IRRA, whose SDM loss handles several captions of one identity in a batch.
_PAPER_TRAINING = dict(
    optimizer="adam",
    learning_rate=1e-5,
    weight_decay=0.0,
    lr_scheduler_type="cosine",
    warmup_epochs=5,
    num_train_epochs=60,
    per_device_train_batch_size=64,
    images_per_identity=1,
)

_CLIP_B16_VISION = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16,
    image_size=224, projection_dim=512, hidden_act="quick_gelu",
)
_CLIP_B16_TEXT = dict(
    hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, vocab_size=49408,
    max_position_embeddings=168, projection_dim=512, hidden_act="quick_gelu",
)
_CLIP_L14_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
    image_size=224, projection_dim=768, hidden_act="quick_gelu",
)
_CLIP_L14_TEXT = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, vocab_size=49408,
    max_position_embeddings=168, projection_dim=768, hidden_act="quick_gelu",
)


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
    new_module_lr_ratio (`float`): learning rate of the randomly initialized modules relative to the CLIP towers
        (5e-5 / 1e-5 = 5, §5.1); read by `optimizer_param_groups`.
    initializer_range (`float`): std of the normal initializer of the new modules.
    embedding_batch_norm (`bool`): not in the paper (off by default; on in `tiny`): a BatchNorm1d per modality on
        the global embeddings and one on the K granularity outputs, before the losses and the similarity. Randomly
        initialized towers give every sample nearly the same embedding (one shared direction), so every similarity
        starts flat; centering across the batch removes that direction. For training from scratch; pretrained CLIP
        towers do not need it.
    """

    model_type = "cfam"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig, "text_config": CLIPTextConfig}

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # §5.1: CLIP ViT-B/16 + CLIP text encoder, 384x128 images, 168 text tokens, decoder/matcher 2 blocks of
        # width 512 with 8 heads, K queries of width 512 (K: see `num_granularity_queries`), λ = 1 (§4.4).
        "clip-b16": dict(
            image_size=(384, 128),
            vocab_size=49408,
            max_text_length=168,
            tokenizer_name="openai/clip-vit-base-patch16",
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
            vision_config=_CLIP_B16_VISION,
            text_config=_CLIP_B16_TEXT,
            projection_dim=512,
            training_defaults=_PAPER_TRAINING,
        ),
        # §5.3 / Tables 5-7 "CFAM(L/14)": the same recipe on CLIP ViT-L/14 (768-d embeddings; the decoder stays 512).
        "clip-l14": dict(
            image_size=(384, 128),
            vocab_size=49408,
            max_text_length=168,
            tokenizer_name="openai/clip-vit-large-patch14",
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
            vision_config=_CLIP_L14_VISION,
            text_config=_CLIP_L14_TEXT,
            projection_dim=768,
            training_defaults=_PAPER_TRAINING,
        ),
        # CPU preset: small random-init CLIP towers on 64x32 crops (8x4 patches of 8 px) with a WordPiece tokenizer
        # trained on the captions; AdamW at 2e-3 because from-scratch towers do not learn at the paper's 1e-5.
        # Global term = CLIP's InfoNCE (temperature 0.05), not SDM: from random init SDM's KL(p || q) is minimized
        # first by flattening every similarity (all embeddings collapse to one direction) and stays on that plateau
        # (measured on ProcPEDES, 1 CPU thread: 200 steps of batch 64 with SDM → test R@1 1.0 = chance; 120 steps
        # with InfoNCE → R@1 2.1, R@5 12.1). The paper presets start from pretrained CLIP and keep SDM.
        "tiny": dict(
            image_size=(64, 32),
            vocab_size=1000,
            max_text_length=64,
            tokenizer_name=None,
            vision_config=dict(
                hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4, patch_size=8,
                image_size=64, projection_dim=96, hidden_act="gelu",
                # CLIP's init (factor 1) makes near-uniform attention, so the class token of a random tower is the
                # same for every image (cosine 0.99 between any two); factor 3 gives ~0.7. ProcPEDES, 300 steps,
                # lr 2e-3: test R@1 7.5 (factor 1 at lr 1e-3: 2.1 after 120 steps).
                initializer_factor=3.0,
            ),
            text_config=dict(
                hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4, vocab_size=1000,
                max_position_embeddings=64, projection_dim=96, hidden_act="gelu",
                pad_token_id=0, bos_token_id=2, eos_token_id=3,  # WordPiece [PAD]/[CLS]/[SEP]
            ),
            projection_dim=96,
            decoder_hidden_size=96,
            decoder_num_heads=4,
            decoder_intermediate_size=384,
            new_module_lr_ratio=1.0,
            global_loss_type="infonce",
            sdm_temperature=0.05,
            # local SDM stays on at weight 0.1: its KL(p || q) against q's zeros (log 1e-8) sits near 30 on the
            # flat start and at weight 1 its gradient swamps the global term.
            local_sdm_weight=0.1,
            # centering the embeddings over the batch lifts them off the shared random-init direction (as in the
            # IVT and PCC tiny presets). ProcPEDES, 500 steps, 1 thread, test R@1 / R@5 / mAP:
            #   this preset 34.5 / 66.1 / 33.7;  without the BatchNorm 13.1 / 40.9 / 17.3;
            #   with it but local SDM weight 1: 3.8 / 13.1 / 5.4;  with it and SDM globally (temp. 0.05): 19.1 / 50.8 / 21.8;
            #   with it and the paper's losses (SDM, temp. 0.02, local weight 1): 0.8 / 4.4 / 2.5.
            embedding_batch_norm=True,
            training_defaults=dict(
                optimizer="adamw",
                learning_rate=2e-3,
                weight_decay=0.01,
                lr_scheduler_type="cosine",
                warmup_epochs=1,
                num_train_epochs=30,
                per_device_train_batch_size=64,
                images_per_identity=2,
            ),
        ),
    }

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
    new_module_lr_ratio: float = 5.0
    initializer_range: float = 0.02
    embedding_batch_norm: bool = False

    def __post_init__(self, **kwargs):
        if isinstance(self.vision_config, dict) or self.vision_config is None:
            self.vision_config = CLIPVisionConfig(**(self.vision_config or {}))
        if isinstance(self.text_config, dict) or self.text_config is None:
            self.text_config = CLIPTextConfig(**(self.text_config or {}))
        super().__post_init__(**kwargs)
        self.sync_text_config()
        if self.hard_negative_similarity not in HARD_NEGATIVE_SOURCES:
            raise ValueError(
                f"hard_negative_similarity must be one of {HARD_NEGATIVE_SOURCES}, got {self.hard_negative_similarity!r}"
            )
        if self.global_loss_type not in GLOBAL_LOSS_TYPES:
            raise ValueError(f"global_loss_type must be one of {GLOBAL_LOSS_TYPES}, got {self.global_loss_type!r}")
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
