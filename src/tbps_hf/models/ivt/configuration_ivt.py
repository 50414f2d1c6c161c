"""IVT configuration (Shu et al., "See Finer, See More: Implicit Modality Alignment for Text-based Person Retrieval",
ECCV Workshops 2022; ``papers/ivt.txt``)."""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict

from ...configuration_utils import TBPSConfig

MLA_LEVELS = ("sentence", "phrase", "word")
MLA_MODES = ("random", "all")


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
    patch_size (`int`): square patch side (the kernel of the patch convolution).
    patch_stride (`int`, *optional*): stride of the patch convolution; default `patch_size` (non-overlapping
        patches: a 24x8 grid at 384x128). The official CUHK-PEDES / ICFG-PEDES IVT releases use 12 (overlapping
        patches, a 31x10 grid). Every grid-dependent part follows it: embeddings, position table, BMM, maps.
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
    mla_mode (`str`): `"random"` (one level per sample per step, the batch keeps B pairs) or `"all"` (the public
        code: every sample yields one pair per level, 3B pairs), passed to the processor's `training_batch`.
    cmpm_epsilon (`float`): epsilon of the CMPM loss (Eq. 5).
    lr_multipliers: see [`TBPSConfig`]; the paper preset has `{"*.bias": 2.0}` (the public code's bias lr x2).
    decay_norm_and_bias (`bool`): apply weight decay to biases, LayerNorms and the cls/position/type embeddings
        (the public code decays everything).
    """

    model_type = "ivt"

    # Presets: presets/base.json (the paper's ViT-B/16 + BERT setting and recipe) and presets/tiny.json (CPU); the
    # measurements behind the tiny preset's choices are in docs/benchmarks.md ("Preset notes").
    deprecated_fields: ClassVar[dict[str, str]] = {"bias_lr_factor": "lr_multipliers"}

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    patch_size: int = 16
    patch_stride: int | None = None
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
    mla_mode: str = "random"
    cmpm_epsilon: float = 1e-8
    decay_norm_and_bias: bool = True

    def __post_init__(self, **kwargs):
        self.mla_levels = tuple(self.mla_levels)
        if self.patch_stride is None:
            self.patch_stride = self.patch_size
        super().__post_init__(**kwargs)

    def _rename_deprecated(self, old: str, new: str, value: Any) -> None:
        if old == "bias_lr_factor" and float(value) != 1.0:  # earlier releases: one factor for every bias
            self.lr_multipliers = {**(self.lr_multipliers or {}), "*.bias": float(value)}

    def validate_heads(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )

    def validate_patch_grid(self):
        height, width = self.image_size
        if not 0 < self.patch_stride <= self.patch_size:
            raise ValueError(f"patch_stride must be in [1, patch_size={self.patch_size}], got {self.patch_stride}")
        if min(height, width) < self.patch_size:
            raise ValueError(f"image_size {self.image_size} is smaller than patch_size ({self.patch_size})")
        if self.patch_stride == self.patch_size and (height % self.patch_size or width % self.patch_size):
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size ({self.patch_size})")

    def validate_masking(self):
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.mask_ratio_sampling not in ("fixed", "uniform"):
            raise ValueError(f"mask_ratio_sampling must be 'fixed' or 'uniform', got {self.mask_ratio_sampling!r}")

    def validate_mla(self):
        unknown = [level for level in self.mla_levels if level not in MLA_LEVELS]
        if unknown or not self.mla_levels:
            raise ValueError(f"mla_levels must be a non-empty subset of {MLA_LEVELS}, got {self.mla_levels}")
        if self.mla_mode not in MLA_MODES:
            raise ValueError(f"mla_mode must be one of {MLA_MODES}, got {self.mla_mode!r}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (rows, columns) of the patch convolution: (24, 8) for 384x128 images, 16x16 patches and
        stride 16; (31, 10) with the official CUHK/ICFG releases' stride 12."""
        stride = self.patch_stride or self.patch_size
        return tuple((side - self.patch_size) // stride + 1 for side in self.image_size)

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols
