"""CFAM (UFineBench, CVPR 2024): CLIP towers + shared granularity decoder + hard-negative Matcher."""

from .. import MethodInfo, register_method
from .configuration_cfam import CFAMConfig
from .modeling_cfam import CFAMModel, CFAMOutput, CFAMPreTrainedModel
from .processing_cfam import CFAMProcessor

INFO = MethodInfo(
    title="CFAM",
    paper="UFineBench: Towards Text-based Person Retrieval with Ultra-fine Granularity (Zuo et al., CVPR 2024)",
    citation="@inproceedings{zuo2024ufinebench,\n  title={UFineBench: Towards Text-based Person Retrieval with "
    "Ultra-fine Granularity},\n  author={Zuo, Jialong and Zhou, Hanyu and Nie, Ying and Zhang, Feng and Guo, "
    "Tianyu and Sang, Nong and Wang, Yunhe and Gao, Changxin},\n  booktitle={CVPR},\n  year={2024}\n}",
    architecture="CLIP image and text towers with a granularity decoder shared by both modalities; inference "
    "uses the global embeddings (cosine similarity)",
    similarity_range=(-1.0, 1.0),
    backbone_roles=("clip",),
    loss_terms=("global_sdm", "local_sdm", "match", "id"),
)

register_method("cfam", CFAMConfig, CFAMModel, CFAMProcessor, INFO)

__all__ = ["CFAMConfig", "CFAMModel", "CFAMOutput", "CFAMPreTrainedModel", "CFAMProcessor"]
