"""prefpred: calibrated human-preference prediction for pairwise chatbot comparisons."""

from prefpred.errors import PrefpredError
from prefpred.labels import CLASSES, N_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASSES", "N_CLASSES", "PrefpredError", "__version__"]
