"""PCC (Park et al., ECCV 2024): part-level cross-modal correspondence with a modality-shared decoder and the
commonality-based margin ranking loss."""

from .. import register_method
from .configuration_pcc import PCCConfig
from .modeling_pcc import PCCFeatures, PCCModel, PCCOutput, PCCPreTrainedModel
from .processing_pcc import PCCProcessor

register_method("pcc", PCCConfig, PCCModel, PCCProcessor)

__all__ = ["PCCConfig", "PCCModel", "PCCPreTrainedModel", "PCCFeatures", "PCCOutput", "PCCProcessor"]
