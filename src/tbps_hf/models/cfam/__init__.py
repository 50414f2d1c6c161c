"""CFAM (UFineBench, CVPR 2024): CLIP towers + shared granularity decoder + hard-negative Matcher."""

from .. import register_method
from .configuration_cfam import CFAMConfig
from .modeling_cfam import CFAMModel, CFAMOutput, CFAMPreTrainedModel
from .processing_cfam import CFAMProcessor

register_method("cfam", CFAMConfig, CFAMModel, CFAMProcessor)

__all__ = ["CFAMConfig", "CFAMModel", "CFAMOutput", "CFAMPreTrainedModel", "CFAMProcessor"]
