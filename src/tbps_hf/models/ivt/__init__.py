"""IVT (Shu et al. 2022): one transformer shared by images and text, MLA + BMM, CMPM loss."""

from .. import register_method
from .configuration_ivt import IVTConfig
from .modeling_ivt import IVTModel, IVTOutput, IVTPreTrainedModel
from .processing_ivt import IVTProcessor

register_method("ivt", IVTConfig, IVTModel, IVTProcessor)

__all__ = ["IVTConfig", "IVTModel", "IVTOutput", "IVTPreTrainedModel", "IVTProcessor"]
