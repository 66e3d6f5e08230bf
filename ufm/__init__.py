"""JAX solver for the unconstrained feature model (UFM)."""

from ufm.objective import Params as Params
from ufm.objective import Weights as Weights
from ufm.objective import class_major_labels as class_major_labels
from ufm.objective import logits as logits
from ufm.objective import loss_term as loss_term
from ufm.objective import objective as objective
from ufm.objective import regularization as regularization

__all__ = ["Params", "Weights", "class_major_labels", "logits", "loss_term", "objective", "regularization"]
