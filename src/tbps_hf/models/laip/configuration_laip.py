"""LAIP configuration (Chen et al., "LAIP: Learning Local Alignment from Image-Phrase Modeling for Text-based Person
Search"; ``papers/laip.txt``).

Our copy of the paper lost every inline number. Where a value is lost, the field's default is the value the
ALBEF-family TBPS code uses (DESIGN.md → "LAIP facts"), and the docstring says so ("stand-in").
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict

from ...configuration_utils import TBPSConfig

MASK_MODES = ("phrase", "sentence")
LOSS_SWITCHES = ("use_itc", "use_itm", "use_triplet", "use_bidiratt", "use_mpm")
# The paper's stage 1 trains "with only [two lost symbols] losses" (§III-A); ITC + ITM, the ALBEF baseline, is the
# only reading consistent with its Table IV (rows build on "ITC+ITM").
STAGE_ONE_LOSSES = ("itc", "itm")


@strict(accept_kwargs=True)
class LAIPConfig(TBPSConfig):
    r"""
    Configuration of [`LAIPModel`]: an ALBEF-style cross-encoder (ViT image encoder, BERT text encoder, fusion
    encoder of self-attention → cross-attention layers, momentum encoders and feature queues) with LAIP's local
    alignment (BidirAtt, Mask Phrase Modeling) and ITC → ITM two-stage retrieval.

    Besides the [`TBPSConfig`] fields (`image_size`, `vocab_size`, `max_text_length`, …):

    Towers
    patch_size (`int`): ViT patch side (16); the grid is `image_size // patch_size` (24x8 at 384x128).
    vision_hidden_size, vision_num_hidden_layers, vision_num_attention_heads, vision_intermediate_size (`int`):
        ViT-B/16 sizes (768 / 12 / 12 / 3072).
    vision_layer_norm_eps (`float`): timm ViT eps, 1e-6 (ALBEF's `VisionTransformer`).
    hidden_size, num_attention_heads, intermediate_size (`int`): BERT sizes shared by the text and fusion layers.
    num_text_layers (`int`): unimodal text layers (ALBEF: BERT layers 0-5).
    num_fusion_layers (`int`): fusion layers, each self-attention → cross-attention over the image tokens → FFN
        (ALBEF: BERT layers 6-11; the paper: "6 cross-attention layers").
    text_layer_norm_eps (`float`): BERT eps, 1e-12.
    max_position_embeddings, type_vocab_size (`int`): BERT embedding tables.
    hidden_dropout_prob, attention_probs_dropout_prob (`float`): BERT dropouts (ALBEF `config_bert.json`: 0.1).
    hidden_act (`str`): activation of every MLP.
    initializer_range (`float`): std of the normal initializer (random init only).
    fusion_initializer_range (`float`, *optional*): std of the fusion layers' and the ITM head's initializer (None:
        `initializer_range`). Not in the paper (its fusion starts from ALBEF). BERT's 0.02 is sized for 768-wide
        layers; at the tiny preset's 128 a from-scratch fusion starts with each image/text mixing projection ~6x
        weaker, its [CLS] is the same vector for every pair and ITM sits at its prior (measured: docs/benchmarks.md).
    embed_dim (`int`): ITC projection size (ALBEF `embed_dim: 256`; the paper's value is lost — stand-in).
    embedding_batch_norm (`bool`): not in the paper (off in `albef-b16`, on in `tiny`): a BatchNorm1d after each ITC
        projection (online and momentum). From random init every [CLS] points the same way and ITC sits at its
        uniform value; centring per batch removes the shared direction (IVT's, PCC's and CFAM's tiny presets
        measured the same collapse). Pretrained ALBEF weights do not need it.

    Global alignment
    temp (`float`): initial learnable ITC temperature (ALBEF 0.07; lost — stand-in), clamped to [0.001, 0.5].
    momentum (`float`): EMA coefficient of the momentum encoders (ALBEF 0.995; lost — stand-in).
    queue_size (`int`): momentum feature queue length (ALBEF 65,536; stand-in). Training makes it at most the
        number of training pairs; it must be a multiple of the global batch size (checked at the first enqueue).
    itc_distill_alpha (`float`): momentum-distillation weight α of the ITC targets (ALBEF/RaSa 0.4, ramped up
        linearly over the first epoch; stand-in); 0 turns distillation off.
    itm_negative_schedule (`tuple[float, float]`): `(start, end)` shares of the training steps. Before `start`, ITM's
        negatives are drawn uniformly from the other identities of the batch; from `start` to `end` the sampling
        logits (ITC similarity / temperature) are scaled by a factor rising linearly from 0 to 1; after `end` it is
        ALBEF's ∝ softmax(similarity / temperature). `(0, 0)` (the paper's ALBEF start): hard negatives from the
        first step. Not in the paper: a from-scratch fusion never leaves ITM's prior when its first negatives are
        already the batch's nearest persons (`tiny`; docs/benchmarks.md).
    triplet_margin (`float`): margin of the fusion triplet loss on the ITM positive probability (paper: 0.6).

    Local alignment
    bidiratt_layer (`int`): 0-based fusion layer whose cross-attention gives BidirAtt's forward and backward
        attention. Lost in our copy (the appendix's Fig. 6 names it); stand-in 2 = BERT layer 8, ALBEF's Grad-CAM
        default (`Grounding.py --block_num 8`). The last layer is refused: its backward attention is exactly zero.
    mask_mode (`str`): `"phrase"` (MPM: one word of each noun phrase is masked, the phrase alone is the input) or
        `"sentence"` (the paper's MLM ablation, Table V: the whole caption is the input and `sentence_mask_ratio` of
        its words are masked).
    sentence_mask_ratio (`float`): share of words masked in `"sentence"` mode (BERT's 0.15; at least one word).
    max_phrases_per_caption (`int`): noun phrases used per caption and step (a random subset beyond it, drawn
        from the example's seed); bounds the cost of the image-phrase stream.
    max_phrase_length (`int`): tokens per phrase, special tokens included (phrases are short; a longer one is cut
        and its masked word is drawn among the words that fit).
    use_itc, use_itm, use_triplet, use_bidiratt, use_mpm (`bool`): loss switches (ablations).

    Schedule and inference
    two_stage (`bool`): the paper's schedule: stage 1 (`STAGE_ONE_LOSSES`, ITC + ITM) then stage 2 (all switched-on
        losses). Off: every switched-on loss from the first step.
    stage_one_fraction (`float`): share of the optimizer steps spent in stage 1 (30 of 45 epochs = 2/3); the stage is
        a pure function of `set_training_progress(global_step, total_steps, epoch)`, so a shorter run keeps the
        proportion and a resumed run switches at the same step.
    rerank_k (`int`): first-stage candidates re-ranked by ITM per query (RaSa `k_test` 128; lost — stand-in).
    rerank_range (`tuple[float, float]`): range of the re-ranked scores (ITM probability, [0, 1]), for mSD.
    lr_multipliers (`dict[str, float]`): learning-rate factor per module-name prefix (RaSa: new heads x10; the MLM
        head's transform is the one head `mscoco.pth` does not have — stand-in).
    backbone_checkpoints (`dict[str, str]`, *optional*): role → hub id / folder for `from_backbones`
        (`albef`: a converted ALBEF folder, or `vit` + `bert`).
    """

    model_type = "laip"

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The paper: ALBEF ViT-B/16 + BERT-base (6 text + 6 fusion layers) initialized from ALBEF fine-tuned on COCO,
        # two stages (30 epochs ITC+ITM, 15 epochs all losses), AdamW + cosine decay with warm-up, margin 0.6.
        # Lost numbers, with their stand-ins (DESIGN.md "LAIP facts"): 384x128 crops (APTM; RaSa uses 384x384),
        # text length 50 (RaSa max_words), lr 1e-5 / weight decay 0.02 / cosine to ~0 (RaSa), momentum 0.995, queue
        # 65,536, temperature 0.07, distillation alpha 0.4 (ALBEF), one warm-up epoch (ALBEF/RaSa warm up over the
        # first epoch), rerank k 128 (RaSa k_test). The per-GPU batch is lost too: 16 is a stand-in.
        "albef-b16": dict(
            image_size=(384, 128),
            patch_size=16,
            vision_hidden_size=768,
            vision_num_hidden_layers=12,
            vision_num_attention_heads=12,
            vision_intermediate_size=3072,
            hidden_size=768,
            num_attention_heads=12,
            intermediate_size=3072,
            num_text_layers=6,
            num_fusion_layers=6,
            vocab_size=30522,
            max_text_length=50,
            tokenizer_name="bert-base-uncased",
            image_mean=(0.48145466, 0.4578275, 0.40821073),  # ALBEF's CLIP normalization
            image_std=(0.26862954, 0.26130258, 0.27577711),
            embed_dim=256,
            temp=0.07,
            momentum=0.995,
            queue_size=65536,
            itc_distill_alpha=0.4,
            triplet_margin=0.6,
            bidiratt_layer=2,
            rerank_k=128,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            backbone_checkpoints={"albef": "tbps/albef-mscoco"},
            training_defaults=dict(
                optimizer="adamw",
                learning_rate=1e-5,
                weight_decay=0.02,
                lr_scheduler_type="cosine",
                warmup_epochs=1,
                num_train_epochs=45,
                per_device_train_batch_size=16,
                images_per_identity=2,
            ),
        ),
        # CPU preset for tests and the quickstart: the same architecture at toy size (64x32 crops, 8x8 patches →
        # 8x4 grid, 128-d, 2 text + 2 fusion layers, BidirAtt on fusion layer 0), trained from scratch with a
        # WordPiece tokenizer on the captions (see docs/benchmarks.md for what it reaches in the quickstart).
        "tiny": dict(
            image_size=(64, 32),
            patch_size=8,
            vision_hidden_size=128,
            vision_num_hidden_layers=4,
            vision_num_attention_heads=4,
            vision_intermediate_size=512,
            hidden_size=128,
            num_attention_heads=4,
            intermediate_size=512,
            num_text_layers=2,
            num_fusion_layers=2,
            vocab_size=1000,
            max_text_length=64,
            max_position_embeddings=64,
            tokenizer_name=None,
            embed_dim=64,
            embedding_batch_norm=True,
            temp=0.07,
            # a from-scratch model changes fast: ALBEF's 0.995 EMA (a ~200-step horizon) and 65k queue were made for
            # fine-tuning; with them the gallery embeddings stayed collapsed after 100 steps (std 0.011). 0.9 / 256:
            # a ~10-step horizon and queue entries at most 8 steps old (batch 32).
            momentum=0.9,
            queue_size=256,
            itc_distill_alpha=0.4,
            triplet_margin=0.6,
            bidiratt_layer=0,
            rerank_k=16,
            max_phrases_per_caption=2,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            initializer_range=0.02,
            # From scratch the fusion encoder must first learn to read the image at all; with BERT's 0.02 init (sized
            # for 768-wide layers) and hard negatives from step 0, ITM stayed at its prior for a whole quickstart.
            # A wider init, a gentler learning rate for the fusion (3e-4, as frozen-tower probes needed) and uniform
            # negatives for the first third (then ALBEF's hard negatives by mid-training) let it learn (benchmarks.md).
            fusion_initializer_range=0.1,
            itm_negative_schedule=(0.35, 0.5),
            lr_multipliers={"fusion_layers.": 0.3, "itm_head.": 0.3},
            backbone_checkpoints=None,
            training_defaults=dict(
                optimizer="adamw",
                learning_rate=1e-3,
                weight_decay=0.02,
                lr_scheduler_type="cosine",
                warmup_epochs=1,
                num_train_epochs=30,
                per_device_train_batch_size=32,
                images_per_identity=2,
            ),
        ),
    }

    similarity_range: list[float] | tuple[float, float] = (-1.0, 1.0)
    patch_size: int = 16
    num_channels: int = 3
    vision_hidden_size: int = 768
    vision_num_hidden_layers: int = 12
    vision_num_attention_heads: int = 12
    vision_intermediate_size: int = 3072
    vision_layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    num_text_layers: int = 6
    num_fusion_layers: int = 6
    text_layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    hidden_act: str = "gelu"
    initializer_range: float = 0.02
    fusion_initializer_range: float | None = None
    embed_dim: int = 256
    embedding_batch_norm: bool = False
    temp: float = 0.07
    momentum: float = 0.995
    queue_size: int = 65536
    itc_distill_alpha: float | int = 0.4
    itm_negative_schedule: list[float] | tuple[float, float] = (0.0, 0.0)
    triplet_margin: float = 0.6
    bidiratt_layer: int = 2
    mask_mode: str = "phrase"
    sentence_mask_ratio: float = 0.15
    max_phrases_per_caption: int = 4
    max_phrase_length: int = 16
    use_itc: bool = True
    use_itm: bool = True
    use_triplet: bool = True
    use_bidiratt: bool = True
    use_mpm: bool = True
    two_stage: bool = True
    stage_one_fraction: float = 30.0 / 45.0
    rerank_k: int = 128
    rerank_range: list[float] | tuple[float, float] = (0.0, 1.0)
    lr_multipliers: dict | None = None
    backbone_checkpoints: dict | None = None
    is_cross_encoder: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        self.rerank_range = tuple(float(v) for v in self.rerank_range)
        self.itm_negative_schedule = tuple(float(v) for v in self.itm_negative_schedule)
        if self.lr_multipliers is None:
            self.lr_multipliers = {"mlm_head.": 10.0}
        super().__post_init__(**kwargs)
        height, width = self.image_size
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size ({self.patch_size})")
        for size, heads, what in (
            (self.hidden_size, self.num_attention_heads, "hidden_size"),
            (self.vision_hidden_size, self.vision_num_attention_heads, "vision_hidden_size"),
        ):
            if size % heads:
                raise ValueError(f"{what} ({size}) must be divisible by its number of attention heads ({heads})")
        if self.num_fusion_layers < 1 or self.num_text_layers < 1:
            raise ValueError("num_text_layers and num_fusion_layers must be >= 1")
        if not 0 <= self.bidiratt_layer < self.num_fusion_layers:
            raise ValueError(
                f"bidiratt_layer must be a fusion layer index in [0, {self.num_fusion_layers - 1}], "
                f"got {self.bidiratt_layer}"
            )
        if self.use_bidiratt and self.bidiratt_layer == self.num_fusion_layers - 1:
            raise ValueError(
                f"bidiratt_layer {self.bidiratt_layer} is the last fusion layer: its backward attention is exactly "
                "zero (the masked word's score does not depend on its cross-attention weights over the other "
                f"tokens' paths — LAIP appendix); choose one of 0..{self.num_fusion_layers - 2}"
            )
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if not 0.0 < self.sentence_mask_ratio <= 1.0:
            raise ValueError(f"sentence_mask_ratio must be in (0, 1], got {self.sentence_mask_ratio}")
        if self.fusion_initializer_range is not None and self.fusion_initializer_range <= 0:
            raise ValueError(f"fusion_initializer_range must be > 0 or None, got {self.fusion_initializer_range}")
        if self.max_phrases_per_caption < 1:
            raise ValueError(f"max_phrases_per_caption must be >= 1, got {self.max_phrases_per_caption}")
        if self.max_phrase_length < 3:
            raise ValueError(f"max_phrase_length must be >= 3 ([CLS] word [SEP]), got {self.max_phrase_length}")
        if self.max_text_length > self.max_position_embeddings or self.max_phrase_length > self.max_position_embeddings:
            raise ValueError(
                f"max_text_length ({self.max_text_length}) and max_phrase_length ({self.max_phrase_length}) must not "
                f"exceed max_position_embeddings ({self.max_position_embeddings})"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if not 0.0 <= self.itc_distill_alpha <= 1.0:
            raise ValueError(f"itc_distill_alpha must be in [0, 1], got {self.itc_distill_alpha}")
        schedule = self.itm_negative_schedule
        if len(schedule) != 2 or not 0.0 <= schedule[0] <= schedule[1] <= 1.0:
            raise ValueError(
                f"itm_negative_schedule must be (start, end) with 0 <= start <= end <= 1, got {self.itm_negative_schedule}"
            )
        if not 0.0 <= self.stage_one_fraction < 1.0:
            raise ValueError(f"stage_one_fraction must be in [0, 1), got {self.stage_one_fraction}")
        if self.rerank_k < 1:
            raise ValueError(f"rerank_k must be >= 1, got {self.rerank_k}")
        if not any(getattr(self, name) for name in LOSS_SWITCHES):
            raise ValueError(f"every loss is switched off ({', '.join(LOSS_SWITCHES)}); turn at least one on")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (rows, columns): (24, 8) for 384x128 crops and 16x16 patches."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols

    def vit_config(self):
        """The `ViTConfig` of the image encoder."""
        from transformers import ViTConfig

        return ViTConfig(
            hidden_size=self.vision_hidden_size,
            num_hidden_layers=self.vision_num_hidden_layers,
            num_attention_heads=self.vision_num_attention_heads,
            intermediate_size=self.vision_intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            initializer_range=self.initializer_range,
            layer_norm_eps=self.vision_layer_norm_eps,
            image_size=tuple(self.image_size),
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            qkv_bias=self.qkv_bias,
        )

    def bert_config(self):
        """The `BertConfig` of the text encoder (`num_text_layers` layers) and the MLM head."""
        from transformers import BertConfig

        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_text_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            initializer_range=self.initializer_range,
            layer_norm_eps=self.text_layer_norm_eps,
        )

    def fusion_layer_config(self):
        """The `BlipTextConfig` of the fusion layers (`is_decoder=True`: bidirectional self-attention, then
        cross-attention over `vision_hidden_size`-wide image tokens — ALBEF's xbert layer)."""
        from transformers import BlipTextConfig

        return BlipTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            encoder_hidden_size=self.vision_hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_fusion_layers,
            num_attention_heads=self.num_attention_heads,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            layer_norm_eps=self.text_layer_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
            is_decoder=True,
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            sep_token_id=None,
        )


__all__ = ["LAIPConfig", "MASK_MODES", "LOSS_SWITCHES", "STAGE_ONE_LOSSES"]
