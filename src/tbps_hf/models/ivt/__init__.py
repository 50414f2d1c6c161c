"""IVT (Shu et al. 2022): one transformer shared by images and text, MLA + BMM, CMPM loss."""

from .configuration_ivt import IVTConfig
from .modeling_ivt import IVTModel, IVTOutput, IVTPreTrainedModel

__all__ = ["IVTConfig", "IVTModel", "IVTOutput", "IVTPreTrainedModel"]
