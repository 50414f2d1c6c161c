"""IVT (Shu et al. 2022): one transformer shared by images and text, MLA + BMM, CMPM loss."""

from .. import MethodInfo, register_method
from .configuration_ivt import IVTConfig
from .modeling_ivt import IVTModel, IVTOutput, IVTPreTrainedModel
from .processing_ivt import IVTProcessor

INFO = MethodInfo(
    title="IVT",
    paper="See Finer, See More: Implicit Modality Alignment for Text-based Person Retrieval (Shu et al., "
    "ECCV Workshops 2022)",
    citation="@inproceedings{shu2022see,\n  title={See Finer, See More: Implicit Modality Alignment for "
    "Text-based Person Retrieval},\n  author={Shu, Xiujun and Wen, Wei and Wu, Haoqian and Chen, Keyu and Song, "
    "Yiran and Qiao, Ruizhi and Ren, Bo and Wang, Xiao},\n  booktitle={ECCV Workshops},\n  year={2022}\n}",
    architecture="one ViT shared by both modalities (shared LayerNorm and self-attention, modality-specific "
    "MLPs), BERT-style word embeddings; dual encoder, cosine similarity",
    similarity_range=(-1.0, 1.0),
    backbone_roles=("vit", "bert"),
    loss_terms=("cmpm_i2t", "cmpm_t2i"),
)

register_method("ivt", IVTConfig, IVTModel, IVTProcessor, INFO)

__all__ = ["IVTConfig", "IVTModel", "IVTOutput", "IVTPreTrainedModel", "IVTProcessor"]
