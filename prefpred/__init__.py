"""prefpred: calibrated human-preference prediction for pairwise chatbot comparisons."""

from prefpred.errors import PrefpredError
from prefpred.hf import enforce_offline
from prefpred.labels import CLASSES, N_CLASSES

enforce_offline()  # nothing prefpred does may reach the network; see prefpred.hf

__version__ = "0.1.0"
__all__ = ["CLASSES", "N_CLASSES", "PrefpredError", "__version__"]
