"""CFAM (UFineBench, CVPR 2024): CLIP towers + shared granularity decoder + hard-negative Matcher."""

from .configuration_cfam import CFAMConfig
from .modeling_cfam import CFAMModel, CFAMOutput

__all__ = ["CFAMConfig", "CFAMModel", "CFAMOutput"]
