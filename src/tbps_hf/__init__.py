"""tbps-hf: text-based person search on the Hugging Face stack.

Importing the package registers every method (IVT, PCC, CFAM, …) with ``AutoConfig``, ``AutoModel`` and
``AutoProcessor``, so ``AutoModel.from_pretrained(folder)`` works without ``trust_remote_code``.
"""

__version__ = "0.1.0"

from .configuration_utils import TBPSConfig  # noqa: E402
from .modeling_utils import TBPSPreTrainedModel  # noqa: E402
from .models import METHODS, get_method, load_all  # noqa: E402

load_all()

__all__ = ["TBPSConfig", "TBPSPreTrainedModel", "METHODS", "get_method", "__version__"]
