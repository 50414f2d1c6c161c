"""IVT configuration (Shu et al., "See Finer, See More: Implicit Modality Alignment for Text-based Person Retrieval",
ECCV Workshops 2022; ``papers/ivt.txt``)."""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict

from ...configuration_utils import TBPSConfig

MLA_LEVELS = ("sentence", "phrase", "word")


@strict(accept_kwargs=True)
class IVTConfig(TBPSConfig):
    r"""
    Configuration of [`IVTModel`]: one ViT-style transformer shared by images and text (shared LayerNorm and
    self-attention, modality-specific MLPs), trained with CMPM in both directions, bidirectional mask modeling
    (BMM) and multi-level alignment (MLA).

    Besides the [`TBPSConfig`] fields (`image_size`, `vocab_size`, `max_text_length`, …):

    hidden_size (`int`): width of the shared stack and of the output embeddings (768 in the paper).
    num_hidden_layers (`int`), num_attention_heads (`int`), intermediate_size (`int`): ViT block sizes.
    hidden_act (`str`): MLP activation.
    patch_size (`int`): square patch side; the grid is `image_size // patch_size` (24x8 for 384x128 / 16).
    num_channels (`int`): image channels.
    qkv_bias (`bool`): bias on the query/key/value projections.
    layer_norm_eps (`float`): eps of the shared LayerNorms (timm ViT: 1e-6).
    text_layer_norm_eps (`float`): eps of the LayerNorm inside the BERT-style text embeddings (BERT: 1e-12).
    type_vocab_size (`int`): BERT token-type vocabulary (text uses type 0).
    hidden_dropout_prob / attention_probs_dropout_prob (`float`): dropout rates.
    drop_path_rate (`float`): stochastic depth, linearly increasing over the blocks (public code: 0.1).
    initializer_range (`float`): std of the truncated-normal initializer.
    final_layer_norm_init (`float`): initial weight of the final LayerNorm. CMPM projects raw (unnormalized)
        embeddings, so this sets the initial logit scale (`~ sqrt(hidden_size) * value`). Pretrained backbones use
        1.0; from scratch a large scale drives CMPM to the collapsed uniform solution (all embeddings equal) before
        any alignment is learned, so the tiny preset starts small and lets training grow it.
    embedding_batch_norm (`bool`): not in the paper (off by default; on in `tiny`): a BatchNorm1d per modality on the
        output embeddings. From random init every class token points the same way (cosines near 1 between any two
        samples), which leaves CMPM at its uniform value for hundreds of steps; centering per batch removes that
        shared direction (PCC's tiny preset measured the same collapse). Pretrained backbones do not need it.
    use_bmm (`bool`): bidirectional mask modeling during training.
    mask_ratio (`float`): share of image patches and of text word tokens hidden from attention during training
        (paper §4.3, Fig. 5: best at 0.3).
    mask_ratio_sampling (`str`): `"fixed"` masks exactly `floor(mask_ratio * n)` tokens of every sample (the
        paper's wording); `"uniform"` draws the count per step uniformly in `[0, floor(mask_ratio * n)]` (the public
        code).
    use_mla (`bool`): multi-level alignment in the processor's `training_batch`.
    mla_levels (`tuple[str]`): text levels sampled uniformly per sample per step (`sentence`, `phrase`, `word`).
    cmpm_epsilon (`float`): epsilon of the CMPM loss (Eq. 5).
    bias_lr_factor (`float`): learning-rate multiplier for biases (public code: 2).
    decay_norm_and_bias (`bool`): apply weight decay to biases, LayerNorms and the cls/position/type embeddings
        (the public code decays everything).
    """

    model_type = "ivt"

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Paper §4.1: ViT-Base, patch 16x16, 768-d features, 384x128 input, BERT word embeddings (bert-base-uncased,
        # text length 100 as in the public code's tokenizer call), SGD with weight decay 1e-4, lr 5e-3, cosine
        # decay, batch 28 per GPU on 4 GPUs. Public code (configs/CUHK_PEDES/vit_base_uvt_bert.yml,
        # config/defaults.py): momentum 0.9, 5 linear warm-up epochs, 120 epochs, bias lr x2, drop path 0.1,
        # flip + pad-10 random crop + random erasing 0.5.
        "base": dict(
            image_size=(384, 128),
            patch_size=16,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            vocab_size=30522,
            max_text_length=100,
            tokenizer_name="bert-base-uncased",
            layer_norm_eps=1e-6,
            drop_path_rate=0.1,
            bias_lr_factor=2.0,
            decay_norm_and_bias=True,
            training_defaults=dict(
                optimizer="sgd",
                momentum=0.9,
                learning_rate=5e-3,
                weight_decay=1e-4,
                lr_scheduler_type="cosine",
                warmup_epochs=5,
                num_train_epochs=120,
                per_device_train_batch_size=28,
                images_per_identity=1,
            ),
        ),
        # CPU preset for tests and the quickstart: a small ViT on 64x32 crops with 8x8 patches (8x4 grid),
        # trained from scratch with AdamW (SGD at lr 5e-3 is far too slow for a from-scratch tiny model);
        # text length 64 covers ProcPEDES captions (sentence level: up to ~48 WordPiece tokens).
        "tiny": dict(
            image_size=(64, 32),
            patch_size=8,
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=512,
            vocab_size=1000,
            max_text_length=64,
            tokenizer_name=None,
            layer_norm_eps=1e-6,
            # from scratch: wider init so the class tokens depend on the input at step 0, and a small initial
            # CMPM logit scale, so that CMPM does not first collapse every embedding to one vector (seen with
            # 0.02 / 1.0 on ProcPEDES: loss pinned at the uniform value log-terms for 50+ steps)
            initializer_range=0.1,
            final_layer_norm_init=0.2,
            embedding_batch_norm=True,
            # MLA and BMM are implemented and on in `base`; in a ~6-minute from-scratch run their partial texts and
            # masked tokens only add noise: ProcPEDES test R@1 39.4 with both on (500 steps) vs 68.0 off (650 steps).
            use_mla=False,
            use_bmm=False,
            drop_path_rate=0.0,
            bias_lr_factor=1.0,
            decay_norm_and_bias=False,
            training_defaults=dict(
                optimizer="adamw",
                learning_rate=1e-3,
                weight_decay=0.05,
                lr_scheduler_type="cosine",
                warmup_epochs=1,
                num_train_epochs=30,
                per_device_train_batch_size=64,
                images_per_identity=2,
            ),
        ),
    }

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    text_layer_norm_eps: float = 1e-12
    type_vocab_size: int = 2
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.0
    initializer_range: float = 0.02
    final_layer_norm_init: float = 1.0
    embedding_batch_norm: bool = False
    use_bmm: bool = True
    mask_ratio: float | int = 0.3
    mask_ratio_sampling: str = "fixed"
    use_mla: bool = True
    mla_levels: list[str] | tuple[str, ...] = MLA_LEVELS
    cmpm_epsilon: float = 1e-8
    bias_lr_factor: float | int = 1.0
    decay_norm_and_bias: bool = True

    def __post_init__(self, **kwargs):
        self.mla_levels = tuple(self.mla_levels)
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        height, width = self.image_size
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size ({self.patch_size})")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.mask_ratio_sampling not in ("fixed", "uniform"):
            raise ValueError(f"mask_ratio_sampling must be 'fixed' or 'uniform', got {self.mask_ratio_sampling!r}")
        unknown = [level for level in self.mla_levels if level not in MLA_LEVELS]
        if unknown or not self.mla_levels:
            raise ValueError(f"mla_levels must be a non-empty subset of {MLA_LEVELS}, got {self.mla_levels}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (rows, columns), e.g. (24, 8) for 384x128 images and 16x16 patches."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols
