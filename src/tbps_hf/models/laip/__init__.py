"""LAIP (Local Alignment from Image-Phrase modeling): an ALBEF cross-encoder with BidirAtt, Mask Phrase Modeling
and ITC → ITM two-stage retrieval."""

from .. import MethodInfo, register_method
from .configuration_laip import LAIPConfig
from .modeling_laip import (
    LAIPImageFeatures,
    LAIPModel,
    LAIPOutput,
    LAIPPhraseAttentionMaps,
    LAIPPreTrainedModel,
    LAIPTextFeatures,
)
from .processing_laip import LAIPProcessor

INFO = MethodInfo(
    title="LAIP",
    paper="LAIP: Learning Local Alignment from Image-Phrase Modeling for Text-based Person Search (Chen et al.)",
    citation="@article{chen2024laip,\n  title={LAIP: Learning Local Alignment from Image-Phrase Modeling for "
    "Text-based Person Search},\n  author={Chen, Haiguang and others},\n  journal={arXiv preprint},\n  year={2024}\n}",
    architecture="ALBEF cross-encoder: ViT-B/16 image encoder, 6-layer BERT text encoder, 6 fusion layers with "
    "cross-attention, momentum encoders and queues; ITC first stage, ITM re-ranking of the top-k",
    similarity_range=(-1.0, 1.0),
    backbone_roles=("albef", "vit", "bert"),
    is_cross_encoder=True,
    loss_terms=("itc", "itm", "triplet", "bidiratt", "mpm"),
    # The paper starts from ALBEF fine-tuned on COCO; its weights ship only as the authors' .pth file.
    backbone_hints={
        "albef": "Convert ALBEF's released COCO checkpoint (mscoco.pth, salesforce/ALBEF) with `tbps convert --model "
        "laip --checkpoint mscoco.pth --output_dir albef-mscoco`"
    },
)

register_method("laip", LAIPConfig, LAIPModel, LAIPProcessor, INFO)

__all__ = [
    "LAIPConfig",
    "LAIPModel",
    "LAIPOutput",
    "LAIPPreTrainedModel",
    "LAIPProcessor",
    "LAIPTextFeatures",
    "LAIPImageFeatures",
    "LAIPPhraseAttentionMaps",
]
