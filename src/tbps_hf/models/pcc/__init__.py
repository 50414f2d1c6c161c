"""PCC (Park et al., ECCV 2024): part-level cross-modal correspondence with a modality-shared decoder and the
commonality-based margin ranking loss."""

from .. import MethodInfo, register_method
from .configuration_pcc import PCCConfig
from .modeling_pcc import PCCFeatures, PCCModel, PCCOutput, PCCPreTrainedModel
from .processing_pcc import PCCProcessor

INFO = MethodInfo(
    title="PCC",
    paper="Improving Text-based Person Search via Part-level Cross-modal Correspondence (Park et al., ECCV 2024)",
    citation="@inproceedings{park2024improving,\n  title={Improving Text-based Person Search via Part-level "
    "Cross-modal Correspondence},\n  author={Park, Jicheol and Jeong, Boseung and Kim, Dongwon and Kwak, Suha},\n"
    "  booktitle={ECCV},\n  year={2024}\n}",
    architecture="image backbone + frozen BERT, a decoder shared by both modalities giving global, coarse and "
    "fine part embeddings; similarity is the sum of their cosines",
    # the sum of 1 + D + P cosines; each config states its own (D = num_shared_tokens, P = num_parts)
    similarity_range=(-9.0, 9.0),
    backbone_roles=("image", "text"),
    loss_terms=("id_global", "id_coarse", "id_fine", "rank_global", "rank_coarse", "cmr"),
)

register_method("pcc", PCCConfig, PCCModel, PCCProcessor, INFO)

__all__ = ["PCCConfig", "PCCModel", "PCCPreTrainedModel", "PCCFeatures", "PCCOutput", "PCCProcessor"]
